"""Linear and logistic regression on drawn data with a chosen condition number: each task draws
its own inputs, true weights and labels; the loss is on minibatches, the test split held apart."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import TaskFamily, register_task_family


def conditioned_inputs(key, samples: int, dim: int, condition: float) -> Array:
    """`[samples, dim]` Gaussian inputs whose covariance has condition number `condition`: a
    random rotation of axes scaled log-evenly from 1 to 1/sqrt(condition)."""
    z_key, q_key = jax.random.split(key)
    scales = jnp.logspace(0.0, -0.5 * jnp.log10(condition), dim)
    rotation, _ = jnp.linalg.qr(jax.random.normal(q_key, (dim, dim)))
    return (jax.random.normal(z_key, (samples, dim)) * scales) @ rotation.T


class RegressionLoss(eqx.Module):
    """Mean squared error / 2 (`logistic` False) or mean log-loss (True) of a linear model."""

    x_train: Float[Array, "n dim"]
    y_train: Float[Array, " n"]
    x_test: Float[Array, "m dim"]
    y_test: Float[Array, " m"]
    logistic: bool = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def _loss(self, params, x, y):
        z = x @ params["w"] + params["b"]
        if self.logistic:
            return jnp.mean(jax.nn.softplus(z) - y * z)
        return 0.5 * jnp.mean(jnp.square(z - y))

    def __call__(self, params, key=None) -> Float[Array, ""]:
        if self.split == "test":
            return self._loss(params, self.x_test, self.y_test)
        if self.split == "train_full":
            return self._loss(params, self.x_train, self.y_train)
        if key is None:
            raise ValueError("A regression's training loss needs a minibatch key.")
        idx = jax.random.randint(key, (self.minibatch,), 0, self.x_train.shape[0])
        return self._loss(params, self.x_train[idx], self.y_train[idx])

    def accuracy(self, params) -> Float[Array, ""]:
        z = self.x_test @ params["w"] + params["b"]
        return jnp.mean((z > 0) == (self.y_test > 0.5))


class _Regression(TaskFamily):
    stochastic = True
    dim: int = eqx.field(static=True, default=20)
    condition: float = eqx.field(static=True, default=10.0)
    minibatch: int = eqx.field(static=True, default=32)
    horizon: int = eqx.field(static=True, default=200)
    samples: int = eqx.field(static=True, default=512)
    logistic = False

    def __check_init__(self):
        if not self.condition >= 1.0:
            raise ValueError(f"condition must be at least 1, got {self.condition!r}.")

    def sample(self, key):
        x_key, w_key, noise_key, init_key = jax.random.split(key, 4)
        x = conditioned_inputs(x_key, self.samples + self.samples // 2, self.dim, self.condition)
        w = jax.random.normal(w_key, (self.dim,)) * jnp.sqrt(self.condition ** 0.5)
        z = x @ w
        if self.logistic:
            y = (z + jax.random.logistic(noise_key, z.shape) > 0).astype(jnp.float32)
        else:
            y = z + 0.1 * jax.random.normal(noise_key, z.shape)
        n = self.samples
        loss = RegressionLoss(x[:n], y[:n], x[n:], y[n:], self.logistic, self.minibatch)
        return loss, {"w": 0.01 * jax.random.normal(init_key, (self.dim,)), "b": jnp.zeros(())}

    def metrics(self, loss_fn, params):
        def on(split):
            return RegressionLoss(loss_fn.x_train, loss_fn.y_train, loss_fn.x_test, loss_fn.y_test, loss_fn.logistic,
                                  loss_fn.minibatch, split)

        full, test = on("train_full"), on("test")
        out = {"train_loss": full(params), "test_loss": test(params)}
        if self.logistic:
            out["test_accuracy"] = loss_fn.accuracy(params)
        return out


@register_task_family("linear_regression")
class LinearRegression(_Regression):
    """Least squares on inputs of condition number `condition` (noise 0.1)."""


@register_task_family("logistic_regression")
class LogisticRegression(_Regression):
    """Logistic regression on inputs of condition number `condition`, labels with logistic noise."""

    logistic = True
