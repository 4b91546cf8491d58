"""Test functions: rotated quadratics of a chosen condition number and the (chained) Rosenbrock
function, each task a random start (and, for the quadratic, a random rotation and minimum)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import TaskFamily, register_task_family


class RotatedQuadratic(eqx.Module):
    """f(x) = 0.5 (x - x*)^T Q diag(h) Q^T (x - x*)."""

    rotation: Float[Array, "dim dim"]
    curvature: Float[Array, " dim"]
    minimum: Float[Array, " dim"]

    def __call__(self, x, key=None) -> Float[Array, ""]:
        z = self.rotation.T @ (x - self.minimum)
        return 0.5 * jnp.sum(self.curvature * z * z)


@register_task_family("conditioned_quadratic")
class ConditionedQuadratics(TaskFamily):
    """Rotated quadratics whose curvatures span [1/condition, 1] log-evenly; x0, x* ~ N(0, 1)."""

    dim: int = eqx.field(static=True, default=20)
    condition: float = eqx.field(static=True, default=100.0)
    horizon: int = eqx.field(static=True, default=200)

    def __check_init__(self):
        if not self.condition >= 1.0:
            raise ValueError(f"condition must be at least 1, got {self.condition!r}.")

    def sample(self, key):
        q_key, m_key, x_key = jax.random.split(key, 3)
        rotation, _ = jnp.linalg.qr(jax.random.normal(q_key, (self.dim, self.dim)))
        curvature = jnp.logspace(0.0, -jnp.log10(self.condition), self.dim)
        task = RotatedQuadratic(rotation, curvature, jax.random.normal(m_key, (self.dim,)))
        return task, jax.random.normal(x_key, (self.dim,))

    def metrics(self, loss_fn, params):
        return {"train_loss": loss_fn(params)}


class Rosenbrock(eqx.Module):
    """sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 (minimum 0 at x = 1)."""

    def __call__(self, x, key=None) -> Float[Array, ""]:
        return jnp.sum(100.0 * jnp.square(x[1:] - x[:-1] ** 2) + jnp.square(1.0 - x[:-1]))


@register_task_family("rosenbrock")
class RosenbrockFunctions(TaskFamily):
    """The Rosenbrock function in `dim` dimensions from x0 = (-1.2, 1, -1.2, ...) + N(0, 0.1^2)."""

    dim: int = eqx.field(static=True, default=2)
    horizon: int = eqx.field(static=True, default=1000)

    def sample(self, key):
        start = jnp.where(jnp.arange(self.dim) % 2 == 0, -1.2, 1.0)
        return Rosenbrock(), start + 0.1 * jax.random.normal(key, (self.dim,))

    def metrics(self, loss_fn, params):
        return {"train_loss": loss_fn(params)}
