"""Any learned optimizer (`_base.LearnedOptimizer`) as an optax `GradientTransformation`.

Every floating leaf of the params is one leaf of the optimizer (for the LSTM kind: each of its
coordinates one row of the coordinate-wise LSTM). As in the reference,
`optax.apply_updates(params, updates)` is the step x += update.

A kind that uses the training fraction (`LearnedOptimizer.uses_horizon`) needs the number of steps
the user will run: `as_optax(opt, num_steps=N)` stores it in the state, as an array, so that a
batch of states (under `jax.vmap`) may hold a different horizon per task; `fill_horizon` gives it
to states made without it (meta-training gives each task its own; evaluation its length).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jaxtyping import Array, Float

from ._base import LearnedOptimizer, cast_optimizer


class LearnedOptimizerState(eqx.Module):
    """One optimizer state (the kind's `init_state`) per leaf of the params, and the leaves'
    shapes (static: `update` checks the gradients against them). For a kind that
    `uses_horizon`: the number of steps the user will run (`horizon`; None until given)."""

    per_leaf: Any
    shapes: tuple[tuple[int, ...], ...] | None = eqx.field(static=True, default=None)
    structure: Any = eqx.field(static=True, default=None)  # the params' treedef
    horizon: Float[Array, ""] | None = None
    uses_horizon: bool = eqx.field(static=True, default=False)


def check_num_steps(num_steps: Any) -> None:
    """Raises, naming it, unless `num_steps` is None or a positive integer."""
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
                                  or num_steps <= 0):
        raise ValueError(f"num_steps (the optimizee steps you will run) must be a positive integer, got {num_steps!r}.")


def fill_horizon(state: Any, horizon: Any) -> Any:
    """`state` with `horizon` as the horizon of each learned-optimizer state in it (an `as_optax`
    state, or one inside another optax state, e.g. of `optax.chain`) whose kind uses one and that
    has none yet; the others unchanged (a state that has its horizon keeps it).

    Args:
        state: an optax state.
        horizon: the number of steps that will be run, a positive number or a scalar array
            (under `jax.vmap`: one per task).
    """
    def fill(s):
        if isinstance(s, LearnedOptimizerState) and s.uses_horizon and s.horizon is None:
            return dataclasses.replace(s, horizon=jnp.asarray(horizon, jnp.float32))
        return s

    return jax.tree.map(fill, state, is_leaf=lambda s: isinstance(s, LearnedOptimizerState))


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
    structure and shapes that `init` saw (naming the first leaf that does not)."""
    try:
        states = treedef.flatten_up_to(state.per_leaf)
    except (ValueError, TypeError):
        saw = f"params with structure {state.structure}" if state.structure is not None else "other params"
        raise ValueError(
            f"update() got gradients with structure {treedef}, but init() was given {saw}: pass gradients "
            "of the params the optimizer was initialized with."
        ) from None
    shapes = state.shapes or (None,) * len(states)
    for (path, g), shape in zip(jax.tree_util.tree_flatten_with_path(grads)[0], shapes):
        if shape is not None and tuple(jnp.shape(g)) != shape:
            raise ValueError(
                f"update() got the gradient leaf {jax.tree_util.keystr(path) or '<root>'} of shape "
                f"{jnp.shape(g)}, but init() saw shape {shape} there."
            )
    return states


# Coordinates per block when `update` runs a large leaf (over `2 * BLOCK` coordinates) block by
# block: the LSTM's intermediates ([n, 4 * hidden] per layer) then stay in cache instead of
# streaming through memory (`make bench` measures it). Rows are independent, so a block's result
# is the same function of its coordinates.
BLOCK = 16_384


def _step_in_blocks(opt: LearnedOptimizer, g, state, total: int, horizon=None, params=None):
    """`opt.step(g, state, total=total)` (and `horizon=horizon`, `params=params` for a kind that
    uses them; `params` is the leaf's flattened parameters, sliced as `g` is), run
    `BLOCK` coordinates at a time for a large leaf of a coordinatewise kind: a loop over the full
    blocks that reads and writes each block's slice of the arrays in place, then the rest. State
    arrays with a coordinate axis (`opt.coordinate_axes`) are sliced; the others (e.g. a step
    count) are the same for every block and taken from the last."""
    extra = {"horizon": horizon} if opt.uses_horizon else {}

    def step(g_, s_, p_):
        return opt.step(g_, s_, total=total, **extra, **({"params": p_} if opt.uses_params else {}))

    n = g.shape[0]
    if n <= 2 * BLOCK or not opt.coordinatewise:
        return step(g, state, params)
    axes = opt.coordinate_axes(state, n)

    def take(tree, start, size):
        return jax.tree.map(lambda x, a: x if a is None else lax.dynamic_slice_in_dim(x, start, size, a), tree, axes)

    def put(tree, part, start):
        return jax.tree.map(lambda x, p, a: p if a is None else lax.dynamic_update_slice_in_dim(x, p, start, a), tree, part, axes)

    def block(i, carry):
        updates, new_state = carry
        start = i * BLOCK
        part = None if params is None else lax.dynamic_slice_in_dim(params, start, BLOCK)
        u, s = step(lax.dynamic_slice_in_dim(g, start, BLOCK), take(state, start, BLOCK), part)
        return lax.dynamic_update_slice_in_dim(updates, u, start, 0), put(new_state, s, start)

    full = n // BLOCK
    updates, new_state = lax.fori_loop(0, full, block, (jnp.zeros_like(g), state))
    if n % BLOCK:
        start = full * BLOCK
        u, s = step(g[start:], take(state, start, n - start), None if params is None else params[start:])
        updates, new_state = updates.at[start:].set(u), put(new_state, s, start)
    return updates, new_state


def _poison_non_finite(opt: LearnedOptimizer, g, u, state):
    """Adam's behaviour, visibly: a coordinate whose gradient is NaN or infinite gets a NaN update
    and (for a coordinatewise kind) a NaN state from then on, instead of whatever finite value the
    kind's features would make of it (a log preprocessing clips it: the coordinate froze or moved
    uphill). `optax.apply_if_finite` drops such steps whole."""
    bad = ~jnp.isfinite(g)
    u = jnp.where(bad, jnp.nan, u)
    if not opt.coordinatewise:
        return u, state

    def poison(x, axis):
        if axis is None or not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        shape = [1] * x.ndim
        shape[axis] = -1
        return jnp.where(bad.reshape(shape), jnp.nan, x)

    return u, jax.tree.map(poison, state, opt.coordinate_axes(state, g.shape[0]))


def _compute_dtype(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def as_optax(opt: LearnedOptimizer, num_steps: int | None = None) -> optax.GradientTransformation:
    """Turns a (trained) `LearnedOptimizer` of any kind into an optax transformation.

    `init(params)` and `update(grads, state, params=None)` are pure: they work under `jax.jit`,
    `jax.vmap` and `lax.scan` and compose with `optax.chain`. Updates have the params' structure,
    shapes and dtypes; the optimizer runs in float32, or float64 for float64 leaves.

    Args:
        opt: the optimizer module (`make_optimizer`, `load_learned_optimizer`, or
            `eqx.combine(state.theta, static)` during meta-training).
        num_steps: the number of steps you will run, for a kind that uses the training fraction
            t / num_steps (`opt.uses_horizon`; ignored by the others). Past it, the fraction stays
            at 1: the optimizer goes on as at the end of its horizon. Without it, such a kind's
            state needs `fill_horizon` before `update` (else `update` raises, naming num_steps).

    Returns:
        An `optax.GradientTransformation` whose state holds each leaf's optimizer state (for
        the LSTM kind: each coordinate's LSTM state and the preprocessing's, if any). Params
        must be floating arrays.

    Example:
        >>> tx = l2lgd.as_optax(l2lgd.make_optimizer(l2lgd.Config(hidden_size=4), key=jax.random.key(0)))
        >>> updates, _ = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}))
        >>> updates["w"].shape
        (3,)
    """

    check_num_steps(num_steps)
    uses_horizon = opt.uses_horizon

    def init(params):
        _check_floating(params, "params")
        state = LearnedOptimizerState(
            jax.tree.map(lambda p: opt.init_state_for(jnp.ravel(p).astype(_compute_dtype(jnp.result_type(p)))), params),
            leaf_shapes(params),
            jax.tree.structure(params),
            uses_horizon=uses_horizon,
        )
        return state if num_steps is None else fill_horizon(state, num_steps)

    def update(grads, state, params=None):
        if opt.uses_params and params is None:
            raise ValueError(
                f"The learned optimizer {type(opt).__name__} steps in proportion to the parameters: pass them, "
                "tx.update(grads, state, params)."
            )
        if uses_horizon and state.horizon is None:
            raise ValueError(
                f"The learned optimizer {type(opt).__name__} uses the training fraction t / num_steps, but its state "
                "has no num_steps: pass as_optax(opt, num_steps=N) or load_optimizer(..., num_steps=N), N the "
                "optimizee steps you will run (or give the state one with fill_horizon)."
            )
        _check_floating(grads, "gradients")
        leaves, treedef = jax.tree.flatten(grads)
        states = _states_for(grads, treedef, state)
        total = sum(jnp.size(g) for g in leaves)
        if opt.uses_params:
            _check_floating(params, "params")
            try:
                param_leaves = treedef.flatten_up_to(params)
            except (ValueError, TypeError) as e:
                raise ValueError(f"The params do not have the gradients' structure: {e}") from None
        else:
            param_leaves = [None] * len(leaves)
        updates, new_states = [], []
        for g, s, p in zip(leaves, states, param_leaves):
            g = jnp.asarray(g)
            dtype = _compute_dtype(g.dtype)
            flat = g.reshape(-1).astype(dtype)
            p = None if p is None else jnp.asarray(p).reshape(-1).astype(dtype)
            if p is not None and p.shape != flat.shape:
                raise ValueError(f"A params leaf of shape {jnp.shape(p)} stands where its gradient has shape {g.shape}.")
            u, s = _poison_non_finite(
                opt, flat, *_step_in_blocks(cast_optimizer(opt, dtype), flat, s, total, state.horizon, p))
            updates.append(u.reshape(g.shape).astype(g.dtype))
            new_states.append(s)
        return treedef.unflatten(updates), dataclasses.replace(state, per_leaf=treedef.unflatten(new_states))

    return optax.GradientTransformation(init, update)
