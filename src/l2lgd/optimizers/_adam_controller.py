"""A learned controller over Adam (`OptimizerConfig(kind="adam_controller")`): Adam's direction,
with a step size per tensor that a small learned network steers from per-tensor statistics, in
the spirit of Celo-Adam and STAR (a hand-designed nominal step, a learned magnitude).

Per leaf (one tensor) and step:
- Adam's moments m, v (decays 0.9, 0.999, bias-corrected): the direction d = m_hat / (sqrt(v_hat) + eps);
- per-tensor features, each a scalar on a log or unit scale, so that no tensor's scale is baked in:
  log RMS of the gradient, of d and of the gradient over sqrt(v_hat); the cosine of the gradient
  with the momentum; the log step size carried so far; log(1 + t) / 10; and the training
  fraction f = min(t / num_steps, 1) with tanh(10 (f - 0.8)) (so that it can learn a schedule:
  the user gives num_steps, `uses_horizon`; past it the optimizer goes on as at its end);
- an MLP (features -> `hidden_size` tanh units -> 2) gives a change of the carried log step size
  (at most `MAX_CHANGE` a step, within [log 1e-6, log max_lr], from a learned start; `Config.max_lr`,
  1 by default) and a learned
  weight of the normalized gradient added to d (a Nesterov-like correction);
- update = -exp(log step size) * (d + c * g / (sqrt(v_hat) + eps)).

With `Config.relative_steps`, the step size is relative to the tensor's scale, as VeLO's and
LARS's are: the update is multiplied by (RMS of the tensor's parameters + a learned floor, 1 at
the start), and log of that RMS is a ninth feature (`uses_params`: the user passes the params to
`update`). A tensor rescaled by s (its task's coordinates phi = w / s, as `reparam_scale`'s
augmentation draws them) then gets steps 1/s as large, which is what its task wants, without the
step size having to learn s.

The state is Adam's (8 bytes a coordinate in float32) and three scalars a tensor; the extra cost
over Adam is a few reductions over the tensor and a tiny network per tensor.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import LearnedOptimizer

B1, B2, EPS = 0.9, 0.999, 1e-8
MAX_CHANGE = 0.1  # the most the log step size moves in one step
LOG_LR_MIN = math.log(1e-6)
TINY = 1e-30
NUM_FEATURES = 8
DECAY_CENTER = 0.8  # where the fraction's second feature turns


class ControllerState(NamedTuple):
    """One tensor's state: Adam's moments per coordinate, and its scalars."""

    m: Float[Array, " n"]
    v: Float[Array, " n"]
    t: Float[Array, ""]  # steps done
    log_lr: Float[Array, ""]  # the carried log step size (before the first step: the learned start)


class AdamController(LearnedOptimizer):
    """Adam's direction at a per-tensor step size a learned MLP steers (see the module)."""

    w1: Float[Array, "features hidden"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, "hidden 2"]
    b2: Float[Array, " outputs"]  # the output biases; with relative steps a third entry: the learned log floor
    log_lr0: Float[Array, ""]  # the learned starting log step size
    log_lr_max: float = eqx.field(static=True, default=0.0)  # log of `Config.max_lr`
    relative: bool = eqx.field(static=True, default=False)  # `Config.relative_steps`

    coordinatewise: ClassVar[bool] = False  # its features are statistics of the whole tensor
    uses_horizon: ClassVar[bool] = True  # the training fraction is one of its features

    @property
    def uses_params(self) -> bool:  # relative steps need the tensor's parameters
        return self.relative

    @classmethod
    def from_config(cls, config, *, key: PRNGKeyArray) -> "AdamController":
        """An MLP of `hidden_size` units, its output layer at zero (so that it starts as Adam at
        step size 1e-3 on every tensor)."""
        hidden = config.hidden_size
        k1, _ = jax.random.split(key)
        relative = bool(getattr(config, "relative_steps", False))
        features = NUM_FEATURES + relative
        return cls(
            w1=jax.random.normal(k1, (features, hidden)) / math.sqrt(features),
            b1=jnp.zeros(hidden),
            w2=jnp.zeros((hidden, 2)),
            b2=jnp.zeros(2 + relative),
            log_lr0=jnp.asarray(math.log(1e-3)),
            log_lr_max=math.log(config.max_lr),
            relative=relative,
        )

    def init_state(self, n: int, dtype=jnp.float32) -> ControllerState:
        zeros = jnp.zeros(n, dtype)
        return ControllerState(zeros, zeros, jnp.zeros((), dtype), jnp.zeros((), dtype))

    def step(self, g: Float[Array, " n"], state: ControllerState, *, total: int = 0,
             horizon: Float[Array, ""] | None = None, params: Float[Array, " n"] | None = None):
        if horizon is None:
            raise ValueError("AdamController.step needs horizon= (the steps that will be run): as_optax(opt, num_steps=N) "
                             "gives it.")
        t = state.t + 1
        fraction = jnp.clip(state.t / jnp.maximum(jnp.asarray(horizon, g.dtype), 1), 0, 1)
        m = B1 * state.m + (1 - B1) * g
        v = B2 * state.v + (1 - B2) * jnp.square(g)
        scale = jax.lax.rsqrt(v / (1 - B2**t) + EPS**2)  # ~ 1 / (sqrt(v_hat) + eps)
        d = m / (1 - B1**t) * scale
        normalized = g * scale
        log_lr = jnp.where(state.t == 0, self.log_lr0.astype(g.dtype), state.log_lr)

        # The tensor's statistics over its finite coordinates: a NaN or Inf gradient poisons its own
        # coordinate (the face marks it), not the step size of the whole tensor.
        finite = jnp.isfinite(g) & jnp.isfinite(d)
        g_, m_, d_, n_ = (jnp.where(finite, x, 0) for x in (g, m, d, normalized))
        rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(x)))
        cosine = jnp.sum(g_ * m_) / (jnp.sqrt(jnp.sum(jnp.square(g_)) * jnp.sum(jnp.square(m_))) + TINY)
        features = [
            jnp.log(rms(g_) + TINY) / 10, jnp.log(rms(d_) + TINY), jnp.log(rms(n_) + TINY),
            cosine, log_lr / 10, jnp.log1p(t) / 10, fraction, jnp.tanh(10 * (fraction - DECAY_CENTER)),
        ]
        if self.relative:
            if params is None:
                raise ValueError("AdamController with relative steps needs params= (the face passes the leaf's).")
            p_rms = rms(jnp.where(jnp.isfinite(params), params, 0))
            features.append(jnp.log(p_rms + TINY) / 10)
        hidden = jnp.tanh(jnp.stack(features) @ self.w1 + self.b1)
        change, correction = hidden @ self.w2 + self.b2[:2]
        log_lr = jnp.clip(log_lr + MAX_CHANGE * jnp.tanh(change), LOG_LR_MIN, self.log_lr_max)
        size = jnp.exp(log_lr)
        if self.relative:
            size = size * (p_rms + jnp.exp(self.b2[2]))
        update = -size * (d + correction * normalized)
        return update, ControllerState(m, v, t, log_lr)

    def coordinate_axes(self, state: ControllerState, n: int) -> Any:
        return ControllerState(0, 0, None, None)
