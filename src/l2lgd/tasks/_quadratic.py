"""Quadratic task families: the reference's f(x) = sum((scale * x)**2) and the paper's ||Wθ - y||^2."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import TaskFamily, register_task_family


class Quadratic(eqx.Module):
    """f(x) = sum((scale * x)**2), the reference's `quadratic`."""

    scale: Float[Array, " dim"]

    def __call__(self, x: Float[Array, " dim"], key=None) -> Float[Array, ""]:
        return jnp.sum(jnp.square(self.scale * x))


def sample_quadratic(key: PRNGKeyArray, dim: int) -> tuple[Quadratic, Float[Array, " dim"]]:
    """Draws one task of the reference's family: scale ~ U(0.5, 1.5), x0 ~ U(-1, 1).

    Returns:
        `(loss_fn, x0)`: the task, a callable of x, and its starting point.
    """
    scale_key, x0_key = jax.random.split(key)
    scale = jax.random.uniform(scale_key, (dim,), minval=0.5, maxval=1.5)
    x0 = jax.random.uniform(x0_key, (dim,), minval=-1.0, maxval=1.0)
    return Quadratic(scale), x0


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
