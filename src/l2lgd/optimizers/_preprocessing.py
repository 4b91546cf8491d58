"""Gradient preprocessing: what the LSTM sees of a gradient, and how its output becomes a step.

`Preprocessing` is the extension point: three pure functions on one coordinate-wise vector of
n coordinates, `init(n, dtype) -> state`, `encode(g, state) -> features` of shape
`[n, num_features]`, and `decode(out, g, state) -> (update [n], state)`, where `out` is the
LSTM's output `[n, num_outputs]`. `PREPROCESSINGS` maps each name a `Config` may give to the
transform it builds (`register_preprocessing` adds one). The reference's transforms hold no state
(`()`); for them `decode` is the inverse of the magnitude map of `encode`, so the LSTM works on
a scale-free range in both directions.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Preprocessing(eqx.Module):
    """What the LSTM sees of a gradient (`encode`) and how its output becomes a step (`decode`).

    A subclass sets `num_features` (the columns `encode` returns; a class attribute or a
    property), `num_outputs` if the LSTM should output more than one number per coordinate, and
    `init` if it carries a state (the default is none: `()`). No arrays: a preprocessing is part
    of the optimizer's static structure, rebuilt from the config.
    """

    num_outputs: ClassVar[int] = 1

    @property
    @abc.abstractmethod
    def num_features(self) -> int:
        """The number of features per coordinate that `encode` returns."""

    def init(self, n: int, dtype=jnp.float32) -> Any:
        """The state for `n` coordinates (none by default)."""
        return ()

    @abc.abstractmethod
    def encode(self, g: Float[Array, " n"], state: Any) -> Float[Array, "n features"]:
        """The LSTM's input features for the gradient `g`."""

    @abc.abstractmethod
    def decode(self, out: Float[Array, "n outputs"], g: Float[Array, " n"], state: Any) -> tuple[Float[Array, " n"], Any]:
        """`(update, new state)` from the LSTM's output `out`."""

    def init_network(self, network: Any) -> Any:
        """The freshly initialized network as this transform wants it to start (default: as is)."""
        return network


class Identity(Preprocessing):
    """The raw gradient in, the raw update out (the reference's `g_rnn`)."""

    num_features = 1

    def encode(self, g: Float[Array, " n"], state=()) -> Float[Array, "n 1"]:
        return g[:, None]

    def decode(self, out: Float[Array, "n 1"], g=None, state=()):
        return out[:, 0], state


class LogRescale(Preprocessing):
    """The reference's log rescaling with `log_range` = k (`g_rnn_log15`, `g_rnn_log30`).

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


class LearningRateRatio(Preprocessing):
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


class PaperPreprocessing(Preprocessing):
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


V_CLIP = 1e18  # |g| above it counts as 1e18 in the second moment (its square stays finite)


class MomentState(NamedTuple):
    m: Float[Array, "n k"]  # momenta at the decays `betas`
    v: Float[Array, " n"]  # second moment at decay `beta2`
    t: Float[Array, ""]  # steps taken


class Moments(Preprocessing):
    """Adam's statistics at several timescales in, a direction and a log step size out.

    Features (no gradient flows through them), all divided by sqrt(v_hat) + eps so that they do
    not depend on the scale of the loss: the bias-corrected momenta m_hat at each decay of
    `betas`, the gradient itself, and `tanh(t / tau)` of the step count t for each `taus`.
    Out (two numbers per coordinate, d and a):

        update = -exp(lr_offset + a_max * tanh(a / a_max)) * (m_hat_0.9 / (sqrt(v_hat) + eps) + s * d)

    with s = sqrt(v_hat) / (sqrt(v_hat) + eps): 0 for a coordinate whose gradient has always
    been exactly 0 (it never moves, as with Adam), 1 otherwise. So an LSTM whose outputs are 0
    is Adam with learning rate exp(lr_offset); the LSTM learns a per-coordinate correction of its
    direction and a bounded per-coordinate step size (a schedule, through the step-count
    features). Non-finite features (gradients of 1e30 overflow v) are replaced by 0 and every
    feature is clipped to [-f_max, f_max]. Invariant to the scale of the loss (up to eps).
    """

    lr_offset: float = eqx.field(static=True, default=-2.3)
    betas: tuple[float, ...] = eqx.field(static=True, default=(0.5, 0.9, 0.99))
    beta2: float = eqx.field(static=True, default=0.999)
    taus: tuple[float, ...] = eqx.field(static=True, default=(10.0, 30.0, 100.0))
    eps: float = eqx.field(static=True, default=1e-8)
    a_max: float = eqx.field(static=True, default=3.0)
    f_max: float = eqx.field(static=True, default=10.0)

    num_outputs = 2

    @property
    def num_features(self) -> int:
        return len(self.betas) + 1 + len(self.taus)

    def init(self, n: int, dtype=jnp.float32) -> MomentState:
        return MomentState(jnp.zeros((n, len(self.betas)), dtype), jnp.zeros(n, dtype), jnp.zeros((), dtype))

    def _statistics(self, g, state: MomentState):
        """The state after `g`, the scaled momenta and gradient, and s (see the class)."""
        g = jax.lax.stop_gradient(g)
        betas = jnp.asarray(self.betas, g.dtype)
        t = state.t + 1
        m = betas * jax.lax.stop_gradient(state.m) + (1 - betas) * g[:, None]
        # g**2 of a gradient over ~1e19 overflows float32; clipped first, v stays finite and the
        # features keep the gradient's sign (exact, so nothing changes below the clip).
        v = self.beta2 * jax.lax.stop_gradient(state.v) + (1 - self.beta2) * jnp.square(jnp.clip(g, -V_CLIP, V_CLIP))
        m_hat = m / (1 - betas**t)
        denom = jnp.sqrt(v / (1 - self.beta2**t)) + self.eps
        scaled = jnp.concatenate([m_hat, g[:, None]], axis=-1) / denom[:, None]
        scaled = jnp.clip(jnp.where(jnp.isfinite(scaled), scaled, 0.0), -self.f_max, self.f_max)
        seen = jnp.where(v > 0, 1.0 - self.eps / denom, 0.0)
        return MomentState(m, v, t), scaled, seen

    def encode(self, g: Float[Array, " n"], state: MomentState) -> Float[Array, "n f"]:
        _, scaled, _ = self._statistics(g, state)
        t = state.t + 1
        clock = jnp.tanh(t / jnp.asarray(self.taus, g.dtype))
        return jnp.concatenate([scaled, jnp.broadcast_to(clock, (g.shape[0], len(self.taus)))], axis=-1)

    def decode(self, out: Float[Array, "n 2"], g: Float[Array, " n"], state: MomentState):
        state, scaled, seen = self._statistics(g, state)
        direction = scaled[:, list(self.betas).index(0.9) if 0.9 in self.betas else 0] + seen * out[:, 0]
        log_lr = self.lr_offset + self.a_max * jnp.tanh(out[:, 1] / self.a_max)
        return -jnp.exp(log_lr) * direction, state



class AdaptiveState(NamedTuple):
    moments: MomentState  # Adam's statistics, as `Moments` keeps them
    log_lr: Float[Array, " n"]  # each coordinate's log step size, carried from step to step


class AdaptiveMoments(Moments):
    """`Moments` with a step size that each coordinate carries and the LSTM moves (a learned Rprop).

    Tuned learning rates differ by orders of magnitude between problems, and features divided
    by sqrt(v_hat) say nothing of the scale a problem needs: a step size that the LSTM sets
    afresh at every step from them is bound to one range. Here each coordinate keeps its own
    log step size in the state, starting at `lr_offset`, and the LSTM moves it by at most
    `inc_max` per step (within [`log_lr_min`, `log_lr_max`]), as Rprop and delta-bar-delta do
    from the agreement of successive gradients; so a problem that wants a step 100 times
    larger reaches it in a few dozen steps, and one that oscillates backs off. The carried value
    leaks back towards `lr_offset` at rate 1 - `rho` per step, so that a constant bias of the
    network moves it by a bounded amount (at most inc_max / (1 - rho)), not one that grows with
    the horizon: a run five times longer than any seen in meta-training drifts no further. Features: those of
    `Moments` (the clocks only if `taus` is given), the agreement of the gradient with the
    previous momentum at decay 0.9, (g / sqrt(v_hat)) * (m_hat / sqrt(v_hat)) clipped, and the
    carried log step size, (log_lr - lr_offset) / 5. Out (three numbers per coordinate, d, a, b):

        log_lr <- clip(lr_offset + rho (log_lr - lr_offset) + inc_max tanh(b), log_lr_min, log_lr_max)
        update = -exp(log_lr + a_max * tanh(a / a_max)) * (m_hat_0.9 / (sqrt(v_hat) + eps) + s * d)

    An LSTM whose outputs are 0 is Adam at learning rate exp(lr_offset), and the network starts
    near it (its output layer scaled by `output_init`). Finite at zero and at overflowing
    gradients, and invariant to the scale of the loss, as `Moments`.
    """

    inc_max: float = eqx.field(static=True, default=0.1)
    rho: float = eqx.field(static=True, default=0.99)
    output_init: float = eqx.field(static=True, default=0.1)
    log_lr_min: float = eqx.field(static=True, default=math.log(1e-6))
    log_lr_max: float = eqx.field(static=True, default=0.0)

    num_outputs = 3

    @property
    def num_features(self) -> int:
        return super().num_features + 2

    def init(self, n: int, dtype=jnp.float32) -> AdaptiveState:
        return AdaptiveState(super().init(n, dtype), jnp.full(n, self.lr_offset, dtype))

    def init_network(self, network):
        return eqx.tree_at(lambda n: n.out_kernel, network, network.out_kernel * self.output_init)

    def _agreement(self, g, moments: MomentState):
        """(g / sqrt(v_hat)) (m_hat_prev / sqrt(v_hat)) at decay 0.9 (0 at the first step)."""
        g = jax.lax.stop_gradient(g)
        column = list(self.betas).index(0.9) if 0.9 in self.betas else 0
        beta = self.betas[column]
        t = moments.t
        v = self.beta2 * moments.v + (1 - self.beta2) * jnp.square(jnp.clip(g, -V_CLIP, V_CLIP))
        denom = jnp.sqrt(v / (1 - self.beta2 ** (t + 1))) + self.eps
        m_prev = moments.m[:, column] / jnp.where(t > 0, 1 - beta ** jnp.maximum(t, 1.0), 1.0)
        agreement = (g / denom) * (m_prev / denom)
        agreement = jnp.where(jnp.isfinite(agreement), agreement, 0.0)
        return jnp.clip(agreement, -self.f_max, self.f_max)

    def encode(self, g: Float[Array, " n"], state: AdaptiveState) -> Float[Array, "n f"]:
        base = super().encode(g, state.moments)
        log_lr = jax.lax.stop_gradient(state.log_lr)
        extra = jnp.stack([self._agreement(g, state.moments), (log_lr - self.lr_offset) / 5.0], axis=-1)
        return jnp.concatenate([base, extra.astype(base.dtype)], axis=-1)

    def decode(self, out: Float[Array, "n 3"], g: Float[Array, " n"], state: AdaptiveState):
        moments, scaled, seen = self._statistics(g, state.moments)
        direction = scaled[:, list(self.betas).index(0.9) if 0.9 in self.betas else 0] + seen * out[:, 0]
        carried = self.lr_offset + self.rho * (state.log_lr - self.lr_offset)
        log_lr = jnp.clip(carried + self.inc_max * jnp.tanh(out[:, 2]), self.log_lr_min, self.log_lr_max)
        step = log_lr + self.a_max * jnp.tanh(out[:, 1] / self.a_max)
        return -jnp.exp(step) * direction, AdaptiveState(moments, log_lr)


# name -> the transform a Config names, built from the Config's `log_range` (k or p)
# and `output_scale`.
PREPROCESSINGS: dict[str, Callable[..., Preprocessing]] = {
    "identity": lambda log_range, output_scale: Identity(),
    "log_rescale": lambda log_range, output_scale: LogRescale(float(log_range)),
    "lr_ratio": lambda log_range, output_scale: LearningRateRatio(),
    "paper": lambda log_range, output_scale: PaperPreprocessing(float(log_range), float(output_scale)),
    "moments": lambda log_range, output_scale: Moments(),
    "moments_no_clock": lambda log_range, output_scale: Moments(taus=()),  # an ablation: no step-count features
    # `general`: longer memories and clocks for horizons of 100-10,000 steps, a step size around
    # Adam's usual 3e-3 that it may move by up to e^4 either way.
    "general": lambda log_range, output_scale: Moments(
        lr_offset=math.log(3e-3), betas=(0.5, 0.9, 0.99, 0.999), taus=(10.0, 100.0, 1000.0, 10000.0), a_max=4.0
    ),
    "general_no_clock": lambda log_range, output_scale: Moments(  # an ablation of `general`
        lr_offset=math.log(3e-3), betas=(0.5, 0.9, 0.99, 0.999), taus=(), a_max=4.0
    ),
    # `adaptive`: `general`'s statistics (no clocks: a horizon 5 times longer than any seen in
    # meta-training shows no unseen input) with a step size each coordinate carries, from 3e-3,
    # moved by the LSTM by up to e^0.1 per step within [1e-6, 1], and e^2 either way about it.
    "adaptive": lambda log_range, output_scale: AdaptiveMoments(
        lr_offset=math.log(3e-3), betas=(0.5, 0.9, 0.99, 0.999), taus=(), a_max=2.0
    ),
}


def register_preprocessing(name: str, factory: Callable[..., Preprocessing]) -> None:
    """Makes `Config(preprocessing=name)` build `factory(log_range=..., output_scale=...)`.

    Args:
        name: the name a `Config` gives.
        factory: keyword arguments `log_range` and `output_scale` (the config's; ignore them
            if unused) -> a `Preprocessing`.

    Example:
        >>> class Sign(l2lgd.Preprocessing):
        ...     num_features = 1
        ...     def encode(self, g, state=()):
        ...         return jnp.sign(g)[:, None]
        ...     def decode(self, out, g=None, state=()):
        ...         return 0.01 * out[:, 0], state
        >>> l2lgd.register_preprocessing("sign", lambda log_range, output_scale: Sign())
        >>> l2lgd.Config(preprocessing="sign").preprocessing
        'sign'
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A preprocessing's name must be a non-empty string, got {name!r}.")
    PREPROCESSINGS[name] = factory


def make_preprocessing(name: str, *, log_range: float = 15.0, output_scale: float = 0.1) -> Preprocessing:
    """The transform called `name` in a `Config` (`PREPROCESSINGS`).

    Args:
        name: a registered name ("identity", "log_rescale", "paper", ...).
        log_range, output_scale: passed to its factory (`Config`'s fields of the same names).

    Returns:
        A `Preprocessing`.
    """
    if name not in PREPROCESSINGS:
        raise ValueError(f"Unknown preprocessing {name!r}; expected one of {', '.join(map(repr, PREPROCESSINGS))}.")
    preprocessing = PREPROCESSINGS[name](log_range=log_range, output_scale=output_scale)
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"The preprocessing {name!r} built a {type(preprocessing).__name__}, not a Preprocessing.")
    return preprocessing
