"""MLP task families on scikit-learn's bundled data sets: `digits` (the paper's MNIST task scaled
down to the 8x8 digits) and `digits_variants` (the mixture `digits` meta-trains on)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import TaskFamily, register_task_family
from ._data import dataset_splits


# The networks of every classifier family (here and in `_classifiers`): dense layers, their units,
# and the loss.
ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}


def dense_init(key: PRNGKeyArray, sizes: tuple[int, ...]) -> list[dict[str, Array]]:
    """Layers `sizes[0] -> ... -> sizes[-1]`: weights ~ N(0, 1/fan_in), biases 0."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)} for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def dense_apply(params: list[dict[str, Array]], x: Array, activation: str, final=None) -> Array:
    """The MLP `params` (`dense_init`) on `x`: `activation` (a name of `ACTIVATIONS`) after every
    layer but the last, `final` (if any) after the last."""
    act = ACTIVATIONS[activation]
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    x = x @ params[-1]["w"] + params[-1]["b"]
    return x if final is None else final(x)


def cross_entropy(logits: Array, labels: Array) -> Float[Array, ""]:
    """Mean softmax cross-entropy of `logits` [N, classes] against integer `labels` [N]."""
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0])


def dataset_sizes(dataset: str) -> tuple[int, int]:
    """`(inputs, classes)` of a classification data set."""
    data = dataset_splits(dataset)
    return data["x_train"].shape[1], int(max(data["y_train"].max(), data["y_test"].max())) + 1


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
        return cross_entropy(dense_apply(params, jnp.asarray(x), self.activation), jnp.asarray(y))

    def accuracy(self, params) -> Float[Array, ""]:
        """Accuracy on the whole split (the training split for "train")."""
        data = dataset_splits(self.dataset)
        part = "test" if self.split == "test" else "train"
        logits = dense_apply(params, jnp.asarray(data[f"x_{part}"]), self.activation)
        return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.asarray(data[f"y_{part}"]))


def init_mlp(key: PRNGKeyArray, hidden_units: tuple[int, ...], dataset: str) -> list[dict[str, Array]]:
    """A fresh MLP inputs -> hidden_units -> classes of `dataset`: weights ~ N(0, 1/fan_in), biases 0."""
    inputs, classes = dataset_sizes(dataset)
    return dense_init(key, (inputs, *hidden_units, classes))


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
