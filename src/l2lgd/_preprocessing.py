"""Gradient preprocessing: what the LSTM sees of a gradient, and how its output becomes a step.

Each transform is a pair of pure functions on one coordinate-wise vector:
`encode(g) -> features` of shape `[n, num_features]`, and `decode(out) -> update` of shape `[n]`,
where `out` is the LSTM's output `[n, 1]`. For the scaling transforms `decode` is the inverse of
the magnitude map of `encode`, so the LSTM works on a scale-free range in both directions.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Identity(eqx.Module):
    """The raw gradient in, the raw update out (the seed's `g_rnn`)."""

    num_features = 1

    def encode(self, g: Float[Array, " n"]) -> Float[Array, "n 1"]:
        return g[:, None]

    def decode(self, out: Float[Array, "n 1"]) -> Float[Array, " n"]:
        return out[:, 0]


class LogRescale(eqx.Module):
    """The seed's log rescaling with `min_log_gradient = -k` (`g_rnn_log15`, `g_rnn_log30`).

    In: sign(g) * (log(|g| + e^(-k-5)) + k) / k maps |g| in [e^-k, 1] onto [0, 1] (the e^(-k-5)
    keeps log away from 0). Out: sign(u) * exp(|u| k - k) maps |u| in [0, 1] back onto
    [e^-k, 1], so no step is smaller than e^-k: the floor that caps how far the loss can fall.
    """

    k: float = eqx.field(static=True)

    num_features = 1

    def encode(self, g: Float[Array, " n"]) -> Float[Array, "n 1"]:
        log_g = jnp.log(jnp.abs(g) + np.exp(-self.k - 5.0).astype(g.dtype))
        return (jnp.sign(g) * (log_g + self.k) / self.k)[:, None]

    def decode(self, out: Float[Array, "n 1"]) -> Float[Array, " n"]:
        u = out[:, 0]
        return jnp.sign(u) * jnp.exp(jnp.abs(u) * self.k - self.k)


def make_preprocessing(name: str, *, min_log_gradient: float = 15.0) -> eqx.Module:
    """The transform called `name` in a `Config`."""
    if name == "identity":
        return Identity()
    if name == "log_rescale":
        return LogRescale(float(min_log_gradient))
    raise ValueError(f"Unknown preprocessing {name!r}; expected 'identity' or 'log_rescale'.")
