"""Task families: each samples a task `(loss_fn, params0)` that the unroll can `vmap` over.

`loss_fn(params, key)` is an `eqx.Module`; `key` draws a minibatch for stochastic tasks and is
ignored by deterministic ones. `params0` is any pytree of floating arrays.

- `quadratic`: the seed's 2-D (or n-D) quadratics (`_problems.py`).
- `paper_quadratic`: the paper's f(θ) = ||Wθ - y||^2, W (dim x dim) and y drawn from N(0, 1).
- `digits`: the paper's MNIST task scaled down to scikit-learn's 8x8 digits (shipped inside the
  package, nothing downloaded): an MLP trained by cross-entropy on minibatches.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._config import Config
from ._problems import sample_quadratic

TaskSampler = Callable[[PRNGKeyArray], tuple[Callable[..., Array], Any]]


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


@functools.lru_cache(maxsize=1)
def digits_data() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], split 80/20 with a fixed permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.RandomState(0).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def mlp_apply(params: list[dict[str, Array]], x: Array, activation: str) -> Array:
    act = jax.nn.sigmoid if activation == "sigmoid" else jax.nn.relu
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


class DigitsLoss(eqx.Module):
    """Mean softmax cross-entropy of an MLP on a minibatch of the training split (on the whole
    held-out split when `split="test"`, for evaluation)."""

    activation: str = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def __call__(self, params, key=None) -> Float[Array, ""]:
        data = digits_data()
        x, y = data[f"x_{self.split}"], data[f"y_{self.split}"]
        if self.split == "train":
            if key is None:
                raise ValueError("DigitsLoss on the training split needs a minibatch key.")
            idx = jax.random.randint(key, (self.minibatch,), 0, len(x))
            x, y = jnp.asarray(x)[idx], jnp.asarray(y)[idx]
        logits = mlp_apply(params, jnp.asarray(x), self.activation)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, jnp.asarray(y)[:, None], axis=-1)[:, 0])


def sample_digits(key: PRNGKeyArray, hidden_units: tuple[int, ...], activation: str, minibatch: int):
    """A fresh MLP 64 -> hidden_units -> 10: weights ~ N(0, 1/fan_in), biases 0."""
    sizes = (64, *hidden_units, 10)
    keys = jax.random.split(key, len(sizes) - 1)
    params = [
        {"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]
    return DigitsLoss(activation, minibatch), params


def task_sampler(config: Config) -> TaskSampler:
    """`sample(key) -> (loss_fn, params0)` for `config.task`."""
    if config.task == "quadratic":
        return lambda key: sample_quadratic(key, config.dim)
    if config.task == "paper_quadratic":
        return lambda key: sample_paper_quadratic(key, config.dim)
    if config.task == "digits":
        return lambda key: sample_digits(key, config.hidden_units, config.activation, config.minibatch)
    raise ValueError(f"Unknown task {config.task!r}.")
