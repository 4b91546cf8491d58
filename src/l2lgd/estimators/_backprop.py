"""`Backpropagation`: the abstract estimator that differentiates through the unroll (truncated at
its start), and its state in meta-training: the optimizees in flight between the truncations of
their tasks (`Inner`).

A concrete kind (`Autodiff`, `FusedBackprop`) supplies the batch's loss, and one task's for
`per_task_clip`; how the gradient is taken, averaged and clipped, how tasks are drawn and carried
from one truncation to the next, is shared here.
"""


import abc
from typing import Any, Callable, ClassVar, NamedTuple

import equinox as eqx
from equinox import AbstractVar
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._objectives import log10_loss
from ..optimizers._optax_face import as_optax, fill_horizon
from ..tasks import TaskFamily, draw_rescaled, training_family
from ..tasks._mixture import members_of
from ._base import Estimate, Estimation, MetaGradient, MetaGradientEstimator, divisor_mesh


class Inner(NamedTuple):
    """The optimizees carried from one truncated unroll to the next (batched)."""

    loss_fn: Any
    params: Any
    opt_state: Any
    key: Any  # uint32 key data of each task's minibatch stream


def make_task_batch(config, family: TaskFamily | None = None):
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


def _check_setting(training, field: str, default: Any, name: str) -> None:
    value = getattr(training, field)
    if value != default:
        raise ValueError(
            f"Config.{field}={value!r} needs an evolution estimator (estimator='es' or 'pes'), not estimator={name!r}."
        )


class Backpropagation(MetaGradientEstimator):
    """The exact gradient of the meta-objective through the unroll (truncated at its start).

    A kind implements `batch_loss`, and `task_loss` for `per_task_clip`. The meta-gradient is the
    mean over the batch; with `per_task_clip` each task's meta-gradient is first clipped to
    global norm `clip_norm` (then the meta-optimizer's clip applies to the mean as well).
    `second_order=False` stops the meta-gradient through the optimizee's gradient.
    """

    per_task_clip: AbstractVar[bool]
    second_order: AbstractVar[bool]

    backpropagates: ClassVar[bool] = True

    @classmethod
    def from_config(cls, training, **settings) -> "Backpropagation":
        """`per_task_clip` and `second_order` from the config, and a kind's own `settings`."""
        name = getattr(training, "estimator", cls.__name__)
        _check_setting(training, "min_horizon", 0, name)
        _check_setting(training, "heldout_minibatch", False, name)
        return cls(per_task_clip=training.per_task_clip, second_order=training.second_order, **settings)

    @abc.abstractmethod
    def batch_loss(self, config, static) -> Callable:
        """`loss(theta, tasks, opt_states, start) -> (mean objective, (final losses [B], carries))`."""

    @abc.abstractmethod
    def task_loss(self, config, static) -> Callable:
        """`loss(theta, task, opt_state, start) -> (objective, MetaLossAux)` for one task."""

    def make(self, config, static):
        self.check_optimizer(static)
        if not self.per_task_clip:
            batch_loss = self.batch_loss(config, static)

            def meta_gradient(theta, tasks, opt_states=None, start=0):
                (objective, (finals, carries)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
                    theta, tasks, opt_states, start
                )
                return MetaGradient(objective, finals, grads, carries)

            return meta_gradient

        # Under vmap, the fused backward's weight gradients are batched products: each task's
        # meta-gradient in one pass.
        grad_fn = jax.value_and_grad(self.task_loss(config, static), has_aux=True)
        clip = optax.clip_by_global_norm(config.clip_norm)

        def clipped_meta_gradient(theta, tasks, opt_states=None, start=0):
            (objectives, (finals, carries)), grads = jax.vmap(grad_fn, in_axes=(None, 0, 0, None))(
                theta, tasks, opt_states, start
            )
            grads = jax.vmap(lambda g: clip.update(g, clip.init(g))[0])(grads)
            grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
            return MetaGradient(jnp.mean(objectives), finals, grads, carries)

        return clipped_meta_gradient

    def bind(self, config, static, family=None, mesh: Mesh | None | str = "auto") -> Estimation:
        """Each meta-step's batch of fresh tasks (`make_task_batch`), drawn up front and split over
        the devices that divide the batch; with truncated training (`config.truncations > 1`)
        the state is the batch of optimizees in flight (`Inner`), replaced by fresh tasks at the
        first truncation of each task."""
        family = family if family is not None else training_family(config)
        if len(members_of(family)) > 1:
            raise ValueError(f"{type(self).__name__} meta-trains on one task family, not a mixture of "
                             f"{len(members_of(family))}: use an evolution estimator (Config.estimator='pes' or 'es').")
        mesh = divisor_mesh(config.batch_size, "batch") if mesh == "auto" else mesh
        batch_grads = self.make(config, static)
        task_batch = make_task_batch(config, family)
        truncations = config.truncations

        def fresh_states(theta, x0):
            """The batch's fresh optimizer states (the horizon, for a kind that uses one: the task's length)."""
            tx = as_optax(eqx.combine(theta, static))
            return jax.vmap(lambda x: fill_horizon(tx.init(x), config.steps_per_task))(x0)

        def init(theta, key):
            if truncations == 1:
                return ()
            loss_fn, x0, keys = task_batch(jax.random.key_data(key), jnp.zeros((), jnp.int32))
            return Inner(loss_fn, x0, fresh_states(theta, x0), keys)

        def draws(key_data, steps):
            batches = jax.vmap(task_batch, in_axes=(None, 0))(key_data, steps)
            if mesh is not None:
                # Each device meta-differentiates its share of the batch; XLA adds the all-reduce.
                spec = NamedSharding(mesh, PartitionSpec(None, "batch"))
                batches = jax.tree.map(lambda x: lax.with_sharding_constraint(x, spec), batches)
            return batches

        def estimate(theta, inner, tasks, step):
            """Fresh tasks, or (truncated training, not at a task's start) the carried ones."""
            if truncations == 1:
                opt_states, start = None, 0
            else:
                loss_fn, x0, keys = tasks
                fresh = Inner(loss_fn, x0, fresh_states(theta, x0), keys)
                index = step % truncations
                inner = jax.tree.map(lambda f, c: jnp.where(index == 0, f, c), fresh, inner)
                tasks, opt_states, start = (inner.loss_fn, inner.params, inner.key), inner.opt_state, index * config.num_steps
            objective, finals, grads, carries = batch_grads(theta, tasks, opt_states, start)
            if truncations > 1:
                params, opt_states = lax.stop_gradient(carries)
                inner = inner._replace(params=params, opt_state=opt_states)
            return Estimate(grads, objective, jnp.mean(log10_loss(finals)), jnp.asarray(1.0)), inner

        return Estimation(init, draws, estimate, mesh)
