"""The pure meta-training step: estimate the meta-gradient of a batch of tasks, update theta.

`make_train_chunk(config, static)` returns one jitted function that runs many meta-steps in a
single compiled call (`lax.scan` over meta-steps, `vmap` over the batch of tasks).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from .._config import EVOLUTION, Config
from .._objectives import log10_loss
from .._process import cpu_compiler_options
from ..estimators._base import MetaGradientEstimator
from ..estimators._evolution import Evolution
from ..estimators._named import estimator_for
from ..optimizers._learned import LearnedOptimizer
from ..optimizers._optax_face import as_optax
from ..tasks import TaskFamily, training_family
from ._evolve import divisor_mesh, make_evolution_gradient, particle_mesh
from ._state import Inner, TrainState, make_task_batch, meta_optimizer


class StepRecord(NamedTuple):
    """What one meta-step leaves behind."""

    final_log10: Float[Array, ""]  # mean over the batch of log10(f(x_{T-1}) + 1e-38)
    meta_loss: Float[Array, ""]
    skipped: Array  # bool: this step's update was dropped


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def default_estimator(config: Config) -> MetaGradientEstimator:
    """The estimator used when none is given: the one `config.estimator` names."""
    return estimator_for(config)


def make_meta_gradient(config: Config, static: LearnedOptimizer, *, estimator: MetaGradientEstimator | None = None):
    """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`.

    The meta-gradient is the mean over the batch; with `per_task_clip` each task's
    meta-gradient is first clipped to global norm `clip_norm` (then the usual clip applies to
    the mean as well).

    Args:
        config: the unroll (`num_steps`, `objective`, `second_order`, `per_task_clip`, ...).
        static: the optimizer's static part (`init_state(config).static`).
        estimator: how it is estimated, a `MetaGradientEstimator` (default `FusedBackprop()`,
            the hand-written backward pass; `Autodiff()` is `jax.grad` of the generic unroll,
            the reference it is tested against: equal to float32 rounding).

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
    estimator = default_estimator(config) if estimator is None else estimator
    if not isinstance(estimator, MetaGradientEstimator):
        raise TypeError(f"estimator must be an l2lgd MetaGradientEstimator, got {type(estimator).__name__}.")
    return estimator.make(config, static)


def make_meta_step(
    config: Config,
    static: LearnedOptimizer,
    *,
    estimator: MetaGradientEstimator | None = None,
    family: TaskFamily | None = None,
):
    """`meta_step(state, tasks) -> (state, StepRecord)`: one meta-step on a batch of tasks.

    With an evolution estimator (`Config.estimator` "es" or "pes") it is `meta_step(state,
    step)`: the particles in `state.inner` draw their own tasks of `family` (default: the
    config's; a `FamilyMixture` gives every member its batch).

    An update whose meta-loss or meta-gradient is not finite is dropped (theta and Adam state
    unchanged) and counted. `estimator`: see `make_meta_gradient`. (The driver checks the weights
    and Adam state after each chunk; checking them here too would change XLA's fusion of the
    update, and so the trained weights at float32 rounding.)
    """
    estimator = default_estimator(config) if estimator is None else estimator
    if isinstance(estimator, Evolution):
        return _evolution_step(config, static, family, estimator)
    batch_grads = make_meta_gradient(config, static, estimator=estimator)
    apply = _make_apply(config)

    def current_tasks(state: TrainState, tasks):
        """Fresh tasks, or (truncated training, not at a task's start) the carried ones."""
        if config.truncations == 1:
            return tasks, None, 0, state.inner
        loss_fn, x0, keys = tasks
        learned = as_optax(eqx.combine(state.theta, static))
        fresh = Inner(loss_fn, x0, jax.vmap(learned.init)(x0), keys)
        index = state.step % config.truncations
        inner = jax.tree.map(lambda f, c: jnp.where(index == 0, f, c), fresh, state.inner)
        return (inner.loss_fn, inner.params, inner.key), inner.opt_state, index * config.num_steps, inner

    def meta_step(state: TrainState, tasks) -> tuple[TrainState, StepRecord]:
        tasks, opt_states, start, inner = current_tasks(state, tasks)
        objective, finals, grads, carries = batch_grads(state.theta, tasks, opt_states, start)
        if config.truncations > 1:
            params, opt_states = lax.stop_gradient(carries)
            inner = inner._replace(params=params, opt_state=opt_states)
        return apply(state, grads, objective, jnp.mean(log10_loss(finals)), inner)

    return meta_step


def _make_apply(config: Config):
    """`apply(state, grads, objective, final_log10, inner) -> (state, StepRecord)`: the
    meta-optimizer's update, dropped (theta and Adam state unchanged) and counted when the
    objective or the meta-gradient is not finite."""
    tx = meta_optimizer(config)

    def apply(state: TrainState, grads, objective, final_log10, inner):
        finite = jnp.isfinite(objective) & _all_finite(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.theta)
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
        return new_state, StepRecord(final_log10, objective, ~finite)

    return apply


def _evolution_step(config: Config, static, family: TaskFamily | None, estimator: Evolution, mesh=None):
    """The meta-step of an evolution estimator: `meta_step(state, step)`, the particles in
    `state.inner` (one `Particles` per member of the family), split over `mesh` if given."""
    if config.estimator not in EVOLUTION:
        raise ValueError(
            f"{type(estimator).__name__} keeps particles in the training state, which init_state builds for "
            f"Config.estimator='es' or 'pes', not {config.estimator!r}: set the config's estimator instead."
        )
    family = family if family is not None else training_family(config)
    gradient = make_evolution_gradient(config, static, family, estimator, mesh)
    apply = _make_apply(config)

    def meta_step(state: TrainState, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
        grads, objective, final_log10, particles = gradient(state.theta, state.inner, key)
        return apply(state, grads, objective, final_log10, lax.stop_gradient(particles))

    return meta_step


def batch_mesh(config: Config, devices=None) -> Mesh | None:
    """A 1-D mesh ("batch") over the devices (of all hosts) that divide the batch, or None for one device."""
    return divisor_mesh(config.batch_size, "batch", devices)


def make_train_chunk(
    config: Config,
    static: LearnedOptimizer,
    family: TaskFamily | None = None,
    *,
    mesh: Mesh | None | str = "auto",
    estimator: MetaGradientEstimator | None = None,
):
    """`train_chunk(state, meta_steps) -> (state, StepRecord of [meta_steps] arrays)`, jitted.

    The chunk's tasks are drawn up front in one batched call, then a `lax.scan` runs the
    meta-steps. `meta_steps` is static: each distinct value compiles once. The batch of tasks
    is sharded over `mesh` (default: all devices that divide the batch size; for an evolution
    estimator, each task's particles over the devices that divide their number); the
    meta-parameters are replicated.

    Args:
        config, static: as for `make_meta_gradient`; `config.meta_lr` and `clip_norm` set the
            meta-optimizer (`meta_optimizer`).
        family: the `TaskFamily` to draw from (default: the config's).
        mesh: "auto", a `jax.sharding.Mesh` with a "batch" axis (evolution: "particles"), or None
            (one device).
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
    estimator = default_estimator(config) if estimator is None else estimator
    if isinstance(estimator, Evolution):
        # Each device unrolls its share of every task's particles; the chunk takes and returns the
        # state replicated, so that it is the same on every host (each can read and save it) and
        # every chunk runs one compiled program.
        mesh = particle_mesh(config, estimator) if mesh == "auto" else mesh
        meta_step = _evolution_step(config, static, family, estimator, mesh)

        def evolution_chunk(state: TrainState, meta_steps: int):
            return lax.scan(meta_step, state, state.step + jnp.arange(meta_steps, dtype=state.step.dtype))

        if mesh is None:
            return jax.jit(evolution_chunk, static_argnums=1, compiler_options=cpu_compiler_options())
        replicated = NamedSharding(mesh, PartitionSpec())
        jitted = jax.jit(evolution_chunk, static_argnums=1, compiler_options=cpu_compiler_options(),
                         in_shardings=replicated, out_shardings=replicated)

        # A state not yet placed (fresh from init_state, restored, or broadcast from process 0) is
        # put replicated first: given as it is, it would lower to a second program.
        def placed_chunk(state: TrainState, meta_steps: int):
            return jitted(jax.device_put(state, replicated), meta_steps)

        placed_chunk.lower = lambda state, meta_steps: jitted.lower(jax.device_put(state, replicated), meta_steps)
        return placed_chunk
    meta_step = make_meta_step(config, static, estimator=estimator, family=family)
    mesh = batch_mesh(config) if mesh == "auto" else mesh
    tasks = make_task_batch(config, family)

    def train_chunk(state: TrainState, meta_steps: int):
        steps = state.step + jnp.arange(meta_steps, dtype=state.step.dtype)
        batches = jax.vmap(tasks, in_axes=(None, 0))(state.key, steps)
        if mesh is not None:
            # Each device meta-differentiates its share of the batch; XLA adds the all-reduce.
            spec = NamedSharding(mesh, PartitionSpec(None, "batch"))
            batches = jax.tree.map(lambda x: lax.with_sharding_constraint(x, spec), batches)
        return lax.scan(meta_step, state, batches)

    return jax.jit(train_chunk, static_argnums=1, compiler_options=cpu_compiler_options())
