"""The unrolled optimization of one task by an optax transformation (the reference's `learn()`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jaxtyping import Array, Float


def steps_per_iteration(num_steps: int) -> int:
    """How many optimizee steps one iteration of `run_steps`'s scan holds.

    Short horizons are unrolled completely: XLA then fuses across steps, which on CPU beats a
    rolled loop of tiny kernels (`make bench` measures it).
    """
    return num_steps if num_steps <= 32 else 1


def run_steps(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any], Float[Array, ""]],
    params: Any,
    opt_state: Any,
    *,
    num_steps: int,
    second_order: bool = True,
    key: Any = None,
    start: Any = 0,
) -> tuple[tuple[Any, Any], Float[Array, " num_steps"]]:
    """Runs `num_steps` steps of `tx` on `loss_fn` from `(params, opt_state)`.

    For a stochastic task, `key` (a key or its uint32 data) draws step t's minibatch with
    `fold_in(key, start + t)`: `start` is the index of the first step within the task, so
    truncated unrolls continue the minibatch stream where the previous one stopped.

    The loss is recorded before each update, as in the reference: the losses returned are
    f(x_0), ..., f(x_{num_steps-1}). With `second_order=False` the optimizee's gradient is a
    constant for the meta-gradient (`stop_gradient`, as the paper does); with True the
    meta-gradient flows through it (as the reference's `tf.gradients` does).

    Returns:
        `((params, opt_state), losses)` after the last update.
    """

    if key is not None and jnp.issubdtype(jnp.asarray(key).dtype, jnp.unsignedinteger):
        key = jax.random.wrap_key_data(key)

    def body(carry, t):
        x, state = carry
        if key is None:
            loss, g = jax.value_and_grad(loss_fn)(x)
        else:
            loss, g = jax.value_and_grad(loss_fn)(x, jax.random.fold_in(key, start + t))
        if not second_order:
            g = lax.stop_gradient(g)
        updates, state = tx.update(g, state, x)
        return (optax.apply_updates(x, updates), state), loss

    return lax.scan(body, (params, opt_state), jnp.arange(num_steps), unroll=steps_per_iteration(num_steps))


def unroll(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any], Float[Array, ""]],
    x0: Any,
    num_steps: int,
    *,
    second_order: bool = True,
    key: Any = None,
) -> Float[Array, " num_steps"]:
    """The losses of `tx` on one task (the reference's `learn`).

    Args:
        tx: an optax transformation.
        loss_fn: f, a scalar function of the params (of the params and a key when `key` is
            given: then step t draws with `fold_in(key, t)`).
        x0: the starting params, any pytree of floating arrays.
        num_steps: T, the number of steps.
        second_order: False stops the meta-gradient through the optimizee's gradient.

    Returns:
        `[T]` losses f(x_0), ..., f(x_{T-1}), each recorded before its update.

    Example:
        >>> l2lgd.unroll(optax.sgd(0.25), lambda x: jnp.sum(x**2), jnp.ones(2), 3)
        Array([2.   , 0.5  , 0.125], dtype=float32)
    """
    _, losses = run_steps(tx, loss_fn, x0, tx.init(x0), num_steps=num_steps, second_order=second_order, key=key)
    return losses
