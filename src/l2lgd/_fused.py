"""A batch of unrolls with a hand-written backward pass for the LSTM: the fast meta-gradient.

`jax.grad` of the generic unroll (`_unroll.run_steps` through `as_optax`) differentiates op by
op; on CPU, at the seed's sizes, a meta-step is then about a thousand tiny kernels, and time
goes to launching them, not to arithmetic. Here the same function is computed with

- the LSTM of all coordinates of all problems of the batch as the rows of one matrix,
- every step written out (a Python loop: unrolls of up to `MAX_STEPS` steps), the cell's
  backward pass written by hand from the forward's saved gate activations, which
  `gate_activations` computes as one array,
- each weight's and bias's gradient as a single matrix product over all steps and problems,
  after the backward loop,
- the values carried from step to step computed once each (`_materialize`),

while the glue around the LSTM (the task's loss and gradient, the preprocessing, the step
x += update) is still differentiated by `jax.vjp`, so every task and preprocessing works.
1.3-1.55x faster per meta-step than `jax.grad` on the seed's problems, by batch size (`make bench`).

It is the same function as the generic path: `tests/test_fused.py` checks equal losses and
meta-gradients (to float32 rounding) for every preprocessing, objective, task and truncation.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._config import Config
from ._lstm import LSTMState, gate_activations
from ._optax_face import LearnedOptimizerState
from ._optimizer import LearnedOptimizer

MAX_STEPS = 32


def fused_supported(config: Config) -> bool:
    """Whether `fused_unroll` computes this config's meta-gradient: unrolls of up to 32 steps
    (every step is written out for XLA), without per-problem clipping (which needs each
    problem's meta-gradient apart)."""
    return config.num_steps <= MAX_STEPS and not config.per_problem_clip


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


def _runtime_one(lstm):
    """1.0, computed at run time: XLA cannot fold `x / one` away."""
    return lstm.out_bias[0] * 0.0 + 1.0


def _materialize(tree, one):
    """`tree`, each array computed once per step.

    XLA on CPU fuses cheap elementwise producers into every consumer, so in an unrolled loop a
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


def make_fused_unroll(config: Config, static: LearnedOptimizer):
    """`unroll(theta, problems, opt_states, start) -> (losses [B, T], (params, opt_states))`.

    `problems` is a batch `(loss_fn, params0[, minibatch_key])` (leading axis B), `opt_states`
    the batch's `as_optax` states or None for fresh ones, `start` the index of the first step
    within the task (truncated unrolls). The losses are f(x_0) ... f(x_{T-1}) of each problem,
    as `run_steps` records them; the carry is returned without gradient (as truncated training
    uses it). Differentiable in `theta` only.
    """
    num_steps, second_order = config.num_steps, config.second_order
    preprocessing = static.preprocessing
    forget_bias = static.lstm.forget_bias

    def pre(x_leaves, pre_states, loss_fn, key, t, treedef):
        """One problem: the loss, its gradient (leaves) and the LSTM's input features [N, F]."""
        x = jax.tree.unflatten(treedef, x_leaves)
        if key is None:
            loss, g = jax.value_and_grad(loss_fn)(x)
        else:
            loss, g = jax.value_and_grad(loss_fn)(x, jax.random.fold_in(jax.random.wrap_key_data(key), t))
        if not second_order:
            g = lax.stop_gradient(g)
        g_leaves = jax.tree.leaves(g)
        feats = [preprocessing.encode(gi.reshape(-1), si) for gi, si in zip(g_leaves, pre_states)]
        return loss, g_leaves, jnp.concatenate(feats, axis=0)

    def post(out, g_leaves, x_leaves, pre_states):
        """One problem: the updates from the LSTM's output [N, 1], and the step x += update."""
        sizes = np.cumsum([xi.size for xi in x_leaves])[:-1]
        new_x, new_states = [], []
        for oi, gi, xi, si in zip(jnp.split(out, sizes, axis=0), g_leaves, x_leaves, pre_states):
            update, si = preprocessing.decode(oi, gi.reshape(-1), si)
            new_x.append(xi + update.reshape(xi.shape).astype(xi.dtype))
            new_states.append(si)
        return new_x, new_states

    def forward(theta, inputs, treedef):
        """The unroll (a Python loop: XLA sees every step), and what the backward pass needs."""
        lstm = theta.lstm
        loss_fn, x, states, c, h, key, start = inputs
        one = _runtime_one(lstm)
        batch, rows = x[0].shape[0], c.shape[1]
        v_pre = jax.vmap(functools.partial(pre, treedef=treedef), in_axes=(0, 0, 0, None if key is None else 0, None))
        c, h = list(c), list(h)
        losses, saved = [], []
        for t in range(num_steps):
            loss, g, feats = v_pre(x, states, loss_fn, key, start + t)
            feats = feats.reshape(rows, -1)
            below = feats @ lstm.in_kernel + lstm.in_bias
            step = dict(x=x, states=states, feats=feats, xc=[], act=[], c=[], c_prev=list(c))
            for layer, (kernel, bias) in enumerate(zip(lstm.kernels, lstm.biases)):
                xc = jnp.concatenate([below, h[layer]], axis=-1)
                act = gate_activations(xc @ kernel + bias, forget_bias)
                i, j, f, o = jnp.split(act, 4, axis=-1)
                c[layer] = _materialize(f * c[layer] + i * j, one)
                h[layer] = below = o * jnp.tanh(c[layer])
                step["xc"].append(xc), step["act"].append(act), step["c"].append(c[layer])
            out = below @ lstm.out_kernel + lstm.out_bias
            step.update(top=below, out=out)
            x, states = jax.vmap(post)(out.reshape(batch, rows // batch, -1), g, x, states)
            x, states = _materialize((x, states), one)
            losses.append(loss), saved.append(step)
        return (x, states, jnp.stack(c), jnp.stack(h)), jnp.stack(losses, axis=1), saved

    def backward(theta, inputs, saved, dlosses, treedef):
        lstm = theta.lstm
        loss_fn, x, states, c, h, key, start = inputs
        one = _runtime_one(lstm)
        batch, rows = x[0].shape[0], c.shape[1]
        num_layers = len(lstm.kernels)
        v_pre = jax.vmap(functools.partial(pre, treedef=treedef), in_axes=(0, 0, 0, None if key is None else 0, None))
        dx, dstates = _zero_cotangent(x), _zero_cotangent(states)
        dc, dh = [jnp.zeros_like(c[0])] * num_layers, [jnp.zeros_like(h[0])] * num_layers
        dgates_, dz_, dout_ = [[] for _ in range(num_layers)], [], []
        for t in reversed(range(num_steps)):
            step = saved[t]
            (_, g, _), pre_vjp = jax.vjp(lambda x, s: v_pre(x, s, loss_fn, key, start + t), step["x"], step["states"])
            _, post_vjp = jax.vjp(jax.vmap(post), step["out"].reshape(batch, rows // batch, -1), g, step["x"], step["states"])
            dout, dg, dx_post, dstates_post = post_vjp((dx, dstates))
            dout = dout.reshape(rows, -1)
            dbelow = dh[-1] + dout @ lstm.out_kernel.T
            for layer in reversed(range(num_layers)):
                dgates, dc[layer] = _cell_backward(
                    step["act"][layer], step["c_prev"][layer], step["c"][layer], dc[layer], dbelow
                )
                dbelow, dh[layer] = jnp.split(dgates @ lstm.kernels[layer].T, 2, axis=-1)
                if layer:
                    dbelow = dbelow + dh[layer - 1]
                dgates_[layer].append(dgates)
            dfeats = dbelow @ lstm.in_kernel.T
            dx_pre, dstates_pre = pre_vjp((dlosses[:, t], dg, dfeats.reshape(batch, rows // batch, -1)))
            dx = jax.tree.map(jnp.add, dx_post, dx_pre)
            dstates = jax.tree.map(jnp.add, dstates_post, dstates_pre)
            dx, dstates, dc = _materialize((dx, dstates, dc), one)
            dz_.append(dbelow), dout_.append(dout)

        ones = one * jnp.ones((1, num_steps * rows), one.dtype)  # a run-time 1: see `_materialize`

        def grad(inputs, cotangents):
            """Kernel and bias gradients summed over steps and rows, each one matrix product (a
            sum of the concatenated cotangents would be split by XLA into one sum per step)."""
            cotangents = jnp.concatenate(cotangents)
            return jnp.concatenate(inputs).T @ cotangents, (ones @ cotangents)[0]

        def per_step(name, layer=None):  # in the order of the cotangents (T-1 ... 0)
            return [saved[t][name] if layer is None else saved[t][name][layer] for t in reversed(range(num_steps))]

        in_grads = grad(per_step("feats"), dz_)
        cell_grads = [grad(per_step("xc", layer), dgates_[layer]) for layer in range(num_layers)]
        out_grads = grad(per_step("top"), dout_)
        grads = (
            *in_grads,
            tuple(k for k, _ in cell_grads),
            tuple(b for _, b in cell_grads),
            *out_grads,
        )
        return eqx.tree_at(_lstm_arrays, theta, grads)

    def differentiable(treedef):
        @jax.custom_vjp
        def run(theta, inputs):
            carry, losses, _ = forward(theta, inputs, treedef)
            return losses, carry

        def run_fwd(theta, inputs):
            carry, losses, saved = forward(theta, inputs, treedef)
            return (losses, carry), (theta, inputs, saved)

        def run_bwd(residuals, cotangents):
            theta, inputs, saved = residuals
            dlosses, _ = cotangents  # the carry is returned without gradient (see `unroll`)
            return backward(theta, inputs, saved, dlosses, treedef), _zero_cotangent(inputs)

        run.defvjp(run_fwd, run_bwd)
        return run

    def unroll(theta, problems, opt_states=None, start=0):
        loss_fn, x0, *rest = problems
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
        lstm_states = [s[0] for s in per_leaf]
        pre_states = [s[1] for s in per_leaf]
        c, h = (_to_rows([getattr(s, name) for s in lstm_states]) for name in ("c", "h"))
        inputs = (loss_fn, x_leaves, pre_states, c, h, key, jnp.asarray(start, jnp.int32))
        losses, (new_x, new_pre, c, h) = differentiable(treedef)(theta, inputs)
        sizes = [xi[0].size for xi in x_leaves]
        cs, hs = _from_rows(c, batch, sizes), _from_rows(h, batch, sizes)
        states = [(LSTMState(ci, hi), si) for ci, hi, si in zip(cs, hs, new_pre)]
        carry = (jax.tree.unflatten(treedef, new_x), LearnedOptimizerState(jax.tree.unflatten(treedef, states)))
        return losses, lax.stop_gradient(carry)

    return unroll


def _lstm_arrays(opt: LearnedOptimizer):
    lstm = opt.lstm
    return lstm.in_kernel, lstm.in_bias, lstm.kernels, lstm.biases, lstm.out_kernel, lstm.out_bias


def _to_rows(per_leaf):
    """Per-leaf `[B, L, n_i, H]` states -> `[L, B * N, H]` (problem-major rows)."""
    x = jnp.concatenate(per_leaf, axis=2)
    batch, layers, n, hidden = x.shape
    return jnp.swapaxes(x, 0, 1).reshape(layers, batch * n, hidden)


def _from_rows(x, batch, sizes):
    """The inverse of `_to_rows`."""
    layers, _, hidden = x.shape
    x = jnp.swapaxes(x.reshape(layers, batch, -1, hidden), 0, 1)
    return jnp.split(x, np.cumsum(sizes)[:-1], axis=2)
