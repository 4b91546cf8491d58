"""The baselines, in one registry, and the learning-rate grid they are tuned on.

`BASELINES` names each baseline as a function `(learning_rate, horizon) -> optax transformation`
(the horizon is the number of steps a task runs, for schedules such as a cosine decay): optax's
SGD, momentum, Nesterov, RMSProp, Adam and AdamW with cosine decay, and the reference notebook's
hand-written `g_sgd` and `g_rms` (`reference_sgd`, `reference_rmsprop`). `make eval`, the paper's
tables (`lab/compare.py`, `lab/paper.py`) and the suite (`suite/`) all take theirs from it.

`TUNING_FREE` names the tuning-free rivals at their defaults (Prodigy, D-Adaptation, DoG, DoWG,
COCOB, Mechanic around Adam, schedule-free AdamW scored at its averaged iterate, and Adam at
1e-3), each a `Rival`.

`LearningRateGrid` is the one grid of log-spaced learning rates they are tuned on, widened by a
decade where the best rate sits at an edge (`LearningRateGrid.search`).

The reference's baselines are written exactly as the notebook writes `g_sgd` and `g_rms`. The
reference's RMSProp differs from `optax.rmsprop`'s defaults: its epsilon is 1e-5 added outside the
square root (optax: 1e-8 inside it, `eps_in_sqrt=True`; `eps_in_sqrt=False` puts it outside) and
its decay is 0.99 (0.9).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


# Each baseline's source is part of the suite's cache key (`suite/_baselines.definition`): editing
# one recomputes its cached results, and so does rewriting it in other words.


def _sgd(lr, horizon):
    return optax.sgd(lr)


def _momentum(lr, horizon):
    return optax.sgd(lr, momentum=0.9)


def _nesterov(lr, horizon):
    return optax.sgd(lr, momentum=0.9, nesterov=True)


def _rmsprop(lr, horizon):
    return optax.rmsprop(lr)


def _adam(lr, horizon):
    return optax.adam(lr)


def _adamw_cosine(lr, horizon):
    return optax.adamw(optax.cosine_decay_schedule(lr, horizon), weight_decay=1e-4)


def _reference_sgd(lr, horizon):
    return reference_sgd(lr)


def _reference_rmsprop(lr, horizon):
    return reference_rmsprop(lr)


Baseline = Callable[[Any, int], optax.GradientTransformation]

BASELINES: dict[str, Baseline] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw_cosine": _adamw_cosine,
    "reference_sgd": _reference_sgd,
    "reference_rmsprop": _reference_rmsprop,
}


class Rival(NamedTuple):
    """A tuning-free optimizer at its defaults: what a user without a tuning budget has."""

    make: Callable[[], optax.GradientTransformation]  # the optimizer, at its authors' defaults
    # The params to score at the end (schedule-free: its averaged iterate), or None: the params.
    eval_params: Callable[[Any, Any], Any] | None = None


def _schedule_free_eval(state, params):
    return optax.contrib.schedule_free_eval_params(state, params)


# The tuning-free rivals of a learned optimizer, at optax's defaults (none takes a learning rate
# from us; `adam:1e-3` is the default a user starts from).
TUNING_FREE: dict[str, Rival] = {
    "prodigy": Rival(lambda: optax.contrib.prodigy()),
    "dadapt_adamw": Rival(lambda: optax.contrib.dadapt_adamw()),
    "dog": Rival(lambda: optax.contrib.dog()),
    "dowg": Rival(lambda: optax.contrib.dowg()),
    "cocob": Rival(lambda: optax.contrib.cocob()),
    "mechanize": Rival(lambda: optax.contrib.mechanize(optax.adam(1e-3))),
    "schedule_free_adamw": Rival(lambda: optax.contrib.schedule_free_adamw(), _schedule_free_eval),
    "adam:1e-3": Rival(lambda: optax.adam(1e-3)),
}


@dataclasses.dataclass(frozen=True)
class LearningRateGrid:
    """Learning rates 10^low ... 10^high, `per_decade` of them a decade (log-spaced), and how far
    the grid may be widened: down to 10^floor, up to 10^ceiling (`floor=low, ceiling=high`: never)."""

    low: float
    high: float
    per_decade: int
    floor: float
    ceiling: float

    def exponents(self) -> list[float]:
        """The log10 learning rates of the grid before any widening."""
        return list(np.linspace(self.low, self.high, round((self.high - self.low) * self.per_decade) + 1))

    def rates(self) -> list[float]:
        """The learning rates of the grid before any widening."""
        return [float(x) for x in np.logspace(self.low, self.high, round((self.high - self.low) * self.per_decade) + 1)]

    def search(self, scores_of: Callable[[list[float]], dict[float, float]]) -> tuple[float, dict[float, float], bool]:
        """The learning rate with the lowest score, widening the grid where it sits at an edge.

        Args:
            scores_of: learning rates -> `{rate: score}` (lower is better; inf or NaN where the
                rate diverged). Called on the grid, then on each widening: a decade on the side
                where the best rate sits (at the grid's spacing), until the best rate is inside
                the grid or at `floor` or `ceiling`.

        Returns:
            `(best rate, {rate: score} of every rate tried, in the order tried, whether the best
            rate still sits at an edge)`. The best rate is the one with the lowest finite score
            (the first of equals), or the lowest rate when no score is finite.
        """
        spacing = 1.0 / self.per_decade
        scores: dict[float, float] = {}
        new = self.rates()
        while True:
            todo = [r for r in dict.fromkeys(new) if r not in scores]
            if todo:
                scores.update(scores_of(todo))
            finite = {r: s for r, s in scores.items() if math.isfinite(s)}
            best = min(finite, key=finite.get) if finite else min(scores)
            low, high = math.log10(min(scores)), math.log10(max(scores))
            at_low, at_high = math.isclose(math.log10(best), low), math.isclose(math.log10(best), high)
            if at_low and low > self.floor + 1e-9:
                new = [float(10.0 ** (low - k * spacing)) for k in range(self.per_decade, 0, -1)]
            elif at_high and high < self.ceiling - 1e-9:
                new = [float(10.0 ** (high + k * spacing)) for k in range(1, self.per_decade + 1)]
            else:
                return best, scores, at_low or at_high
