"""What a meta-training run carries from one meta-step to the next, and how it starts."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int

from .._config import Config
from ..estimators._base import MetaGradientEstimator
from ..estimators._named import estimator_for
from ..optimizers._base import LearnedOptimizer
from ..optimizers._kinds import make_optimizer
from ..tasks import TaskFamily


class TrainState(NamedTuple):
    """Everything a meta-training run carries from one meta-step to the next."""

    theta: Any  # the array leaves of the LearnedOptimizer
    opt_state: optax.OptState
    step: Int[Array, ""]  # meta-steps done
    skipped: Int[Array, ""]  # meta-steps whose non-finite update was dropped, in total
    consecutive_skips: Int[Array, ""]
    key: Any  # the run's key data (uint32); step keys are fold_in(key, step)
    inner: Any = ()  # the estimator's state (`Estimation.init`): optimizees in flight, or particles


def meta_optimizer(config: Config) -> optax.GradientTransformation:
    """The reference's meta-optimizer: Adam(meta_lr) after clipping the global norm to `clip_norm`."""
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_lr))


class Initial(NamedTuple):
    """What `init_state` returns."""

    state: TrainState  # before the first meta-step
    static: LearnedOptimizer  # the optimizer's static part: `eqx.combine(state.theta, static)` is the optimizer


def default_estimator(config: Config, estimator: MetaGradientEstimator | None = None) -> MetaGradientEstimator:
    """`estimator`, or the one `config.estimator` names (with the config's settings)."""
    if estimator is None:
        return estimator_for(config)
    if not isinstance(estimator, MetaGradientEstimator):
        raise TypeError(f"estimator must be an l2lgd MetaGradientEstimator, got {type(estimator).__name__}.")
    return estimator


def init_state(config: Config, family: TaskFamily | None = None, *, estimator: MetaGradientEstimator | None = None) -> Initial:
    """The state before the first meta-step, and the optimizer's static part (what
    `make_meta_loss`, `make_meta_gradient`, `make_meta_step` and `make_train_chunk` take).

    Args:
        config: the run; `config.seed` draws the initial weights and every later task.
        family: what the estimator's state starts from (default: the config's family).
        estimator: whose state `TrainState.inner` holds (default: the one the config names);
            pass the same one to `make_train_chunk`.

    Returns:
        `Initial(state, static)`: the `TrainState` (its `theta` the optimizer's arrays) and
        the optimizer's static part.

    Example:
        >>> state, static = l2lgd.init_state(l2lgd.Config(hidden_size=4))
        >>> opt = eqx.combine(state.theta, static)  # the learned optimizer
        >>> int(state.step), type(opt).__name__
        (0, 'LSTMOptimizer')
    """
    key = jax.random.key(config.seed)
    init_key, run_key = jax.random.split(key)
    opt = make_optimizer(config, key=init_key)
    theta, static = eqx.partition(opt, eqx.is_array)
    zero = jnp.zeros((), jnp.int32)
    estimation = default_estimator(config, estimator).bind(config, static, family, mesh=None)
    state = TrainState(
        theta=theta,
        opt_state=meta_optimizer(config).init(theta),
        step=zero,
        skipped=zero,
        consecutive_skips=zero,
        key=jax.random.key_data(run_key),
        inner=estimation.init(theta, run_key),
    )
    return Initial(state, static)
