"""`Autodiff`: `jax.grad` of the generic unroll (`run_steps` through the optax face), op by op.
The reference that the fused estimator is tested against; works for any optimizer module."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._objectives import meta_objective
from .._unroll import run_steps
from ..optimizers._optax_face import as_optax, fill_horizon
from ._backprop import Backpropagation
from ._base import MetaLossAux


def make_meta_loss(config, static, *, second_order: bool | None = None):
    """`loss(theta, task, opt_state=None, start=0) -> (objective, MetaLossAux(final_loss, carry))`.

    `task` is `(loss_fn, params)` or `(loss_fn, params, minibatch_key)`. The unroll runs
    `config.num_steps` steps from `params` and `opt_state` (a fresh optimizer state when None);
    `carry` is `(params, opt_state)` after them, for the next truncated unroll. A fresh state's
    horizon (for a kind that uses one) is the task's length, `config.steps_per_task`.
    `second_order`: default the config's.
    """
    second_order = config.second_order if second_order is None else second_order

    def loss(theta, task, opt_state=None, start=0):
        loss_fn, x0, *rest = task
        tx = as_optax(eqx.combine(theta, static))
        opt_state = fill_horizon(tx.init(x0), config.steps_per_task) if opt_state is None else opt_state
        carry, losses = run_steps(
            tx, loss_fn, x0, opt_state, num_steps=config.num_steps,
            second_order=second_order, key=rest[0] if rest else None, start=start,
        )
        return meta_objective(losses, config.objective), MetaLossAux(losses[-1], carry)

    return loss


class Autodiff(Backpropagation):
    """Backpropagation by `jax.grad` of each task's unroll (`make_meta_loss`), vmapped."""

    per_task_clip: bool = eqx.field(static=True, default=False)
    second_order: bool = eqx.field(static=True, default=True)

    def task_loss(self, config, static):
        return make_meta_loss(config, static, second_order=self.second_order)

    def batch_loss(self, config, static):
        loss = make_meta_loss(config, static, second_order=self.second_order)

        def mean_loss(theta, tasks, opt_states, start):
            objectives, aux = jax.vmap(loss, in_axes=(None, 0, 0, None))(theta, tasks, opt_states, start)
            return jnp.mean(objectives), aux

        return mean_loss
