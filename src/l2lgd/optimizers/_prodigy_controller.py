"""A learned controller over Prodigy (`OptimizerConfig(kind="prodigy_controller")`): a
tuning-free nominal step, Prodigy's (Mishchenko & Defazio 2023, arXiv 2306.06101: Adam at a step
size d that grows to an estimate of the distance to the solution), times a learned per-tensor
multiplier and schedule, in the spirit of STAR and Celo-Adam (a hand-designed nominal step, a
learned magnitude). Where the learned part knows nothing, the optimizer is Prodigy.

Per leaf (one tensor) and step k (params x_k, gradient g_k, the tensor's params x_0 given to `init`):
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
  -`MAX_LOG_MULTIPLIER` <= a <= 0; with `Config.schedule="cosine"`, a also adds the log of a fixed
  cosine of the fraction, from 1 down to `COSINE_FLOOR` at the horizon (and thereafter);
- update = -dlr exp(a) m / (sqrt(v) + d eps).

The multiplier only damps Prodigy's step (a schedule, a brake), and nothing else adds to the step:
the distance travelled feeds Prodigy's estimate of d, so a larger step feeds on itself (larger
steps, a larger estimate, larger steps). Meta-trained with a multiplier up to e^3 and a
Nesterov-like term, the validation score fell from the start's on both seeds within 2,000
meta-steps.

The output layer starts at zero, so a fresh optimizer is Prodigy (per tensor) at its defaults.
Its state is 16 bytes a coordinate in float32 (m, v, s and x_0) and four scalars a tensor. Its
update costs 3.1-4.9x optax Adam's on one core, optax's own Prodigy 1.8-2.6x (`make bench`, 100k
to 10M coordinates): the passes over the state arrays (m, v and s written, x_0 copied unless the
state is donated, sqrt(v) kept between the passes) and one pass for every sum over the tensor,
which XLA's CPU backend runs as a scalar loop, not vectorized as it does the others. That loop
costs about 1.2 ms a million coordinates whatever the number of sums (one core; a single sum is
vectorized, 0.2-0.3 ms): the sums as separate reductions, over [rows, lanes] reshapes, or with
the moments recomputed inside the reduction (so that no pass has to wait for them) all measured
slower (a scratch script, stop 45).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
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
# A fixed schedule of Prodigy's step under the learned multiplier (`Config.schedule`), a function of
# the training fraction: Prodigy's own (none), or a cosine from 1 down to `COSINE_FLOOR` at the horizon.
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.05


@jax.custom_jvp
def _sums(*terms: Float[Array, " n"]) -> tuple[Float[Array, ""], ...]:
    """The sum of each array (one axis), in one variadic reduce: one pass over the arrays, which XLA
    fuses with the elementwise work that makes them. Differentiable (a sum's tangent is the sum of
    the tangents), which a variadic reduce is not by itself."""
    zeros = tuple(jnp.zeros((), x.dtype) for x in terms)
    return lax.reduce(terms, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), (0,))


@_sums.defjvp
def _sums_jvp(primals, tangents):
    return _sums(*primals), tuple(jnp.sum(t) for t in tangents)


def _finite_or_zero(x: Float[Array, " n"]) -> Float[Array, " n"]:
    return jnp.where(jnp.isfinite(x), x, 0)


class ProdigyState(NamedTuple):
    """One tensor's state: Prodigy's per-coordinate arrays and its scalars."""

    m: Float[Array, " n"]
    v: Float[Array, " n"]
    s: Float[Array, " n"]  # the weighted sum of gradients (the estimate's denominator)
    x0: Float[Array, " n"]  # the params given to `init` (where the distance travelled is measured from)
    t: Float[Array, ""]  # steps done
    d: Float[Array, ""]  # the step size estimate
    r: Float[Array, ""]  # the estimate's numerator


class ProdigyController(LearnedOptimizer):
    """Prodigy's step times a learned per-tensor multiplier and schedule (see the module)."""

    w1: Float[Array, "features hidden"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, " hidden"]
    b2: Float[Array, ""]
    schedule: str = eqx.field(static=True, default="constant")  # `Config.schedule`

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
            schedule=getattr(config, "schedule", "constant"),
        )

    def init_state(self, n: int, dtype=jnp.float32) -> ProdigyState:
        """A leaf's state with x_0 = 0: `init_state_for(params)` (what the face uses) starts it
        at the params."""
        return self.init_state_for(jnp.zeros(n, dtype))

    def init_state_for(self, params: Float[Array, " n"]) -> ProdigyState:
        """A leaf's state, x_0 its params (those given to the face's `init`). x_0 never changes
        after: `update` returns it as it came (one copy, or none when the state is donated)
        instead of selecting it from the params and writing it again every step."""
        zeros, scalar = jnp.zeros_like(params), jnp.zeros((), params.dtype)
        return ProdigyState(zeros, zeros, zeros, params, scalar, jnp.asarray(D0, params.dtype), scalar)

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
        # A NaN or Inf gradient poisons its own coordinate (the face makes its update NaN, and the
        # param stays NaN), not the tensor's d or statistics: every sum over the tensor skips the
        # coordinates whose gradient is not finite, the distance travelled also those where it is
        # not (a NaN param); the state stays finite: g is zeroed there, and d g is clipped.
        finite = jnp.isfinite(g)
        g = jnp.clip(jnp.where(finite, g, 0), -MAX_GRAD, MAX_GRAD)
        d = state.d
        dlr = d * jnp.sqrt(1 - B2**t) / (1 - B1**t)
        dg = jnp.clip(d * g, -MAX_DG, MAX_DG)
        m = B1 * state.m + (1 - B1) * dg
        v = B2 * state.v + (1 - B2) * jnp.square(dg)
        s = B3 * state.s + dlr * dg
        # The direction is m / (sqrt(v) + d eps): the sums take it as m * scale, the update
        # divides, so that only sqrt(v) goes through memory between the two passes (not `scale`
        # and the direction as well).
        scale = 1 / (jnp.sqrt(v) + d * EPS)
        m_ = jnp.where(finite, m, 0)
        # Every sum over the tensor in one pass, not one pass each: the update's cost is its passes.
        travelled, s_norm, direction_sq, normalized_sq, g_dot_m, g_sq, m_sq = _sums(
            dg * _finite_or_zero(state.x0 - params), jnp.abs(s), jnp.square(m_ * scale),
            jnp.square(dg * scale), g * m_, jnp.square(g), jnp.square(m_))
        r = B3 * state.r + dlr * travelled
        estimate = r / jnp.where(s_norm > 0, s_norm, 1)
        new_d = jnp.where(jnp.isfinite(estimate) & (s_norm > 0), jnp.maximum(d, estimate), d)

        n = g.shape[0]
        rms = lambda sum_sq: jnp.sqrt(sum_sq / n)
        cosine = g_dot_m / (jnp.sqrt(g_sq * m_sq) + TINY)
        features = jnp.stack([
            fraction, jnp.tanh(10 * (fraction - DECAY_CENTER)), jnp.log1p(t) / 10, cosine,
            jnp.log(rms(direction_sq) + TINY) / 10, jnp.log(rms(normalized_sq) + TINY) / 10,
            jnp.minimum(jnp.log(new_d / d), 1.0),
        ])
        hidden = jnp.tanh(features @ self.w1 + self.b1)
        log_multiplier = hidden @ self.w2 + self.b2
        if self.schedule == "cosine":
            log_multiplier = log_multiplier + jnp.log(
                COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + jnp.cos(math.pi * fraction)))
        update = -dlr * jnp.exp(jnp.clip(log_multiplier, -MAX_LOG_MULTIPLIER, 0)) * (m / (jnp.sqrt(v) + d * EPS))
        return update, ProdigyState(m, v, s, state.x0, t, new_d, r)

    def coordinate_axes(self, state: ProdigyState, n: int) -> Any:
        return ProdigyState(0, 0, 0, 0, None, None, None)
