"""The reference notebook's hand-written baselines, as optax transformations.

They are written exactly as the notebook writes `g_sgd` and `g_rms`. The reference's RMSProp differs from
`optax.rmsprop`'s defaults: its epsilon is 1e-5 added outside the square root (optax: 1e-8
inside it, `eps_in_sqrt=True`; `eps_in_sqrt=False` puts it outside) and its decay is 0.99 (0.9).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def reference_sgd(learning_rate: float = 0.1) -> optax.GradientTransformation:
    """The reference's `g_sgd`: update = -learning_rate * g."""

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        return jax.tree.map(lambda g: -learning_rate * g, grads), state

    return optax.GradientTransformation(init, update)


class ReferenceRMSPropState(NamedTuple):
    nu: optax.Updates


def reference_rmsprop(learning_rate: float = 0.1, decay: float = 0.99) -> optax.GradientTransformation:
    """The reference's `g_rms`: state starts at 0; nu = decay*nu + (1-decay)*g^2;
    update = -learning_rate * g / (sqrt(nu) + 1e-5)."""

    def init(params):
        return ReferenceRMSPropState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        nu = jax.tree.map(lambda n, g: decay * n + (1 - decay) * jnp.square(g), state.nu, grads)
        updates = jax.tree.map(lambda g, n: -learning_rate * g / (jnp.sqrt(n) + 1e-5), grads, nu)
        return updates, ReferenceRMSPropState(nu)

    return optax.GradientTransformation(init, update)
