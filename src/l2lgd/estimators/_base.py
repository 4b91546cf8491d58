"""The meta-gradient estimator interface, and the results every estimator returns.

A `MetaGradientEstimator` turns a config and the optimizer's static part into
`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient` for a batch of tasks.
`Backpropagation` is the abstract kind that differentiates through the unroll: a concrete one
supplies the batch's loss (and, for per-task clipping, one task's); how the gradient is taken,
averaged and clipped is shared. Estimators that do not differentiate the unroll (evolution
strategies) implement `make` directly.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float


class MetaLossAux(NamedTuple):
    """The auxiliary result of a meta-loss (`make_meta_loss`)."""

    final_loss: Float[Array, ""]  # f(x_{T-1}) of the unroll
    carry: Any  # (params, optimizer state) after the unroll: where a truncated unroll continues


class MetaGradient(NamedTuple):
    """What a meta-gradient function returns for a batch of tasks."""

    objective: Float[Array, ""]  # the mean meta-objective over the batch
    final_losses: Float[Array, " batch"]  # each task's f(x_{T-1})
    grads: Any  # the meta-gradient (the theta's structure): the batch mean, per-task clipped if asked
    carries: Any  # each task's (params, optimizer state) after the unroll


class MetaGradientEstimator(eqx.Module):
    """How the meta-gradient of a batch of unrolls is estimated (the extension point)."""

    @abc.abstractmethod
    def make(self, config, static) -> Callable[..., MetaGradient]:
        """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`: a pure
        function of a batch of tasks `(loss_fn, params0[, minibatch_key])` with a leading batch
        axis, the batch's optimizer states (None: fresh) and the index of the first step within
        each task (truncated unrolls)."""


class Backpropagation(MetaGradientEstimator):
    """The exact gradient of the meta-objective through the unroll (truncated at its start).

    A kind implements `batch_loss`, and `task_loss` for `per_task_clip`. The meta-gradient is the
    mean over the batch; with `per_task_clip` each task's meta-gradient is first clipped to
    global norm `clip_norm` (then the meta-optimizer's clip applies to the mean as well).
    """

    @abc.abstractmethod
    def batch_loss(self, config, static) -> Callable:
        """`loss(theta, tasks, opt_states, start) -> (mean objective, (final losses [B], carries))`."""

    @abc.abstractmethod
    def task_loss(self, config, static) -> Callable:
        """`loss(theta, task, opt_state, start) -> (objective, MetaLossAux)` for one task."""

    def make(self, config, static):
        if not config.per_task_clip:
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
