"""Neural networks trained on a fixed data set (`_data.py`), one task per initialization and
minibatch stream: MLP classifiers of any depth, width and activation, a small convnet on the 8x8
digits, and an MLP autoencoder. Each declares its `horizon` and has a test split (`metrics`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from ._base import TaskFamily, register_task_family
from ._data import dataset_splits
from ._mlp import ACTIVATIONS, cross_entropy, dense_apply, dense_init
from ._mlp import dataset_sizes as _classes  # the name the families' code uses (part of the suite's cache key)


def _check(activation: str, dataset: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(map(repr, ACTIVATIONS))}.")
    dataset_splits(dataset)  # an unknown name fails here, listing the known ones


def _minibatch(key, size: int, *arrays):
    idx = jax.random.randint(key, (size,), 0, len(arrays[0]))
    return [jnp.asarray(a)[idx] for a in arrays]


class ClassifierLoss(eqx.Module):
    """Cross-entropy of `model` on a minibatch of the training split (the whole split when
    `split` is "train_full" or "test")."""

    model: str = eqx.field(static=True)  # "mlp" or "conv"
    activation: str = eqx.field(static=True)
    dataset: str = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def logits(self, params, x):
        if self.model == "conv":
            return conv_apply(params, x, self.activation)
        return dense_apply(params, x, self.activation)

    def _data(self):
        data = dataset_splits(self.dataset)
        part = "test" if self.split == "test" else "train"
        return data[f"x_{part}"], data[f"y_{part}"]

    def __call__(self, params, key=None) -> Float[Array, ""]:
        x, y = self._data()
        if self.split == "train":
            if key is None:
                raise ValueError("A classifier's training loss needs a minibatch key.")
            x, y = _minibatch(key, self.minibatch, x, y)
        return cross_entropy(self.logits(params, jnp.asarray(x)), jnp.asarray(y))

    def accuracy(self, params) -> Float[Array, ""]:
        x, y = self._data()
        return jnp.mean(jnp.argmax(self.logits(params, jnp.asarray(x)), axis=-1) == jnp.asarray(y))


def _classifier_metrics(loss_fn: ClassifierLoss, params):
    train = ClassifierLoss(loss_fn.model, loss_fn.activation, loss_fn.dataset, loss_fn.minibatch, "train_full")
    test = ClassifierLoss(loss_fn.model, loss_fn.activation, loss_fn.dataset, loss_fn.minibatch, "test")
    return {"train_loss": train(params), "test_loss": test(params), "test_accuracy": test.accuracy(params)}


@register_task_family("mlp_classifier")
class MLPClassifier(TaskFamily):
    """An MLP `inputs -> hidden... -> classes` with `activation` units, cross-entropy on
    minibatches of `dataset`; a fresh initialization per task."""

    stochastic = True
    dataset: str = eqx.field(static=True, default="mixture8")
    hidden: tuple[int, ...] = eqx.field(static=True, default=(32,))
    activation: str = eqx.field(static=True, default="relu")
    minibatch: int = eqx.field(static=True, default=64)
    horizon: int = eqx.field(static=True, default=300)

    def __check_init__(self):
        _check(self.activation, self.dataset)

    def sample(self, key):
        inputs, classes = _classes(self.dataset)
        params = dense_init(key, (inputs, *self.hidden, classes))
        return ClassifierLoss("mlp", self.activation, self.dataset, self.minibatch), params

    def metrics(self, loss_fn, params):
        return _classifier_metrics(loss_fn, params)


def conv_apply(params, x, activation: str):
    """8x8 images (flattened) -> 3x3 convolution (`channels`) -> `activation` -> 2x2 average
    pooling -> a dense layer to the classes."""
    images = x.reshape(-1, 8, 8, 1)
    h = lax.conv_general_dilated(images, params["conv"]["w"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = ACTIVATIONS[activation](h + params["conv"]["b"])  # [B, 6, 6, C]
    h = h.reshape(h.shape[0], 3, 2, 3, 2, h.shape[-1]).mean(axis=(2, 4))  # [B, 3, 3, C]
    return h.reshape(h.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


@register_task_family("conv_digits")
class ConvDigits(TaskFamily):
    """A small 2-D convnet on scikit-learn's 8x8 digits (`conv_apply`)."""

    stochastic = True
    channels: int = eqx.field(static=True, default=4)
    activation: str = eqx.field(static=True, default="relu")
    minibatch: int = eqx.field(static=True, default=32)
    horizon: int = eqx.field(static=True, default=200)

    def __check_init__(self):
        _check(self.activation, "digits")

    def sample(self, key):
        conv_key, dense_key = jax.random.split(key)
        c = self.channels
        params = {
            "conv": {"w": jax.random.normal(conv_key, (3, 3, 1, c)) / 3.0, "b": jnp.zeros(c)},
            "dense": {"w": jax.random.normal(dense_key, (9 * c, 10)) / np.sqrt(9 * c), "b": jnp.zeros(10)},
        }
        return ClassifierLoss("conv", self.activation, "digits", self.minibatch), params

    def metrics(self, loss_fn, params):
        return _classifier_metrics(loss_fn, params)


class ReconstructionLoss(eqx.Module):
    """Mean squared reconstruction error of an autoencoder (sigmoid outputs) on a minibatch."""

    activation: str = eqx.field(static=True)
    dataset: str = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def __call__(self, params, key=None) -> Float[Array, ""]:
        data = dataset_splits(self.dataset)
        x = data["x_test" if self.split == "test" else "x_train"]
        if self.split == "train":
            if key is None:
                raise ValueError("An autoencoder's training loss needs a minibatch key.")
            (x,) = _minibatch(key, self.minibatch, x)
        x = jnp.asarray(x)
        return jnp.mean(jnp.square(dense_apply(params, x, self.activation, jax.nn.sigmoid) - x))


@register_task_family("autoencoder")
class Autoencoder(TaskFamily):
    """An MLP autoencoder `inputs -> hidden... -> inputs` on the digits' pixels (in [0, 1])."""

    stochastic = True
    hidden: tuple[int, ...] = eqx.field(static=True, default=(16,))
    activation: str = eqx.field(static=True, default="sigmoid")
    minibatch: int = eqx.field(static=True, default=64)
    horizon: int = eqx.field(static=True, default=300)

    def __check_init__(self):
        _check(self.activation, "digits")

    def sample(self, key):
        inputs = dataset_splits("digits")["x_train"].shape[1]
        return ReconstructionLoss(self.activation, "digits", self.minibatch), dense_init(key, (inputs, *self.hidden, inputs))

    def metrics(self, loss_fn, params):
        train = ReconstructionLoss(loss_fn.activation, loss_fn.dataset, loss_fn.minibatch, "train_full")
        test = ReconstructionLoss(loss_fn.activation, loss_fn.dataset, loss_fn.minibatch, "test")
        return {"train_loss": train(params), "test_loss": test(params)}
