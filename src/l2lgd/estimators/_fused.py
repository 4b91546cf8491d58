"""A batch of unrolls with a hand-written backward pass for the LSTM: the fast meta-gradient.

`jax.grad` of the generic unroll (`_unroll.run_steps` through `as_optax`, the `Autodiff` estimator) differentiates op by
op: on CPU a meta-step is then many small kernels, each task's meta-gradient apart under
per-task clipping, and a large program to compile. Here the same function is computed with

- the LSTM of all coordinates of all tasks of the batch as the rows of one matrix,
- the cell's backward pass written by hand (`backward_step`) from what the forward step saved
  (`SavedStep`: its inputs and gate activations, computed as one array by `gate_activations`),
- each weight's and bias's gradient as a single matrix product over all steps and rows, after
  the backward loop (`weight_gradients`),

while the glue around the LSTM (the task's loss and gradient, the preprocessing, the step
x += update) is still differentiated by `jax.vjp`, so every task and preprocessing works.

Two loops run the same steps (`forward_step`, `backward_step`):
- written out (a Python loop) for unrolls of up to `MAX_WRITTEN_STEPS` steps: XLA then fuses
  across steps, which is what pays on the reference's tiny tasks and on the digits MLP; each
  carried value is computed once per step (`_materialize`);
- a `lax.scan` over the steps for longer unrolls (or `loop="scan"`): compiled once, not once per
  written-out step, so it compiles faster and runs slower (`make bench EXP=paper_digits`; the
  README has the figures).
Under `jax.vmap` (per-task clipping, `_base.Backpropagation`) the weight gradients become
one batched product per weight: each task's meta-gradient, with no extra pass.

It is the same function as the generic path: `tests/test_fused.py` checks equal losses and
meta-gradients (to float32 rounding) for every preprocessing, objective, task, truncation and
both loops.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._objectives import meta_objective
from ..optimizers._lstm import LSTMState, gate_activations
from ..optimizers._lstm_optimizer import LSTMOptimizer
from ..optimizers._optax_face import LearnedOptimizerState
from ._backprop import Backpropagation
from ._base import MetaLossAux

MAX_WRITTEN_STEPS = 32
LOOPS = ("auto", "written", "scan")


class StepSettings(NamedTuple):
    """What every step of a batch of unrolls shares that is not an array (closed over)."""

    treedef: Any  # the params' structure
    preprocessing: Any
    second_order: bool
    forget_bias: float
    materialize: Callable = lambda tree: tree  # or `_materialize`, in the written-out loop


class Tasks(NamedTuple):
    """The batch's tasks (arrays: inputs of the differentiated function, without gradient)."""

    loss_fn: Any  # the batch's loss functions (a batched pytree)
    key: Any  # the batch's minibatch key data, or None for deterministic tasks
    start: Any  # int32: the index of the first step within the task (truncated unrolls)


class Carry(NamedTuple):
    """What the forward loop carries from one step to the next."""

    x: list  # the params' leaves, each [B, ...]
    states: list  # the preprocessing's state of each leaf
    c: Any  # the cell states [layers, rows, H] (a list of layers in the written-out loop)
    h: Any  # the hidden states, likewise


class SavedStep(NamedTuple):
    """What the backward pass needs from one forward step."""

    x: list
    states: list
    feats: Any  # the LSTM's input features [rows, F]
    xc: list  # each layer's input [below, h_prev] [rows, 2H]
    act: list  # each layer's gate activations [rows, 4H]
    c_prev: list
    c: list
    top: Any  # the top layer's output [rows, H]
    out: Any  # the LSTM's output [rows, O]


class Cotangents(NamedTuple):
    """What the backward loop carries from one step to the one before."""

    dx: list
    dstates: list
    dc: list
    dh: list


class StepCotangents(NamedTuple):
    """The cotangents of one step's matrix products' outputs, for `weight_gradients`."""

    dz: Any  # of the input projection's output [rows, H]
    dgates: list  # of each layer's gates [rows, 4H]
    dout: Any  # of the LSTM's output [rows, O]


def _task_step(u: StepSettings, x_leaves, pre_states, loss_fn, key, t):
    """One task: the loss, its gradient (leaves) and the LSTM's input features [N, F]."""
    x = jax.tree.unflatten(u.treedef, x_leaves)
    if key is None:
        loss, g = jax.value_and_grad(loss_fn)(x)
    else:
        loss, g = jax.value_and_grad(loss_fn)(x, jax.random.fold_in(jax.random.wrap_key_data(key), t))
    if not u.second_order:
        g = lax.stop_gradient(g)
    g_leaves = jax.tree.leaves(g)
    feats = [u.preprocessing.encode(gi.reshape(-1), si) for gi, si in zip(g_leaves, pre_states)]
    return loss, g_leaves, jnp.concatenate(feats, axis=0)


def _apply_step(u: StepSettings, out, g_leaves, x_leaves, pre_states):
    """One task: the updates from the LSTM's output [N, O], and the step x += update."""
    sizes = np.cumsum([xi.size for xi in x_leaves])[:-1]
    new_x, new_states = [], []
    for oi, gi, xi, si in zip(jnp.split(out, sizes, axis=0), g_leaves, x_leaves, pre_states):
        update, si = u.preprocessing.decode(oi, gi.reshape(-1), si)
        new_x.append(xi + update.reshape(xi.shape).astype(xi.dtype))
        new_states.append(si)
    return new_x, new_states


def _batched_task_step(u: StepSettings, tasks: Tasks):
    """`_task_step` over the batch: `(x, states, t) -> (losses [B], g, feats [B, N, F])`."""
    step = jax.vmap(functools.partial(_task_step, u), in_axes=(0, 0, 0, None if tasks.key is None else 0, None))
    return lambda x, states, t: step(x, states, tasks.loss_fn, tasks.key, tasks.start + t)


def forward_step(lstm, u: StepSettings, tasks: Tasks, carry: Carry, t) -> tuple[Carry, Any, SavedStep]:
    """Step t of every unroll of the batch: `(carry, losses [B], saved)`."""
    x, states, c, h = carry.x, carry.states, list(carry.c), list(carry.h)
    batch, rows = x[0].shape[0], c[0].shape[0]
    loss, g, feats = _batched_task_step(u, tasks)(x, states, t)
    feats = feats.reshape(rows, -1)
    below = feats @ lstm.in_kernel + lstm.in_bias
    c_prev, xcs, acts = list(c), [], []
    for layer, (kernel, bias) in enumerate(zip(lstm.kernels, lstm.biases)):
        xc = jnp.concatenate([below, h[layer]], axis=-1)
        act = gate_activations(xc @ kernel + bias, u.forget_bias)
        i, j, f, o = jnp.split(act, 4, axis=-1)
        c[layer] = u.materialize(f * c[layer] + i * j)
        h[layer] = below = o * jnp.tanh(c[layer])
        xcs.append(xc), acts.append(act)
    out = below @ lstm.out_kernel + lstm.out_bias
    saved = SavedStep(x, states, feats, xcs, acts, c_prev, list(c), below, out)
    new_x, new_states = jax.vmap(functools.partial(_apply_step, u))(out.reshape(batch, rows // batch, -1), g, x, states)
    new_x, new_states = u.materialize((new_x, new_states))
    return Carry(new_x, new_states, c, h), loss, saved


def backward_step(lstm, u: StepSettings, tasks: Tasks, saved: SavedStep, cot: Cotangents, dlosses, t) -> tuple[Cotangents, StepCotangents]:
    """The cotangents before step t from those after it (`cot`) and of the losses (`dlosses` [B, T])."""
    dx, dstates, dc, dh = cot.dx, cot.dstates, list(cot.dc), list(cot.dh)
    batch, rows = saved.x[0].shape[0], saved.feats.shape[0]
    task_step = _batched_task_step(u, tasks)
    (_, g, _), task_vjp = jax.vjp(lambda x, s: task_step(x, s, t), saved.x, saved.states)
    _, apply_vjp = jax.vjp(jax.vmap(functools.partial(_apply_step, u)), saved.out.reshape(batch, rows // batch, -1), g, saved.x, saved.states)
    dout, dg, dx_apply, dstates_apply = apply_vjp((dx, dstates))
    dout = dout.reshape(rows, -1)
    dbelow = dh[-1] + dout @ lstm.out_kernel.T
    dgates = [None] * len(lstm.kernels)
    for layer in reversed(range(len(lstm.kernels))):
        dgates[layer], dc[layer] = _cell_backward(saved.act[layer], saved.c_prev[layer], saved.c[layer], dc[layer], dbelow)
        dbelow, dh[layer] = jnp.split(dgates[layer] @ lstm.kernels[layer].T, 2, axis=-1)
        if layer:
            dbelow = dbelow + dh[layer - 1]
    dfeats = dbelow @ lstm.in_kernel.T
    dx_task, dstates_task = task_vjp((dlosses[:, t], dg, dfeats.reshape(batch, rows // batch, -1)))
    dx = jax.tree.map(jnp.add, dx_apply, dx_task)
    dstates = jax.tree.map(jnp.add, dstates_apply, dstates_task)
    dx, dstates, dc = u.materialize((dx, dstates, dc))
    return Cotangents(dx, dstates, dc, dh), StepCotangents(dbelow, dgates, dout)


def _cell_backward(act, c_prev, c, dc, dh):
    """Cotangents of the gates and of the previous cell state, given those of (c, h); `act` holds
    the gate activations (`gate_activations`) and `c` the new cell state."""
    si, tj, sf, so = jnp.split(act, 4, axis=-1)
    tc = jnp.tanh(c)
    dct = dc + dh * so * (1.0 - tc * tc)
    hidden = c.shape[-1]
    is_tanh = np.repeat(np.array([False, True, False, False]), hidden)
    dact = jnp.concatenate([dct * tj, dct * si, dct * c_prev, dh * tc], axis=-1)
    return dact * jnp.where(is_tanh, 1.0 - act * act, act * (1.0 - act)), dct * sf


def weight_gradients(theta: LSTMOptimizer, inputs, cotangents, stack: Callable, sum_rows: Callable):
    """The LSTM's weight gradients: per weight, its inputs over all steps and rows times the
    cotangents of its output, one matrix product each.

    `inputs` is `(feats, [xc of each layer], top)` and `cotangents` `(dz, [dgates of each layer],
    dout)`, each per step in the same order of steps; `stack` turns one of them into a matrix
    `[steps * rows, n]`, and `sum_rows` sums such a matrix's rows (a bias gradient)."""
    feats, xcs, tops = inputs
    dz, dgates, dout = cotangents

    def grad(x, dy):
        dy = stack(dy)
        return stack(x).T @ dy, sum_rows(dy)

    projection_in = grad(feats, dz)
    cell = [grad(x, dy) for x, dy in zip(xcs, dgates)]
    grads = (*projection_in, tuple(k for k, _ in cell), tuple(b for _, b in cell), *grad(tops, dout))
    return eqx.tree_at(_lstm_arrays, theta, grads)


def _runtime_one(lstm):
    """1.0, computed at run time: XLA cannot fold `x / one` away."""
    return lstm.out_bias[0] * 0.0 + 1.0


def _materialize(tree, one):
    """`tree`, each array computed once per step.

    XLA on CPU fuses cheap elementwise producers into every consumer, so in a written-out loop a
    carried value that is a chain of cheap ops (x += update, or its cotangent) is recomputed from
    the loop's start by each consumer: quadratic work. A division is not duplicated, so it keeps
    each step's value in its own buffer (`optimization_barrier` is dropped by the CPU compiler).
    """
    return jax.tree.map(lambda x: x / one.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _zero_cotangent(tree):
    def zero(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.zeros_like(x)
        return np.zeros(x.shape, jax.dtypes.float0)

    return jax.tree.map(zero, tree)


def _initial_cotangents(carry: Carry) -> Cotangents:
    dx, dstates = _zero_cotangent(carry.x), _zero_cotangent(carry.states)
    dc, dh = [jnp.zeros_like(carry.c[0])] * len(carry.c), [jnp.zeros_like(carry.h[0])] * len(carry.h)
    return Cotangents(dx, dstates, dc, dh)


def written_out(num_steps: int) -> bool:
    """Whether the loops are written out (see the module's docstring) by default."""
    return num_steps <= MAX_WRITTEN_STEPS


class WrittenOut:
    """The forward and backward loops written out step by step (short unrolls, small tasks)."""

    @staticmethod
    def forward(theta, u: StepSettings, tasks: Tasks, carry: Carry, num_steps: int):
        """`(final carry, losses [B, T], saved steps)`."""
        lstm = theta.lstm
        one = _runtime_one(lstm)
        u = u._replace(materialize=lambda tree: _materialize(tree, one))
        carry = carry._replace(c=list(carry.c), h=list(carry.h))
        losses, saved = [], []
        for t in range(num_steps):
            carry, loss, step = forward_step(lstm, u, tasks, carry, t)
            losses.append(loss), saved.append(step)
        return carry._replace(c=jnp.stack(carry.c), h=jnp.stack(carry.h)), jnp.stack(losses, axis=1), saved

    @staticmethod
    def backward(theta, u: StepSettings, tasks: Tasks, carry: Carry, saved, dlosses):
        """The meta-gradient (an `LSTMOptimizer` of gradients) from the losses' cotangents."""
        lstm = theta.lstm
        one = _runtime_one(lstm)
        u = u._replace(materialize=lambda tree: _materialize(tree, one))
        num_steps = len(saved)
        cot, per_step = _initial_cotangents(carry), []
        for t in reversed(range(num_steps)):
            cot, step_cot = backward_step(lstm, u, tasks, saved[t], cot, dlosses, t)
            per_step.append(step_cot)
        ones = one * jnp.ones((1, num_steps * carry.c[0].shape[0]), one.dtype)  # a run-time 1: see `_materialize`
        # Kernel and bias gradients over steps and rows, each one matrix product (a sum of the
        # concatenated cotangents would be split by XLA into one sum per step); steps T-1 ... 0.
        layers = range(len(lstm.kernels))
        order = list(reversed(saved))
        inputs = ([s.feats for s in order], [[s.xc[layer] for s in order] for layer in layers], [s.top for s in order])
        cotangents = (
            [c.dz for c in per_step],
            [[c.dgates[layer] for c in per_step] for layer in layers],
            [c.dout for c in per_step],
        )
        return weight_gradients(theta, inputs, cotangents, jnp.concatenate, lambda dy: (ones @ dy)[0])


class Scanned:
    """The forward and backward loops as `lax.scan`s over the steps (one compiled step each)."""

    @staticmethod
    def forward(theta, u: StepSettings, tasks: Tasks, carry: Carry, num_steps: int):
        """`(final carry, losses [B, T], saved steps stacked [T, ...])`."""

        def body(carry, t):
            carry, loss, saved = forward_step(theta.lstm, u, tasks, carry, t)
            return carry, (loss, saved)

        carry = carry._replace(c=list(carry.c), h=list(carry.h))
        carry, (losses, saved) = lax.scan(body, carry, jnp.arange(num_steps))
        return carry._replace(c=jnp.stack(carry.c), h=jnp.stack(carry.h)), losses.T, saved

    @staticmethod
    def backward(theta, u: StepSettings, tasks: Tasks, carry: Carry, saved, dlosses):
        """The meta-gradient (an `LSTMOptimizer` of gradients) from the losses' cotangents."""

        def body(cot, inputs):
            saved_t, t = inputs
            return backward_step(theta.lstm, u, tasks, saved_t, cot, dlosses, t)

        steps = jnp.arange(dlosses.shape[1])
        _, per_step = lax.scan(body, _initial_cotangents(carry), (saved, steps), reverse=True)
        inputs = (saved.feats, saved.xc, saved.top)
        cotangents = (per_step.dz, per_step.dgates, per_step.dout)
        flat = lambda x: x.reshape(-1, x.shape[-1])  # [T, rows, n] -> [T * rows, n]
        ones = jnp.ones((1, dlosses.shape[1] * carry.c[0].shape[0]), dlosses.dtype)  # XLA sums rows faster as a product
        return weight_gradients(theta, inputs, cotangents, flat, lambda dy: (ones @ dy)[0])


def make_fused_unroll(config, static: LSTMOptimizer, *, loop: str = "auto", second_order: bool | None = None):
    """`unroll(theta, tasks, opt_states, start) -> (losses [B, T], (params, opt_states))`.

    `tasks` is a batch `(loss_fn, params0[, minibatch_key])` (leading axis B), `opt_states`
    the batch's `as_optax` states or None for fresh ones, `start` the index of the first step
    within the task (truncated unrolls). The losses are f(x_0) ... f(x_{T-1}) of each task,
    as `run_steps` records them; the carry is returned without gradient (as truncated training
    uses it). Differentiable in `theta` only. `loop`: "written" or "scan" forces one of the two
    loops; "auto" writes out unrolls of up to `MAX_WRITTEN_STEPS` steps (`written_out`).
    `second_order`: default the config's.
    """
    second_order = config.second_order if second_order is None else second_order
    if loop not in LOOPS:
        raise ValueError(f"loop must be 'auto', 'written' or 'scan', got {loop!r}.")
    num_steps = config.num_steps

    def differentiable(u: StepSettings, loops):
        @jax.custom_vjp
        def run(theta, tasks, carry):
            final, losses, _ = loops.forward(theta, u, tasks, carry, num_steps)
            return losses, final

        def run_fwd(theta, tasks, carry):
            final, losses, saved = loops.forward(theta, u, tasks, carry, num_steps)
            return (losses, final), (theta, tasks, carry, saved)

        def run_bwd(residuals, cotangents):
            theta, tasks, carry, saved = residuals
            dlosses, _ = cotangents  # the carry is returned without gradient (see `unroll`)
            grads = loops.backward(theta, u, tasks, carry, saved, dlosses)
            return grads, _zero_cotangent(tasks), _zero_cotangent(carry)

        run.defvjp(run_fwd, run_bwd)
        return run

    def unroll(theta, tasks, opt_states=None, start=0):
        loss_fn, x0, *rest = tasks
        key = rest[0] if rest else None
        x_leaves, treedef = jax.tree.flatten(x0)
        batch = x_leaves[0].shape[0]
        for leaf in x_leaves:
            if leaf.dtype != jnp.float32:
                raise TypeError(f"The fused unroll trains on float32 params, got a {leaf.dtype} leaf.")
        opt = eqx.combine(theta, static)
        if opt_states is None:
            per_leaf = [jax.vmap(lambda xi: opt.init_state(xi.size))(xi) for xi in x_leaves]
        else:
            per_leaf = treedef.flatten_up_to(opt_states.per_leaf)
        c, h = (_to_rows([getattr(s[0], name) for s in per_leaf]) for name in ("c", "h"))
        carry = Carry(x_leaves, [s[1] for s in per_leaf], c, h)
        u = StepSettings(treedef, static.preprocessing, second_order, static.lstm.forget_bias)
        tasks = Tasks(loss_fn, key, jnp.asarray(start, jnp.int32))
        use_written = written_out(num_steps) if loop == "auto" else loop == "written"
        losses, final = differentiable(u, WrittenOut if use_written else Scanned)(theta, tasks, carry)
        sizes = [xi[0].size for xi in x_leaves]
        cs, hs = _from_rows(final.c, batch, sizes), _from_rows(final.h, batch, sizes)
        states = [(LSTMState(ci, hi), si) for ci, hi, si in zip(cs, hs, final.states)]
        shapes = tuple(tuple(xi.shape[1:]) for xi in x_leaves)
        new = (jax.tree.unflatten(treedef, final.x), LearnedOptimizerState(jax.tree.unflatten(treedef, states), shapes, treedef))
        return losses, lax.stop_gradient(new)

    return unroll


def _lstm_arrays(opt: LSTMOptimizer):
    lstm = opt.lstm
    return lstm.in_kernel, lstm.in_bias, lstm.kernels, lstm.biases, lstm.out_kernel, lstm.out_bias


def _to_rows(per_leaf):
    """Per-leaf `[B, L, n_i, H]` states -> `[L, B * N, H]` (task-major rows)."""
    x = jnp.concatenate(per_leaf, axis=2)
    batch, layers, n, hidden = x.shape
    return jnp.swapaxes(x, 0, 1).reshape(layers, batch * n, hidden)


def _from_rows(x, batch, sizes):
    """The inverse of `_to_rows`."""
    layers, _, hidden = x.shape
    x = jnp.swapaxes(x.reshape(layers, batch, -1, hidden), 0, 1)
    return jnp.split(x, np.cumsum(sizes)[:-1], axis=2)


class FusedBackprop(Backpropagation):
    """Backpropagation with the hand-written LSTM backward pass over the whole batch (this
    module): the default estimator, equal to `Autodiff` to float32 rounding.

    `loop`: "auto" writes out unrolls of up to `MAX_WRITTEN_STEPS` steps and scans longer ones;
    "written" or "scan" forces one (the result is the same function).
    """

    loop: str = eqx.field(static=True, default="auto")
    per_task_clip: bool = eqx.field(static=True, default=False)
    second_order: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.loop not in LOOPS:
            raise ValueError(f"FusedBackprop.loop must be 'auto', 'written' or 'scan', got {self.loop!r}.")

    def check_optimizer(self, static) -> None:
        """The hand-written backward pass is the LSTM kind's: other kinds train with `Autodiff`
        ("autodiff") or evolution strategies ("pes", "es")."""
        if not isinstance(static, LSTMOptimizer):
            raise TypeError(
                f"FusedBackprop differentiates the LSTM kind only, not {type(static).__name__}: use "
                "estimator='autodiff', 'pes' or 'es' (Config.estimator) for other kinds of optimizer."
            )

    def batch_loss(self, config, static):
        unroll = make_fused_unroll(config, static, loop=self.loop, second_order=self.second_order)

        def fused_loss(theta, tasks, opt_states, start):
            losses, carries = unroll(theta, tasks, opt_states, start)
            objectives = jax.vmap(lambda l: meta_objective(l, config.objective))(losses)
            return jnp.mean(objectives), (losses[:, -1], carries)

        return fused_loss

    def task_loss(self, config, static):
        batch_loss = self.batch_loss(config, static)

        def loss(theta, task, opt_state=None, start=0):  # one task: a batch of one
            one = lambda tree: jax.tree.map(lambda x: x[None], tree)
            objective, (finals, carries) = batch_loss(theta, one(task), one(opt_state), start)
            return objective, MetaLossAux(finals[0], jax.tree.map(lambda x: x[0], carries))

        return loss
