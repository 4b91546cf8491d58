"""Task families: the open interface that meta-training draws its tasks from.

A `TaskFamily` samples a task `(loss_fn, params0)` with a key; the unroll `vmap`s over tasks.
`loss_fn(params, key)` is an `eqx.Module` (so a batch of tasks is a pytree); `key` draws a
minibatch for a stochastic family and is ignored by a deterministic one. `params0` is any
pytree of floating arrays. Subclass `TaskFamily` for your own tasks, and register it with
`register_task_family` to name it in a `Config`.

Built in:
- `quadratic`: the reference's 2-D (or n-D) quadratics (`Quadratics`, `_quadratic.py`).
- `paper_quadratic`: the paper's f(θ) = ||Wθ - y||^2, W (dim x dim) and y drawn from N(0, 1).
- `digits`: the paper's MNIST task scaled down to scikit-learn's 8x8 digits (shipped inside
  scikit-learn, nothing downloaded): an MLP trained by cross-entropy on minibatches; the
  `dataset` field of the config swaps in another of scikit-learn's bundled data sets.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._quadratic import sample_quadratic


class TaskFamily(eqx.Module):
    """A distribution over tasks: what a learned optimizer is meta-trained on.

    Subclasses declare `stochastic` (whether `loss_fn` draws a minibatch from its key) and
    implement `sample`. A family is a pytree (an `eqx.Module`): keep its configuration in
    static fields or arrays.

    Example:
        >>> class Bowl(eqx.Module):  # a task's loss: an Equinox module of (params, key)
        ...     scale: jax.Array
        ...     def __call__(self, x, key=None):
        ...         return jnp.sum((self.scale * x) ** 2)
        >>> class Bowls(l2lgd.TaskFamily):
        ...     stochastic = False
        ...     dim: int = eqx.field(static=True, default=3)
        ...     def sample(self, key):
        ...         scale_key, x_key = jax.random.split(key)
        ...         scale = jax.random.uniform(scale_key, (self.dim,), minval=0.5, maxval=2.0)
        ...         return Bowl(scale), jax.random.normal(x_key, (self.dim,))
        >>> loss_fn, x0 = Bowls().sample(jax.random.key(0))
        >>> l2lgd.unroll(optax.sgd(0.1), loss_fn, x0, 4).shape
        (4,)

        `l2lgd.train(config, out_dir, family=Bowls())` meta-trains on it.
    """

    stochastic: ClassVar[bool] = False

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> tuple[Callable[..., Float[Array, ""]], Any]:
        """One task drawn with `key`: `(loss_fn, params0)`."""

    def metrics(self, loss_fn, params) -> dict[str, Float[Array, ""]]:
        """What evaluation reports of a task's params after training, beyond the loss curve
        (e.g. held-out loss and accuracy). Default: nothing."""
        return {}

    @classmethod
    def from_config(cls, config) -> "TaskFamily":
        """The family that a `Config` naming it describes (default: `cls()`)."""
        return cls()


TASK_FAMILIES: dict[str, type[TaskFamily]] = {}


def register_task_family(name: str):
    """Class decorator: makes a `TaskFamily` subclass available as `Config(task=name)`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A task family's name must be an identifier, got {name!r}.")

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
            raise TypeError(f"register_task_family({name!r}) expects a TaskFamily subclass, got {cls!r}.")
        TASK_FAMILIES[name] = cls
        return cls

    return register


def task_family(config) -> TaskFamily:
    """The family named by `config.task`, built from the config."""
    if config.task not in TASK_FAMILIES:
        raise ValueError(
            f"Config.task={config.task!r} is not a registered task family; registered: "
            f"{', '.join(map(repr, TASK_FAMILIES))} (see l2lgd.register_task_family)."
        )
    return TASK_FAMILIES[config.task].from_config(config)


def training_family(config) -> TaskFamily:
    """The family meta-training draws from: `config.train_task`'s if set, else `config.task`'s."""
    return task_family(config.replace(task=config.train_task) if config.train_task else config)


def check_family(family: TaskFamily) -> None:
    """Fails early, naming what is wrong, when `family` does not sample valid tasks: floating
    `params0` leaves and a scalar floating loss. Traces one task (nothing is computed)."""
    if not isinstance(family, TaskFamily):
        raise TypeError(f"Expected an l2lgd.TaskFamily, got {type(family).__name__}.")
    name = type(family).__name__
    loss_fn, params = eqx.filter_eval_shape(family.sample, jax.random.key(0))
    if not isinstance(loss_fn, eqx.Module):
        raise TypeError(
            f"{name}.sample returns a loss_fn of type {type(loss_fn).__name__}; expected an eqx.Module "
            "(a pytree holding the task's arrays, so that a batch of tasks can be vmapped)."
        )
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(f"{name}.sample returns params0 with no array leaves; expected a pytree of floating arrays.")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}.sample returns params0 whose leaf {jax.tree_util.keystr(path) or '<root>'} has "
                f"dtype {dtype}; expected floating arrays."
            )
    key = jax.random.key(1)
    value = eqx.filter_eval_shape(lambda: (lambda task: task[0](task[1], key))(family.sample(jax.random.key(0))))
    if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(
            f"{name}'s loss_fn(params, key) returns {getattr(value, 'dtype', type(value))}"
            f"{list(getattr(value, 'shape', []))}; expected a floating scalar."
        )


@register_task_family("quadratic")
class Quadratics(TaskFamily):
    """The reference's family: f(x) = sum((scale * x)**2), scale ~ U(0.5, 1.5), x0 ~ U(-1, 1)."""

    dim: int = eqx.field(static=True, default=2)

    def sample(self, key):
        return sample_quadratic(key, self.dim)

    @classmethod
    def from_config(cls, config):
        return cls(config.dim)


class PaperQuadratic(eqx.Module):
    """f(θ) = ||Wθ - y||^2 (the paper's quadratic task)."""

    w: Float[Array, "dim dim"]
    y: Float[Array, " dim"]

    def __call__(self, theta: Float[Array, " dim"], key=None) -> Float[Array, ""]:
        return jnp.sum(jnp.square(self.w @ theta - self.y))


def sample_paper_quadratic(key: PRNGKeyArray, dim: int = 10) -> tuple[PaperQuadratic, Float[Array, " dim"]]:
    """W, y ~ N(0, 1); θ0 ~ N(0, 0.01^2), as in the paper's code."""
    w_key, y_key, x_key = jax.random.split(key, 3)
    task = PaperQuadratic(jax.random.normal(w_key, (dim, dim)), jax.random.normal(y_key, (dim,)))
    return task, 0.01 * jax.random.normal(x_key, (dim,))


@register_task_family("paper_quadratic")
class PaperQuadratics(TaskFamily):
    """The paper's quadratics ||Wθ - y||^2 in `dim` dimensions."""

    dim: int = eqx.field(static=True, default=10)

    def sample(self, key):
        return sample_paper_quadratic(key, self.dim)

    @classmethod
    def from_config(cls, config):
        return cls(config.dim)


DATASETS = ("digits", "wine", "breast_cancer", "iris")


@functools.lru_cache(maxsize=None)
def dataset_splits(name: str = "digits") -> dict[str, np.ndarray]:
    """One of scikit-learn's bundled data sets, split 80/20 with a fixed permutation.

    Digits: pixels scaled to [0, 1] (as before this function took a name). The others: features
    standardized with the training split's mean and standard deviation.
    """
    import sklearn.datasets

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


def digits_data() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], split 80/20 with a fixed permutation."""
    return dataset_splits("digits")


def mlp_apply(params: list[dict[str, Array]], x: Array, activation: str) -> Array:
    act = jax.nn.sigmoid if activation == "sigmoid" else jax.nn.relu
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(logits: Array, labels: Array) -> Float[Array, ""]:
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0])


class DigitsLoss(eqx.Module):
    """Mean softmax cross-entropy of an MLP on a minibatch of the training split (on the whole
    split when `split` is "test", or "train_full", for evaluation)."""

    activation: str = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")
    dataset: str = eqx.field(static=True, default="digits")

    def __call__(self, params, key=None) -> Float[Array, ""]:
        data = dataset_splits(self.dataset)
        part = "train" if self.split == "train_full" else self.split
        x, y = data[f"x_{part}"], data[f"y_{part}"]
        if self.split == "train":
            if key is None:
                raise ValueError("DigitsLoss on the training split needs a minibatch key.")
            idx = jax.random.randint(key, (self.minibatch,), 0, len(x))
            x, y = jnp.asarray(x)[idx], jnp.asarray(y)[idx]
        return cross_entropy(mlp_apply(params, jnp.asarray(x), self.activation), jnp.asarray(y))

    def accuracy(self, params) -> Float[Array, ""]:
        """Accuracy on the whole split (the training split for "train")."""
        data = dataset_splits(self.dataset)
        part = "test" if self.split == "test" else "train"
        logits = mlp_apply(params, jnp.asarray(data[f"x_{part}"]), self.activation)
        return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.asarray(data[f"y_{part}"]))


def init_mlp(key: PRNGKeyArray, hidden_units: tuple[int, ...], dataset: str) -> list[dict[str, Array]]:
    """A fresh MLP inputs -> hidden_units -> classes of `dataset`: weights ~ N(0, 1/fan_in), biases 0."""
    data = dataset_splits(dataset)
    inputs, classes = data["x_train"].shape[1], int(max(data["y_train"].max(), data["y_test"].max())) + 1
    sizes = (inputs, *hidden_units, classes)
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def sample_digits(key: PRNGKeyArray, hidden_units: tuple[int, ...], activation: str, minibatch: int, dataset: str = "digits"):
    """A task of the `Digits` family: its loss and a fresh MLP (`init_mlp`)."""
    return DigitsLoss(activation, minibatch, dataset=dataset), init_mlp(key, hidden_units, dataset)


@register_task_family("digits")
class Digits(TaskFamily):
    """An MLP on one of scikit-learn's data sets (default: the 8x8 digits), cross-entropy on
    minibatches of the training split, a fresh initialization per task."""

    stochastic = True
    hidden_units: tuple[int, ...] = eqx.field(static=True, default=(20,))
    activation: str = eqx.field(static=True, default="sigmoid")
    minibatch: int = eqx.field(static=True, default=128)
    dataset: str = eqx.field(static=True, default="digits")

    def sample(self, key):
        return sample_digits(key, self.hidden_units, self.activation, self.minibatch, self.dataset)

    def metrics(self, loss_fn, params):
        """Loss on the whole training split, and loss and accuracy on the test split."""
        train = DigitsLoss(loss_fn.activation, loss_fn.minibatch, "train_full", loss_fn.dataset)
        test = DigitsLoss(loss_fn.activation, loss_fn.minibatch, "test", loss_fn.dataset)
        return {
            "train_loss": train(params),
            "test_loss": test(params),
            "test_accuracy": test.accuracy(params),
        }

    @classmethod
    def from_config(cls, config):
        return cls(config.mlp_hidden_units, config.mlp_activation, config.minibatch, config.dataset)


class VariantLoss(eqx.Module):
    """Cross-entropy of an MLP with one or two hidden layers and sigmoid or ReLU units, chosen
    per task by the arrays `deep` and `relu` (so tasks of every variant batch together). With
    `deep` false the second hidden layer is skipped: its params get exactly-zero gradients."""

    deep: Array
    relu: Array
    minibatch: int = eqx.field(static=True)
    dataset: str = eqx.field(static=True, default="digits")

    def __call__(self, params, key=None) -> Float[Array, ""]:
        data = dataset_splits(self.dataset)
        if key is None:
            raise ValueError("VariantLoss needs a minibatch key.")
        idx = jax.random.randint(key, (self.minibatch,), 0, len(data["x_train"]))
        x, y = jnp.asarray(data["x_train"])[idx], jnp.asarray(data["y_train"])[idx]

        def act(z):
            return jnp.where(self.relu, jax.nn.relu(z), jax.nn.sigmoid(z))

        first, second, last = params
        h = act(x @ first["w"] + first["b"])
        h = jnp.where(self.deep, act(h @ second["w"] + second["b"]), h)
        return cross_entropy(h @ last["w"] + last["b"], y)


@register_task_family("digits_variants")
class DigitsVariants(TaskFamily):
    """Meta-training mixture around `digits`: each task is an MLP of width `width` with one or
    two hidden layers (probability `p_deep` of two) and sigmoid or ReLU units (probability
    `p_relu` of ReLU), on minibatches of the data set. Half the tasks (0.7 x 0.7) are the plain
    one-layer sigmoid MLP of `digits`."""

    stochastic = True
    width: int = eqx.field(static=True, default=20)
    minibatch: int = eqx.field(static=True, default=128)
    dataset: str = eqx.field(static=True, default="digits")
    p_deep: float = eqx.field(static=True, default=0.3)
    p_relu: float = eqx.field(static=True, default=0.3)

    def sample(self, key):
        deep_key, relu_key, init_key = jax.random.split(key, 3)
        params = init_mlp(init_key, (self.width, self.width), self.dataset)
        deep = jax.random.bernoulli(deep_key, self.p_deep)
        relu = jax.random.bernoulli(relu_key, self.p_relu)
        return VariantLoss(deep, relu, self.minibatch, self.dataset), params

    @classmethod
    def from_config(cls, config):
        return cls(config.mlp_hidden_units[0], config.minibatch, config.dataset)
