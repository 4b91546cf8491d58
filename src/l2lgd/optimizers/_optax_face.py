"""The learned optimizer as an optax `GradientTransformation`.

Every coordinate of every floating leaf of the params is one row of the coordinate-wise LSTM.
As in the reference, `optax.apply_updates(params, updates)` is the step x += update.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ._lstm import ELEMENTWISE_MAX_HIDDEN, LSTMState
from ._learned import LearnedOptimizer, cast_optimizer


class LearnedOptimizerState(eqx.Module):
    """One optimizer state (the LSTM's) per leaf of the params, and the leaves' shapes (static:
    `update` checks the gradients against them)."""

    per_leaf: Any
    shapes: tuple[tuple[int, ...], ...] | None = eqx.field(static=True, default=None)


def leaf_shapes(tree: Any) -> tuple[tuple[int, ...], ...]:
    """The shape of every leaf of `tree`, in flattening order."""
    return tuple(tuple(jnp.shape(x)) for x in jax.tree.leaves(tree))


def _check_floating(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"The learned optimizer needs floating {what}, but leaf "
                f"{jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}. Keep integer and "
                "boolean leaves out of the optimized pytree (e.g. with optax.masked or eqx.partition)."
            )


def _states_for(grads: Any, treedef, state: LearnedOptimizerState) -> list:
    """Each gradient leaf's optimizer state, after checking that the gradients have the
    structure and sizes that `init` saw (naming the first leaf that does not)."""
    try:
        states = treedef.flatten_up_to(state.per_leaf)
    except (ValueError, TypeError):
        expected = jax.tree.structure(state.per_leaf, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], LSTMState))
        raise ValueError(
            f"update() got gradients with structure {treedef}, but init() was given params with structure "
            f"{expected}: pass gradients of the params the optimizer was initialized with."
        ) from None
    shapes = state.shapes or (None,) * len(states)
    for (path, g), (lstm_state, _), shape in zip(jax.tree_util.tree_flatten_with_path(grads)[0], states, shapes):
        expected = lstm_state.c.shape[-2]
        if jnp.size(g) != expected or (shape is not None and tuple(jnp.shape(g)) != shape):
            saw = f"shape {shape}" if shape is not None else f"{expected} coordinates"
            raise ValueError(
                f"update() got the gradient leaf {jax.tree_util.keystr(path) or '<root>'} of shape "
                f"{jnp.shape(g)}, but init() saw {saw} there."
            )
    return states


# Coordinates per block when `update` runs a large leaf (over `2 * BLOCK` coordinates) block by
# block: the LSTM's intermediates ([n, 4 * hidden] per layer) then stay in cache instead of
# streaming through memory (about 3x faster on a 1,000,000-coordinate leaf, `make bench`). Rows are
# independent, so a block's result is the same function of its coordinates.
BLOCK = 16_384


def _step_in_blocks(opt: LearnedOptimizer, g, state, elementwise: bool = False):
    """`opt.step(g, state)`, run `BLOCK` coordinates at a time for a large leaf: a loop over the
    full blocks that reads and writes each block's slice of the arrays in place, then the rest.

    State arrays with the coordinate axis (the LSTM's axis 1, the preprocessing's axis 0) are
    sliced; the others (e.g. a step count) are the same for every block and taken from the last.
    `elementwise`: as for `LearnedOptimizer.step`."""
    step = functools.partial(opt.step, elementwise=elementwise)
    n = g.shape[0]
    if n <= 2 * BLOCK:
        return step(g, state)
    axes = jax.tree.map(lambda x: 0 if jnp.ndim(x) > 0 and jnp.shape(x)[0] == n else None, state[1])
    axes = (jax.tree.map(lambda x: 1, state[0]), axes)

    def take(tree, start, size):
        return jax.tree.map(lambda x, a: x if a is None else lax.dynamic_slice_in_dim(x, start, size, a), tree, axes)

    def put(tree, part, start):
        return jax.tree.map(lambda x, p, a: p if a is None else lax.dynamic_update_slice_in_dim(x, p, start, a), tree, part, axes)

    def block(i, carry):
        updates, new_state = carry
        start = i * BLOCK
        u, s = step(lax.dynamic_slice_in_dim(g, start, BLOCK), take(state, start, BLOCK))
        return lax.dynamic_update_slice_in_dim(updates, u, start, 0), put(new_state, s, start)

    full = n // BLOCK
    updates, new_state = lax.fori_loop(0, full, block, (jnp.zeros_like(g), state))
    if n % BLOCK:
        start = full * BLOCK
        u, s = step(g[start:], take(state, start, n - start))
        updates, new_state = updates.at[start:].set(u), put(new_state, s, start)
    return updates, new_state


def _elementwise(opt: LearnedOptimizer, coordinates: int) -> bool:
    """Whether an update of `coordinates` in all runs the LSTM's products elementwise
    (`CoordinateLSTM.__call__`): for a small LSTM on a model-sized pytree. Updates of at most
    `2 * BLOCK` coordinates (the tasks of meta-training among them) keep the matrix products,
    so their results stay bit for bit those of earlier versions."""
    return coordinates > 2 * BLOCK and opt.lstm.hidden_size <= ELEMENTWISE_MAX_HIDDEN


def _compute_dtype(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def as_optax(opt: LearnedOptimizer) -> optax.GradientTransformation:
    """Turns a (trained) `LearnedOptimizer` into an optax transformation.

    `init(params)` and `update(grads, state, params=None)` are pure: they work under `jax.jit`,
    `jax.vmap` and `lax.scan` and compose with `optax.chain`. Updates have the params' structure,
    shapes and dtypes; the LSTM runs in float32, or float64 for float64 leaves.

    Args:
        opt: the optimizer module (`make_optimizer`, `load_learned_optimizer`, or
            `eqx.combine(state.theta, static)` during meta-training).

    Returns:
        An `optax.GradientTransformation` whose state holds each coordinate's LSTM state
        (and the preprocessing's, if any). Params must be floating arrays.

    Example:
        >>> tx = l2lgd.as_optax(l2lgd.make_optimizer(l2lgd.Config(hidden_size=4), key=jax.random.key(0)))
        >>> updates, _ = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}))
        >>> updates["w"].shape
        (3,)
    """

    def init(params):
        _check_floating(params, "params")
        return LearnedOptimizerState(
            jax.tree.map(lambda p: opt.init_state(jnp.size(p), _compute_dtype(jnp.result_type(p))), params),
            leaf_shapes(params),
        )

    def update(grads, state, params=None):
        del params
        _check_floating(grads, "gradients")
        leaves, treedef = jax.tree.flatten(grads)
        states = _states_for(grads, treedef, state)
        elementwise = _elementwise(opt, sum(jnp.size(g) for g in leaves))
        updates, new_states = [], []
        for g, s in zip(leaves, states):
            g = jnp.asarray(g)
            dtype = _compute_dtype(g.dtype)
            u, s = _step_in_blocks(cast_optimizer(opt, dtype), g.reshape(-1).astype(dtype), s, elementwise)
            updates.append(u.reshape(g.shape).astype(g.dtype))
            new_states.append(s)
        return treedef.unflatten(updates), LearnedOptimizerState(treedef.unflatten(new_states), state.shapes)

    return optax.GradientTransformation(init, update)
