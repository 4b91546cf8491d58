"""The reference's task family: random 2-D (or n-D) quadratics f(x) = sum((scale * x)**2)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


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
