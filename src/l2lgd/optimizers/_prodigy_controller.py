"""A learned controller over Prodigy (`OptimizerConfig(kind="prodigy_controller")`): a
tuning-free nominal step, Prodigy's (Mishchenko & Defazio 2023, arXiv 2306.06101: Adam at a step
size d that grows to an estimate of the distance to the solution), times a learned per-tensor
multiplier and schedule, in the spirit of STAR and Celo-Adam (a hand-designed nominal step, a
learned magnitude). Where the learned part knows nothing, the optimizer is Prodigy.

Per leaf (one tensor) and step k (params x_k, gradient g_k, the tensor's first params x_0):
- Prodigy, per tensor (each tensor has its own d, as layer-wise D-adaptation has):
  m = b1 m + (1 - b1) d g, v = b2 v + (1 - b2) d^2 g^2, the nominal step size
  dlr = d sqrt(1 - b2^k) / (1 - b1^k), the direction m / (sqrt(v) + d eps); its estimate
  r = b3 r + d dlr <g, x_0 - x_k>, s = b3 s + d dlr g, d = max(d, r / |s|_1) (b3 = sqrt(b2),
  d from 1e-6, as `optax.contrib.prodigy`'s defaults);
- per-tensor features, each on a log or unit scale: the training fraction f = min(k / horizon, 1)
  and tanh(10 (f - 0.8)) (the user gives num_steps, `uses_horizon`; past it the optimizer goes on
  as at its end), log(1 + k) / 10, the cosine of the gradient with the momentum, log RMS of the
  direction and of the normalized gradient, and how much d grew this step;
- an MLP (features -> `hidden_size` tanh units -> 1) gives a log multiplier a of the step,
  -`MAX_LOG_MULTIPLIER` <= a <= 0;
- update = -dlr exp(a) m / (sqrt(v) + d eps).

The multiplier only damps Prodigy's step (a schedule, a brake), and nothing else adds to the step:
the distance travelled feeds Prodigy's estimate of d, so a larger step feeds on itself (larger
steps, a larger estimate, larger steps). Meta-trained with a multiplier up to e^3 and a
Nesterov-like term, the validation score fell from the start's on both seeds within 2,000
meta-steps.

The output layer starts at zero, so a fresh optimizer is Prodigy (per tensor) at its defaults.
Its state is 16 bytes a coordinate in float32 (m, v, s and x_0) and four scalars a tensor. Its
update costs 5-9x optax Adam's on one core (optax's own Prodigy: 2-3x; the learned features add
about a tenth): four state arrays, and reductions over the tensor that XLA runs in several passes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import LearnedOptimizer

B1, B2, EPS = 0.9, 0.999, 1e-8
B3 = math.sqrt(B2)  # the decay of Prodigy's estimate
D0 = 1e-6  # Prodigy's first (under-)estimate of the step size
MAX_LOG_MULTIPLIER = 5.0  # the learned multiplier stays within e^-5 .. 1
MAX_GRAD = 1e16  # gradients are clipped here, and d g at MAX_DG, so that (d g)^2 and the sums stay finite in float32
MAX_DG = 1e18
TINY = 1e-30
DECAY_CENTER = 0.8  # where the fraction's second feature turns
NUM_FEATURES = 7


class ProdigyState(NamedTuple):
    """One tensor's state: Prodigy's per-coordinate arrays and its scalars."""

    m: Float[Array, " n"]
    v: Float[Array, " n"]
    s: Float[Array, " n"]  # the weighted sum of gradients (the estimate's denominator)
    x0: Float[Array, " n"]  # the tensor's params at the first step
    t: Float[Array, ""]  # steps done
    d: Float[Array, ""]  # the step size estimate
    r: Float[Array, ""]  # the estimate's numerator


class ProdigyController(LearnedOptimizer):
    """Prodigy's step times a learned per-tensor multiplier and schedule (see the module)."""

    w1: Float[Array, "features hidden"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, " hidden"]
    b2: Float[Array, ""]

    coordinatewise: ClassVar[bool] = False  # its features and d are statistics of the whole tensor
    uses_horizon: ClassVar[bool] = True  # the training fraction is one of its features
    uses_params: ClassVar[bool] = True  # Prodigy's estimate needs the distance from the first params

    @classmethod
    def from_config(cls, config, *, key: PRNGKeyArray) -> "ProdigyController":
        """An MLP of `hidden_size` units, its output layer at zero (so that it starts as Prodigy)."""
        hidden = config.hidden_size
        return cls(
            w1=jax.random.normal(key, (NUM_FEATURES, hidden)) / math.sqrt(NUM_FEATURES),
            b1=jnp.zeros(hidden),
            w2=jnp.zeros(hidden),
            b2=jnp.zeros(()),
        )

    def init_state(self, n: int, dtype=jnp.float32) -> ProdigyState:
        zeros, scalar = jnp.zeros(n, dtype), jnp.zeros((), dtype)
        return ProdigyState(zeros, zeros, zeros, zeros, scalar, jnp.asarray(D0, dtype), scalar)

    def step(self, g: Float[Array, " n"], state: ProdigyState, *, total: int = 0,
             horizon: Float[Array, ""] | None = None, params: Float[Array, " n"] | None = None):
        if horizon is None:
            raise ValueError("ProdigyController.step needs horizon= (the steps that will be run): "
                             "as_optax(opt, num_steps=N) gives it.")
        if params is None:
            raise ValueError("ProdigyController.step needs params= (the face passes the leaf's).")
        dtype = g.dtype
        t = state.t + 1
        fraction = jnp.clip(state.t / jnp.maximum(jnp.asarray(horizon, dtype), 1), 0, 1)
        x0 = jnp.where(state.t == 0, params, state.x0)
        # A NaN or Inf gradient poisons its own coordinate (the face makes its update NaN, and the
        # param stays NaN), not the tensor's d or statistics: every sum over the tensor skips the
        # coordinates whose gradient or param is not finite (the state stays finite: g is zeroed
        # there, and d g is clipped).
        finite = jnp.isfinite(g) & jnp.isfinite(params)
        g = jnp.clip(jnp.where(finite, g, 0), -MAX_GRAD, MAX_GRAD)
        d = state.d
        dlr = d * jnp.sqrt(1 - B2**t) / (1 - B1**t)
        dg = jnp.clip(d * g, -MAX_DG, MAX_DG)
        m = B1 * state.m + (1 - B1) * dg
        v = B2 * state.v + (1 - B2) * jnp.square(dg)
        s = B3 * state.s + dlr * dg
        r = B3 * state.r + dlr * jnp.sum(dg * jnp.where(finite, x0 - params, 0))
        denominator = jnp.sum(jnp.abs(s))
        estimate = r / jnp.where(denominator > 0, denominator, 1)
        new_d = jnp.where(jnp.isfinite(estimate) & (denominator > 0), jnp.maximum(d, estimate), d)

        scale = 1 / (jnp.sqrt(v) + d * EPS)
        direction, normalized = m * scale, dg * scale
        rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(jnp.where(finite, x, 0))))
        m_ = jnp.where(finite, m, 0)
        cosine = jnp.sum(g * m_) / (jnp.sqrt(jnp.sum(jnp.square(g)) * jnp.sum(jnp.square(m_))) + TINY)
        features = jnp.stack([
            fraction, jnp.tanh(10 * (fraction - DECAY_CENTER)), jnp.log1p(t) / 10, cosine,
            jnp.log(rms(direction) + TINY) / 10, jnp.log(rms(normalized) + TINY) / 10,
            jnp.minimum(jnp.log(new_d / d), 1.0),
        ])
        hidden = jnp.tanh(features @ self.w1 + self.b1)
        log_multiplier = hidden @ self.w2 + self.b2
        update = -dlr * jnp.exp(jnp.clip(log_multiplier, -MAX_LOG_MULTIPLIER, 0)) * direction
        return update, ProdigyState(m, v, s, x0, t, new_d, r)

    def coordinate_axes(self, state: ProdigyState, n: int) -> Any:
        return ProdigyState(0, 0, 0, 0, None, None, None)
