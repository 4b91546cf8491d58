"""Gradient preprocessing: what the LSTM sees of a gradient, and how its output becomes a step.

Each transform is three pure functions on one coordinate-wise vector of n coordinates:
`init(n, dtype) -> state`, `encode(g, state) -> features` of shape `[n, num_features]`, and
`decode(out, g, state) -> (update [n], state)`, where `out` is the LSTM's output `[n, 1]`.
The seed's transforms hold no state (`()`); for them `decode` is the inverse of the magnitude
map of `encode`, so the LSTM works on a scale-free range in both directions.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Stateless(eqx.Module):
    """A transform with no state of its own: `encode(g)` and `decode(out)` suffice."""

    def init(self, n: int, dtype=jnp.float32) -> tuple:
        return ()

    def encode(self, g, state=()):
        raise NotImplementedError

    def decode(self, out, g=None, state=()):
        raise NotImplementedError


class Identity(Stateless):
    """The raw gradient in, the raw update out (the seed's `g_rnn`)."""

    num_features = 1

    def encode(self, g: Float[Array, " n"], state=()) -> Float[Array, "n 1"]:
        return g[:, None]

    def decode(self, out: Float[Array, "n 1"], g=None, state=()):
        return out[:, 0], state


class LogRescale(Stateless):
    """The seed's log rescaling with `min_log_gradient = -k` (`g_rnn_log15`, `g_rnn_log30`).

    In: sign(g) * (log(|g| + e^(-k-5)) + k) / k maps |g| in [e^-k, 1] onto [0, 1] (the e^(-k-5)
    keeps log away from 0). Out: sign(u) * exp(|u| k - k) maps |u| in [0, 1] back onto
    [e^-k, 1], so no step is smaller than e^-k: the floor that caps how far the loss can fall.
    """

    k: float = eqx.field(static=True)

    num_features = 1

    def encode(self, g: Float[Array, " n"], state=()) -> Float[Array, "n 1"]:
        log_g = jnp.log(jnp.abs(g) + np.exp(-self.k - 5.0).astype(g.dtype))
        return (jnp.sign(g) * (log_g + self.k) / self.k)[:, None]

    def decode(self, out: Float[Array, "n 1"], g=None, state=()):
        u = out[:, 0]
        return jnp.sign(u) * jnp.exp(jnp.abs(u) * self.k - self.k), state


class RatioState(NamedTuple):
    prev_g: Float[Array, " n"]  # the previous gradient (0 before the first step)
    log_lr: Float[Array, " n"]  # log of the previous per-coordinate learning rate


class LearningRateRatio(eqx.Module):
    """Scale-free: the LSTM sets a per-coordinate learning rate from ratios of gradients.

    Features (no gradient flows through them): r = g_t / g_{t-1} clipped to [-r_max, r_max]
    (0 at the first step or when g_{t-1} = 0), the previous log learning rate
    (log_lr - lr_offset) / 10, and 1 at the first step. Out: update = -exp(out + lr_offset) * g.

    On a quadratic, r_t = 1 - h * lr_{t-1} reveals the curvature h, so the LSTM can learn a
    secant (Newton-like) step. Nothing is a fixed floor: the step scales with the gradient, and
    an exact-zero gradient gives an exact-zero step (no 0/0, no log 0).
    """

    lr_offset: float = eqx.field(static=True, default=-2.0)
    r_max: float = eqx.field(static=True, default=2.0)

    num_features = 3

    def init(self, n: int, dtype=jnp.float32) -> RatioState:
        return RatioState(jnp.zeros(n, dtype), jnp.full(n, self.lr_offset, dtype))

    def encode(self, g: Float[Array, " n"], state: RatioState) -> Float[Array, "n 3"]:
        g, prev = jax.lax.stop_gradient(g), state.prev_g
        first = jnp.all(prev == 0)
        safe_prev = jnp.where(prev == 0, 1.0, prev)
        ratio = jnp.where(prev == 0, 0.0, jnp.clip(g / safe_prev, -self.r_max, self.r_max))
        log_lr = jax.lax.stop_gradient(state.log_lr)
        return jnp.stack(
            [ratio, (log_lr - self.lr_offset) / 10.0, jnp.broadcast_to(first, g.shape).astype(g.dtype)], axis=-1
        )

    def decode(self, out: Float[Array, "n 1"], g: Float[Array, " n"], state: RatioState):
        log_lr = out[:, 0] + self.lr_offset
        return -jnp.exp(log_lr) * g, RatioState(jax.lax.stop_gradient(g), log_lr)


class PaperPreprocessing(Stateless):
    """The paper's preprocessing (arXiv 1606.04474, appendix A), with p = `p`:

    (log|g| / p, sign(g)) if |g| >= e^-p, else (-1, e^p g); out: update = output_scale * u.
    """

    p: float = eqx.field(static=True, default=10.0)
    output_scale: float = eqx.field(static=True, default=0.1)

    num_features = 2

    def encode(self, g: Float[Array, " n"], state=()) -> Float[Array, "n 2"]:
        big = jnp.abs(g) >= np.exp(-self.p)
        safe = jnp.where(big, jnp.abs(g), 1.0)
        first = jnp.where(big, jnp.log(safe) / self.p, -1.0)
        second = jnp.where(big, jnp.sign(g), np.exp(self.p) * g)
        return jnp.stack([first, second], axis=-1)

    def decode(self, out: Float[Array, "n 1"], g=None, state=()):
        return self.output_scale * out[:, 0], state


def make_preprocessing(name: str, *, min_log_gradient: float = 15.0, output_scale: float = 0.1) -> eqx.Module:
    """The transform called `name` in a `Config`."""
    if name == "identity":
        return Identity()
    if name == "log_rescale":
        return LogRescale(float(min_log_gradient))
    if name == "lr_ratio":
        return LearningRateRatio()
    if name == "paper":
        return PaperPreprocessing(float(min_log_gradient), float(output_scale))
    raise ValueError(f"Unknown preprocessing {name!r}; expected 'identity', 'log_rescale', 'lr_ratio' or 'paper'.")
