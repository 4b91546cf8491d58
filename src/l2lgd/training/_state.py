"""What a meta-training run carries from one meta-step to the next, and how it starts."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from .._config import EVOLUTION, Config
from ..estimators._named import estimator_for
from ..optimizers._learned import LearnedOptimizer, make_optimizer
from ..optimizers._optax_face import as_optax
from ..tasks import TaskFamily, draw_rescaled, training_family
from ._evolve import init_particles


class Inner(NamedTuple):
    """The optimizees carried from one truncated unroll to the next (batched)."""

    loss_fn: Any
    params: Any
    opt_state: Any
    key: Any  # uint32 key data of each task's minibatch stream


class TrainState(NamedTuple):
    """Everything a meta-training run carries from one meta-step to the next."""

    theta: Any  # the array leaves of the LearnedOptimizer
    opt_state: optax.OptState
    step: Int[Array, ""]  # meta-steps done
    skipped: Int[Array, ""]  # meta-steps whose non-finite update was dropped, in total
    consecutive_skips: Int[Array, ""]
    key: Any  # the run's key data (uint32); step keys are fold_in(key, step)
    inner: Any = ()  # truncated training: the `Inner` optimizees in flight; es/pes: each member's `Particles`


def meta_optimizer(config: Config) -> optax.GradientTransformation:
    """The reference's meta-optimizer: Adam(meta_lr) after clipping the global norm to `clip_norm`."""
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_lr))


class Initial(NamedTuple):
    """What `init_state` returns."""

    state: TrainState  # before the first meta-step
    static: LearnedOptimizer  # the optimizer's static part: `eqx.combine(state.theta, static)` is the optimizer


def init_state(config: Config, family: TaskFamily | None = None) -> Initial:
    """The state before the first meta-step, and the optimizer's static part (what
    `make_meta_loss`, `make_meta_gradient`, `make_meta_step` and `make_train_chunk` take).

    Args:
        config: the run; `config.seed` draws the initial weights and every later task.
        family: draws the first tasks of truncated training (default: the config's family).

    Returns:
        `Initial(state, static)`: the `TrainState` (its `theta` the optimizer's arrays) and
        the optimizer's static part.

    Example:
        >>> state, static = l2lgd.init_state(l2lgd.Config(hidden_size=4))
        >>> opt = eqx.combine(state.theta, static)  # the LearnedOptimizer
        >>> int(state.step), type(opt).__name__
        (0, 'LearnedOptimizer')
    """
    key = jax.random.key(config.seed)
    init_key, run_key = jax.random.split(key)
    opt = make_optimizer(config, key=init_key)
    theta, static = eqx.partition(opt, eqx.is_array)
    zero = jnp.zeros((), jnp.int32)
    inner = ()
    if config.estimator in EVOLUTION:
        family = family if family is not None else training_family(config)
        inner = init_particles(config, static, theta, family, estimator_for(config), jax.random.fold_in(run_key, 2**31 - 1))
    elif config.truncations > 1:
        loss_fn, x0, keys = make_task_batch(config, family)(jax.random.key_data(run_key), zero)
        tx = as_optax(opt)
        inner = Inner(loss_fn, x0, jax.vmap(tx.init)(x0), keys)
    state = TrainState(
        theta=theta,
        opt_state=meta_optimizer(config).init(theta),
        step=zero,
        skipped=zero,
        consecutive_skips=zero,
        key=jax.random.key_data(run_key),
        inner=inner,
    )
    return Initial(state, static)


def make_task_batch(config: Config, family: TaskFamily | None = None):
    """`tasks(key_data, step)`: the batch of tasks `(loss_fn, params0, minibatch_key)` drawn
    at meta-step `step`.

    Its key is `fold_in(run_key, step)`, so a resumed run draws exactly what an uninterrupted
    run draws, however the steps are chunked.
    """
    family = family if family is not None else training_family(config)

    def tasks(key_data, step):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
        return jax.vmap(lambda k: draw_rescaled(family, k, config.reparam_scale))(jax.random.split(step_key, config.batch_size))

    return tasks
