"""The pure meta-training step: the estimator's estimate (`estimators`), then the meta-optimizer's
update of theta, skipped and counted when not finite.

`make_train_chunk(config, static)` returns one jitted function that runs many meta-steps in a
single compiled call (`lax.scan` over meta-steps); it knows the estimator only by its protocol.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from .._config import Config
from .._process import cpu_compiler_options
from ..estimators._base import Estimate, MetaGradientEstimator, all_finite
from ..optimizers._base import LearnedOptimizer
from ..tasks import TaskFamily
from ._state import TrainState, default_estimator, meta_optimizer


class StepRecord(NamedTuple):
    """What one meta-step leaves behind."""

    final_log10: Float[Array, ""]  # mean over the batch of log10(f(x_{T-1}) + 1e-38); NaN when nothing was usable
    meta_loss: Float[Array, ""]
    skipped: Array  # bool: this step's update was dropped
    usable: Float[Array, ""]  # the fraction of the estimate's tasks (particles) that stayed finite


def make_meta_gradient(config: Config, static: LearnedOptimizer, *, estimator: MetaGradientEstimator | None = None):
    """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`.

    The meta-gradient is the mean over the batch; with `per_task_clip` each task's
    meta-gradient is first clipped to global norm `clip_norm` (then the usual clip applies to
    the mean as well).

    Args:
        config: the unroll (`num_steps`, `objective`, `second_order`, `per_task_clip`, ...).
        static: the optimizer's static part (`init_state(config).static`).
        estimator: how it is estimated, a `MetaGradientEstimator` (default: the one
            `config.estimator` names with the config's settings, e.g. `FusedBackprop`, the
            hand-written backward pass; `Autodiff()` is `jax.grad` of the generic unroll, the
            reference it is tested against: equal to float32 rounding).

    Returns:
        `meta_gradient(theta, tasks, opt_states=None, start=0)`, a pure function of a batch of
        tasks `(loss_fn, params0[, minibatch_key])` with a leading batch axis
        (`make_task_batch`); it returns `MetaGradient(objective, final_losses, grads, carries)`.

    Example:
        >>> config = l2lgd.Config(hidden_size=4, batch_size=2)
        >>> state, static = l2lgd.init_state(config)
        >>> tasks = l2lgd.make_task_batch(config)(jax.random.key_data(state.key), 0)
        >>> result = l2lgd.make_meta_gradient(config, static)(state.theta, tasks)
        >>> result.final_losses.shape, jax.tree.structure(result.grads) == jax.tree.structure(state.theta)
        ((2,), True)
    """
    return default_estimator(config, estimator).make(config, static)


def make_meta_step(
    config: Config,
    static: LearnedOptimizer,
    *,
    estimator: MetaGradientEstimator | None = None,
    family: TaskFamily | None = None,
    mesh: Mesh | None | str = None,
):
    """`meta_step(state, draw, step=state.step) -> (state, StepRecord)`: one meta-step.

    `draw` is what the estimator consumes at this step (`Estimation.draws`): for
    backpropagation a batch of tasks (`make_task_batch`), for evolution strategies the step's key
    (the particles in `state.inner` draw their own tasks of `family`, default the config's).

    An update whose meta-loss or meta-gradient is not finite is dropped (theta and Adam state
    unchanged) and counted. `estimator`: see `make_meta_gradient`. (The driver checks the weights
    and Adam state after each chunk; checking them here too would change XLA's fusion of the
    update, and so the trained weights at float32 rounding.)
    """
    estimation = default_estimator(config, estimator).bind(config, static, family, mesh)
    tx = meta_optimizer(config)

    def meta_step(state: TrainState, draw, step=None) -> tuple[TrainState, StepRecord]:
        step = state.step if step is None else step
        estimate, inner = estimation.estimate(state.theta, state.inner, draw, step)
        return _apply(tx, state, estimate, inner)

    meta_step.estimation = estimation
    return meta_step


def _apply(tx, state: TrainState, estimate: Estimate, inner) -> tuple[TrainState, StepRecord]:
    """The meta-optimizer's update, dropped (theta and Adam state unchanged) and counted when the
    objective or the meta-gradient is not finite."""
    finite = jnp.isfinite(estimate.objective) & all_finite(estimate.grads)
    updates, opt_state = tx.update(estimate.grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    skip = (~finite).astype(jnp.int32)
    new_state = TrainState(
        theta=keep(theta, state.theta),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        skipped=state.skipped + skip,
        consecutive_skips=(state.consecutive_skips + 1) * skip,
        key=state.key,
        inner=inner,
    )
    return new_state, StepRecord(estimate.final_log10, estimate.objective, ~finite, estimate.usable)


def make_train_chunk(
    config: Config,
    static: LearnedOptimizer,
    family: TaskFamily | None = None,
    *,
    mesh: Mesh | None | str = "auto",
    estimator: MetaGradientEstimator | None = None,
):
    """`train_chunk(state, meta_steps) -> (state, StepRecord of [meta_steps] arrays)`, jitted.

    What the chunk's meta-steps consume (`Estimation.draws`: batches of tasks, or step keys) is
    drawn up front in one batched call, then a `lax.scan` runs the meta-steps. `meta_steps` is
    static: each distinct value compiles once. The estimator splits its work over `mesh`
    (default: the devices that divide it, e.g. the batch of tasks for backpropagation, each task's
    particles for evolution strategies); the chunk takes and returns the state replicated.

    Args:
        config, static: as for `make_meta_gradient`; `config.meta_lr` and `clip_norm` set the
            meta-optimizer (`meta_optimizer`).
        family: the `TaskFamily` to draw from (default: the config's).
        mesh: "auto", a `jax.sharding.Mesh` with the estimator's axis ("batch" for
            backpropagation, "pairs" for evolution strategies, which then run the chunk under `jax.shard_map`), or None (one device).
        estimator: as for `make_meta_gradient`.

    Returns:
        The jitted `train_chunk`: `StepRecord` holds each meta-step's objective, log10 final
        loss and whether it was skipped (non-finite).

    Example:
        >>> config = l2lgd.Config(hidden_size=4)
        >>> state, static = l2lgd.init_state(config)
        >>> state, record = l2lgd.make_train_chunk(config, static)(state, 5)
        >>> int(state.step), record.final_log10.shape
        (5, (5,))
    """
    meta_step = make_meta_step(config, static, estimator=estimator, family=family, mesh=mesh)
    estimation = meta_step.estimation

    def train_chunk(state: TrainState, meta_steps: int):
        steps = state.step + jnp.arange(meta_steps, dtype=state.step.dtype)
        draws = estimation.draws(state.key, steps)
        return lax.scan(lambda s, x: meta_step(s, *x), state, (draws, steps))

    if estimation.mesh is None:
        return jax.jit(train_chunk, static_argnums=1, compiler_options=cpu_compiler_options())
    if estimation.local is not None:  # the estimator splits its work itself: every device runs the chunk
        def split_chunk(state: TrainState, meta_steps: int):
            def on_device(state):
                state, record = train_chunk(state._replace(inner=estimation.local(state.inner)), meta_steps)
                return state._replace(inner=estimation.gather(state.inner)), record

            # Every device ends the chunk with the same state and record (the estimate is summed
            # over the devices, then each applies the same update): the output is device 0's.
            return jax.shard_map(on_device, mesh=estimation.mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(),
                                 check_vma=False)(state)
        chunk = split_chunk
    else:
        chunk = train_chunk
    # The chunk takes and returns the state replicated, so that it is the same on every host (each
    # can read and save it) and every chunk runs one compiled program.
    replicated = NamedSharding(estimation.mesh, PartitionSpec())
    jitted = jax.jit(chunk, static_argnums=1, compiler_options=cpu_compiler_options(),
                     in_shardings=replicated, out_shardings=replicated)

    # A state not yet placed (fresh from init_state, restored, or broadcast from process 0) is put
    # replicated first: given as it is, it would lower to a second program.
    def placed_chunk(state: TrainState, meta_steps: int):
        return jitted(jax.device_put(state, replicated), meta_steps)

    placed_chunk.lower = lambda state, meta_steps: jitted.lower(jax.device_put(state, replicated), meta_steps)
    return placed_chunk
