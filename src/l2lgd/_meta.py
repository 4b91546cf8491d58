"""The pure meta-training step: sample tasks, unroll, differentiate, update theta.

`make_train_chunk(config)` returns one jitted function that runs many meta-steps in a single
compiled call (`lax.scan` over meta-steps, `vmap` over the batch of tasks).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._config import Config
from ._optax_face import as_optax
from ._fused import make_fused_unroll
from ._optimizer import LearnedOptimizer, make_optimizer
from ._tasks import TaskFamily, training_family
from ._unroll import log10_loss, meta_objective, run_steps

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
    inner: Any = ()  # truncated training only: the `Inner` optimizees in flight


class StepRecord(NamedTuple):
    """What one meta-step leaves behind."""

    final_log10: Float[Array, ""]  # mean over the batch of log10(f(x_{T-1}) + 1e-38)
    meta_loss: Float[Array, ""]
    skipped: Array  # bool: this step's update was dropped


def meta_optimizer(config: Config) -> optax.GradientTransformation:
    """The reference's meta-optimizer: Adam(meta_lr) after clipping the global norm to `clip_norm`."""
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_lr))


def draw_task(family: TaskFamily, key: PRNGKeyArray):
    """`(loss_fn, params0, minibatch_key_data)` of the task drawn with `key`."""
    loss_fn, x0 = family.sample(key)
    return loss_fn, x0, jax.random.key_data(jax.random.fold_in(key, 1))


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
    if config.truncations > 1:
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


class MetaLossAux(NamedTuple):
    """The auxiliary result of a meta-loss (`make_meta_loss`)."""

    final_loss: Float[Array, ""]  # f(x_{T-1}) of the unroll
    carry: Any  # (params, optimizer state) after the unroll: where a truncated unroll continues


class MetaGradient(NamedTuple):
    """What `make_meta_gradient`'s function returns for a batch of tasks."""

    objective: Float[Array, ""]  # the mean meta-objective over the batch
    final_losses: Float[Array, " batch"]  # each task's f(x_{T-1})
    grads: Any  # the meta-gradient (the theta's structure): the batch mean, per-task clipped if asked
    carries: Any  # each task's (params, optimizer state) after the unroll


def make_meta_loss(config: Config, static: LearnedOptimizer):
    """`loss(theta, task, opt_state=None, start=0) -> (objective, MetaLossAux(final_loss, carry))`.

    `task` is `(loss_fn, params)` or `(loss_fn, params, minibatch_key)`. The unroll runs
    `config.num_steps` steps from `params` and `opt_state` (a fresh optimizer state when None);
    `carry` is `(params, opt_state)` after them, for the next truncated unroll.
    """

    def loss(theta, task, opt_state=None, start=0):
        loss_fn, x0, *rest = task
        tx = as_optax(eqx.combine(theta, static))
        opt_state = tx.init(x0) if opt_state is None else opt_state
        carry, losses = run_steps(
            tx, loss_fn, x0, opt_state, config.num_steps,
            second_order=config.second_order, key=rest[0] if rest else None, start=start,
        )
        return meta_objective(losses, config.objective), MetaLossAux(losses[-1], carry)

    return loss


def make_task_batch(config: Config, family: TaskFamily | None = None):
    """`tasks(key_data, step)`: the batch of tasks `(loss_fn, params0, minibatch_key)` drawn
    at meta-step `step`.

    Its key is `fold_in(run_key, step)`, so a resumed run draws exactly what an uninterrupted
    run draws, however the steps are chunked.
    """
    family = family if family is not None else training_family(config)

    def tasks(key_data, step):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
        return jax.vmap(lambda k: draw_task(family, k))(jax.random.split(step_key, config.batch_size))

    return tasks


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_meta_gradient(config: Config, static: LearnedOptimizer, *, fused: bool = True, loop: str = "auto"):
    """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`.

    The meta-gradient is the mean over the batch; with `per_task_clip` each task's
    meta-gradient is first clipped to global norm `clip_norm` (then the usual clip applies to
    the mean as well).

    `fused` (the default) computes it with the hand-written backward pass of `_fused.py`; False
    uses `jax.grad` of the generic unroll (`make_meta_loss`), the reference that the fused path
    is tested against (equal to float32 rounding). `loop`: the fused path's loop (see
    `_fused.make_fused_unroll`).

    Args:
        config: the unroll (`num_steps`, `objective`, `second_order`, `per_task_clip`, ...).
        static: the optimizer's static part (`init_state(config).static`).
        fused, loop: how it is computed (above); the result is the same.

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
    if fused:
        unroll = make_fused_unroll(config, static, loop=loop)

        def fused_loss(theta, tasks, opt_states, start):
            losses, carries = unroll(theta, tasks, opt_states, start)
            objectives = jax.vmap(lambda l: meta_objective(l, config.objective))(losses)
            return jnp.mean(objectives), (losses[:, -1], carries)

        if not config.per_task_clip:

            def fused_gradient(theta, tasks, opt_states=None, start=0):
                (objective, (finals, carries)), grads = jax.value_and_grad(fused_loss, has_aux=True)(
                    theta, tasks, opt_states, start
                )
                return MetaGradient(objective, finals, grads, carries)

            return fused_gradient

        def loss(theta, task, opt_state=None, start=0):  # one task: a batch of one
            one = lambda tree: jax.tree.map(lambda x: x[None], tree)
            objective, (finals, carries) = fused_loss(theta, one(task), one(opt_state), start)
            return objective, MetaLossAux(finals[0], jax.tree.map(lambda x: x[0], carries))
    else:
        loss = make_meta_loss(config, static)
    in_axes = (None, 0, 0, None)

    def meta_gradient(theta, tasks, opt_states=None, start=0):
        if config.per_task_clip:
            # Under vmap, the fused backward's weight gradients are batched products: each
            # task's meta-gradient in one pass.
            grad_fn = jax.value_and_grad(loss, has_aux=True)
            (objectives, (finals, carries)), grads = jax.vmap(grad_fn, in_axes=in_axes)(theta, tasks, opt_states, start)
            clip = optax.clip_by_global_norm(config.clip_norm)
            grads = jax.vmap(lambda g: clip.update(g, clip.init(g))[0])(grads)
            grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
            return MetaGradient(jnp.mean(objectives), finals, grads, carries)

        def mean_loss(theta):
            objectives, aux = jax.vmap(loss, in_axes=in_axes)(theta, tasks, opt_states, start)
            return jnp.mean(objectives), aux

        (objective, (finals, carries)), grads = jax.value_and_grad(mean_loss, has_aux=True)(theta)
        return MetaGradient(objective, finals, grads, carries)

    return meta_gradient


def make_meta_step(config: Config, static: LearnedOptimizer, *, fused: bool = True, loop: str = "auto"):
    """`meta_step(state, tasks) -> (state, StepRecord)`: one meta-step on a batch of tasks.

    An update whose meta-loss or meta-gradient is not finite is dropped (theta and Adam state
    unchanged) and counted. `fused`: see `make_meta_gradient`. (The driver checks the weights
    and Adam state after each chunk; checking them here too would change XLA's fusion of the
    update, and so the trained weights at float32 rounding.)
    """
    batch_grads = make_meta_gradient(config, static, fused=fused, loop=loop)
    tx = meta_optimizer(config)

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
        return new_state, StepRecord(jnp.mean(log10_loss(finals)), objective, ~finite)

    return meta_step


def batch_mesh(config: Config, devices=None) -> Mesh | None:
    """A 1-D mesh over the devices (of all hosts) that divide the batch, or None for one device."""
    devices = list(devices if devices is not None else jax.devices())
    count = max(d for d in range(1, len(devices) + 1) if config.batch_size % d == 0)
    return None if count == 1 else Mesh(np.array(devices[:count]), ("batch",))


def make_train_chunk(
    config: Config,
    static: LearnedOptimizer,
    family: TaskFamily | None = None,
    *,
    mesh: Mesh | None | str = "auto",
    fused: bool = True,
    loop: str = "auto",
):
    """`train_chunk(state, num_steps) -> (state, StepRecord of [num_steps] arrays)`, jitted.

    The chunk's tasks are drawn up front in one batched call, then a `lax.scan` runs the
    meta-steps. `num_steps` is static: each distinct value compiles once. The batch of tasks
    is sharded over `mesh` (default: all devices that divide the batch size); the
    meta-parameters are replicated.

    Args:
        config, static: as for `make_meta_gradient`; `config.meta_lr` and `clip_norm` set the
            meta-optimizer (`meta_optimizer`).
        family: the `TaskFamily` to draw from (default: the config's).
        mesh: "auto", a `jax.sharding.Mesh` with a "batch" axis, or None (one device).
        fused, loop: as for `make_meta_gradient`.

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
    mesh = batch_mesh(config) if mesh == "auto" else mesh
    meta_step = make_meta_step(config, static, fused=fused, loop=loop)
    tasks = make_task_batch(config, family)

    def train_chunk(state: TrainState, num_steps: int):
        steps = state.step + jnp.arange(num_steps, dtype=state.step.dtype)
        batches = jax.vmap(tasks, in_axes=(None, 0))(state.key, steps)
        if mesh is not None:
            # Each device meta-differentiates its share of the batch; XLA adds the all-reduce.
            spec = NamedSharding(mesh, PartitionSpec(None, "batch"))
            batches = jax.tree.map(lambda x: lax.with_sharding_constraint(x, spec), batches)
        return lax.scan(meta_step, state, batches)

    return jax.jit(train_chunk, static_argnums=1, compiler_options=cpu_compiler_options())


# XLA's calls into the YNNPACK library cost more than its own code for the LSTM's small matrix
# products: without them a log30 meta-step is about 1.3x faster at batch 1 (`make bench`). The
# option is experimental, so it is used only where this jaxlib accepts it.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def cpu_compiler_options() -> dict[str, str]:
    """`CPU_COMPILER_OPTIONS` on a CPU backend whose XLA knows them, else none."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(jnp.zeros(()))
    except Exception:  # an XLA without the option: "No such compile option"
        return {}
    return dict(CPU_COMPILER_OPTIONS)
