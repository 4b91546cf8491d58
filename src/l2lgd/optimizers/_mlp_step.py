"""A per-coordinate MLP over Adam with a learned schedule of the training fraction
(`OptimizerConfig(kind="mlp_step")`), in the spirit of Celo and VeLO (per-coordinate MLP on
tensor-normalized features, a global schedule of t / num_steps) and STAR (a hand-designed nominal
step plus a learned correction, so that meta-training starts from Adam).

Per leaf (one tensor) and step t (0, 1, ...) of a run of `horizon` steps:
- moments of the gradient g (clipped to +-`MAX_GRAD`, so that g**2 stays finite in float32):
  momenta at decays 0.9, 0.99, 0.999 and Adam's second moment v (0.999); Adam's direction
  a = m_hat / (sqrt(v_hat) + eps) with the 0.9 momentum, bias-corrected as in `optax.adam`;
- per-coordinate features, each divided by its RMS over the tensor (so that no tensor's scale is
  baked in, and bias corrections cancel): g, clip(g, +-0.1), the three momenta, sqrt(v), a and
  1 / (sqrt(v_hat) + eps); and scalars shared by every coordinate: the training fraction
  f = min(t / horizon, 1), tanh(10 (f - c)) for c in `FRACTION_CENTERS`, log(1 + t) / 10;
- an MLP (features -> `hidden_size` ReLU units -> 2), shared by all coordinates, gives a
  direction correction d and a log-magnitude m per coordinate; a second small MLP of the scalars
  gives a global log step size s (from a learned start);
- update = -exp(s) * (a + d) * exp(0.1 m).

Both output layers start at zero and s at log 1e-3, so a fresh optimizer is Adam(1e-3) up to
rounding. Past the horizon the fraction stays at 1: the optimizer goes on as at the end of its
horizon. The state is 16 bytes a coordinate in float32 (three momenta and v) and a step count.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import LearnedOptimizer

DECAYS = (0.9, 0.99, 0.999)  # the momenta's; the first is Adam's
B2, EPS = 0.999, 1e-8
MAX_GRAD = 1e16  # gradients are clipped here: v_hat <= MAX_GRAD**2 / (1 - B2) stays finite in float32
CLIP = 0.1  # the clipped gradient feature's bound
FRACTION_CENTERS = (0.1, 0.5, 0.9)
MAGNITUDE_SCALE = 0.1  # update ~ exp(MAGNITUDE_SCALE * m)
MAX_LOG_MAGNITUDE = 5.0  # |MAGNITUDE_SCALE * m| at most this
LOG_LR_RANGE = (math.log(1e-7), 0.0)
NUM_COORDINATE_FEATURES = 8
NUM_SCALAR_FEATURES = 2 + len(FRACTION_CENTERS)


class MLPStepState(NamedTuple):
    """One tensor's state: the momenta [3, n], the second moment [n] and the steps done."""

    m: Float[Array, "3 n"]
    v: Float[Array, " n"]
    t: Float[Array, ""]


def rms_normalized(x: Float[Array, "k n"]) -> Float[Array, "k n"]:
    """Each row of `x` divided by its RMS (0 for a row of zeros), without overflow: the row is
    first scaled by its largest magnitude, so values up to the float maximum are fine."""
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    y = x / jnp.where(scale > 0, scale, 1)
    rms = jnp.sqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True))  # >= 1/sqrt(n) unless all zero
    return y / jnp.where(rms > 0, rms, 1)


def scalar_features(t: Float[Array, ""], horizon: Float[Array, ""]) -> Float[Array, " features"]:
    """The features shared by every coordinate: the training fraction f = min(t / horizon, 1)
    (t the steps done), tanh(10 (f - c)) for each of `FRACTION_CENTERS`, log(1 + t) / 10."""
    f = jnp.clip(t / jnp.maximum(horizon, 1), 0, 1)
    return jnp.stack([f, *(jnp.tanh(10 * (f - c)) for c in FRACTION_CENTERS), jnp.log1p(t) / 10])


class MLPStep(LearnedOptimizer):
    """Adam's direction plus a per-coordinate learned correction, at a learned schedule of the
    training fraction (see the module). Needs the number of steps the user will run."""

    w1: Float[Array, "coordinate_features hidden"]
    w1_scalars: Float[Array, "scalar_features hidden"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, "hidden 2"]
    b2: Float[Array, " 2"]
    schedule_w1: Float[Array, "scalar_features hidden"]
    schedule_b1: Float[Array, " hidden"]
    schedule_w2: Float[Array, " hidden"]
    log_lr0: Float[Array, ""]  # the learned log step size before the schedule's correction

    coordinatewise: ClassVar[bool] = False  # its features are normalized over the whole tensor
    uses_horizon: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config, *, key: PRNGKeyArray) -> "MLPStep":
        """MLPs of `hidden_size` units, their output layers at zero (so that it starts as Adam at
        step size 1e-3)."""
        hidden = config.hidden_size
        k1, k2, k3 = jax.random.split(key, 3)
        fan_in = NUM_COORDINATE_FEATURES + NUM_SCALAR_FEATURES
        return cls(
            w1=jax.random.normal(k1, (NUM_COORDINATE_FEATURES, hidden)) / math.sqrt(fan_in),
            w1_scalars=jax.random.normal(k2, (NUM_SCALAR_FEATURES, hidden)) / math.sqrt(fan_in),
            b1=jnp.zeros(hidden),
            w2=jnp.zeros((hidden, 2)),
            b2=jnp.zeros(2),
            schedule_w1=jax.random.normal(k3, (NUM_SCALAR_FEATURES, hidden)) / math.sqrt(NUM_SCALAR_FEATURES),
            schedule_b1=jnp.zeros(hidden),
            schedule_w2=jnp.zeros(hidden),
            log_lr0=jnp.asarray(math.log(1e-3)),
        )

    def init_state(self, n: int, dtype=jnp.float32) -> MLPStepState:
        return MLPStepState(jnp.zeros((len(DECAYS), n), dtype), jnp.zeros(n, dtype), jnp.zeros((), dtype))

    def step(self, g: Float[Array, " n"], state: MLPStepState, *, total: int = 0,
             horizon: Float[Array, ""] | None = None):
        if horizon is None:
            raise ValueError("MLPStep.step needs horizon= (the steps that will be run): as_optax(opt, num_steps=N) gives it.")
        t = state.t + 1
        g = jnp.clip(g, -MAX_GRAD, MAX_GRAD)
        decays = jnp.asarray(DECAYS, g.dtype)[:, None]
        m = decays * state.m + (1 - decays) * g
        v = B2 * state.v + (1 - B2) * jnp.square(g)
        inverse = 1 / (jnp.sqrt(v / (1 - B2**t)) + EPS)
        adam = m[0] / (1 - DECAYS[0] ** t) * inverse

        coordinates = rms_normalized(jnp.stack([g, jnp.clip(g, -CLIP, CLIP), *m, jnp.sqrt(v), adam, inverse]))
        scalars = scalar_features(state.t, jnp.asarray(horizon, g.dtype))
        hidden = jax.nn.relu(coordinates.T @ self.w1 + (scalars @ self.w1_scalars + self.b1))
        direction, magnitude = (hidden @ self.w2 + self.b2).T
        log_lr = self.log_lr0 + jnp.tanh(scalars @ self.schedule_w1 + self.schedule_b1) @ self.schedule_w2
        lr = jnp.exp(jnp.clip(log_lr, *LOG_LR_RANGE))
        scale = jnp.exp(jnp.clip(MAGNITUDE_SCALE * magnitude, -MAX_LOG_MAGNITUDE, MAX_LOG_MAGNITUDE))
        return -lr * (adam + direction) * scale, MLPStepState(m, v, t)

    def coordinate_axes(self, state: MLPStepState, n: int) -> Any:
        return MLPStepState(1, 0, None)
