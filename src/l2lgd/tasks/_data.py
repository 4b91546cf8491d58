"""The data sets of the classification task families: scikit-learn's bundled ones and procedurally
generated ones (`GENERATED`), each with a fixed train/test split. Nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np

SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")


@functools.lru_cache(maxsize=None)
def dataset_splits(name: str = "digits") -> dict[str, np.ndarray]:
    """One of scikit-learn's bundled data sets, split 80/20 with a fixed permutation.

    Digits: pixels scaled to [0, 1] (as before this function took a name). The others: features
    standardized with the training split's mean and standard deviation.
    """
    import sklearn.datasets

    if name in GENERATED:
        return _split(*GENERATED[name](np.random.RandomState(_seed_of(name))))
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(map(repr, DATASETS))}.")
    data = getattr(sklearn.datasets, f"load_{name}")()
    x = data.data.astype(np.float64)
    y = data.target.astype(np.int32)
    order = np.random.RandomState(0).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    if name == "digits":
        x = x / 16.0
    else:
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    x = x.astype(np.float32)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def _seed_of(name: str) -> int:
    return int.from_bytes(name.encode(), "little") % (2**31)


def _split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """80/20 with a fixed permutation, features standardized with the training split's statistics."""
    order = np.random.RandomState(0).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    y = y.astype(np.int32)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def _mixture(rng, dims: int, classes: int, n: int = 2000, spread: float = 1.5):
    """A Gaussian mixture: `classes` clusters (two per class), unit noise."""
    centers = spread * rng.randn(2 * classes, dims)
    component = rng.randint(0, 2 * classes, n)
    return centers[component] + rng.randn(n, dims), component % classes


def _spirals(rng, n: int = 2000, noise: float = 0.3):
    """Two interleaved spirals in the plane."""
    label = rng.randint(0, 2, n)
    t = 3.0 * np.pi * np.sqrt(rng.rand(n))
    angle = t + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / np.pi
    return x + noise * rng.randn(n, 2), label


def _teacher(rng, dims: int = 10, hidden: int = 16, classes: int = 3, n: int = 2000):
    """The labels of a random tanh network (a teacher) on Gaussian inputs."""
    x = rng.randn(n, dims)
    w1, w2 = rng.randn(dims, hidden) / np.sqrt(dims), rng.randn(hidden, classes)
    return x, np.argmax(np.tanh(x @ w1) @ w2, axis=1)


def _parity(rng, bits: int = 10, relevant: int = 3, n: int = 2000):
    """Sparse parity: the parity of `relevant` of `bits` random +-1 bits."""
    x = rng.choice([-1.0, 1.0], size=(n, bits))
    return x, (np.prod(x[:, :relevant], axis=1) > 0).astype(np.int32)


GENERATED = {
    "mixture8": lambda rng: _mixture(rng, 8, 4),
    "mixture16": lambda rng: _mixture(rng, 16, 8),
    "spirals": _spirals,
    "teacher": _teacher,
    "parity": _parity,
}
DATASETS = SKLEARN_DATASETS + tuple(GENERATED)
