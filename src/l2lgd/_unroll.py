"""The unrolled optimization and the meta-objectives computed on it (the reference's `learn()`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jaxtyping import Array, Float

# The smallest normal float32: losses below it count as solved in `safe_log`.
LOSS_FLOOR = float(jnp.finfo(jnp.float32).tiny)


def scan_unroll(num_steps: int) -> int:
    """How many optimizee steps one iteration of the scan holds.

    Short horizons are unrolled completely: XLA then fuses across steps, which on CPU is about
    1.5x faster per meta-step than a rolled loop of tiny kernels (see `make bench`).
    """
    return num_steps if num_steps <= 32 else 1


def run_steps(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any], Float[Array, ""]],
    params: Any,
    opt_state: Any,
    num_steps: int,
    *,
    second_order: bool = True,
    key: Any = None,
    start: Any = 0,
) -> tuple[tuple[Any, Any], Float[Array, " num_steps"]]:
    """Runs `num_steps` steps of `tx` on `loss_fn` from `(params, opt_state)`.

    For a stochastic task, `key` (a key or its uint32 data) draws step t's minibatch with
    `fold_in(key, start + t)`: `start` is the index of the first step within the task, so
    truncated unrolls continue the minibatch stream where the previous one stopped.

    The loss is recorded before each update, as in the seed: the losses returned are
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

    return lax.scan(body, (params, opt_state), jnp.arange(num_steps), unroll=scan_unroll(num_steps))


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
    _, losses = run_steps(tx, loss_fn, x0, tx.init(x0), num_steps, second_order=second_order, key=key)
    return losses


def safe_log(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """log(max(x, LOSS_FLOOR)): finite at x = 0, and with zero gradient once x is below the floor.

    A loss that underflowed to 0 has nothing left to learn from, so it contributes log(floor)
    and no gradient, instead of the reference's log(0) = -inf and a NaN meta-gradient.
    """
    return jnp.log(jnp.maximum(x, LOSS_FLOOR))


# The meta-objectives a Config may name: the reference's `sum` of the losses, the `end` loss, and
# `end_log`, its log; and `sum_log`, the sum over steps of the (safe) log losses, which rewards
# every decade gained at every step equally.
OBJECTIVES: dict[str, Callable[[Float[Array, " num_steps"]], Float[Array, ""]]] = {
    "sum": jnp.sum,
    "end": lambda losses: losses[-1],
    "end_log": lambda losses: safe_log(losses[-1]),
    "sum_log": lambda losses: jnp.sum(safe_log(losses)),
}


def meta_objective(losses: Float[Array, " num_steps"], objective: str) -> Float[Array, ""]:
    """The meta-objective `objective` (a name of `OBJECTIVES`) of one unroll's losses."""
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; expected one of {', '.join(map(repr, OBJECTIVES))}.")
    return OBJECTIVES[objective](losses)


def log10_loss(losses: Float[Array, "..."]) -> Float[Array, "..."]:
    """log10(loss + 1e-38), the reference's measure, computed so that it survives float32 on XLA.

    1e-38 is a float32 denormal, which XLA on CPU flushes to zero, so `log10(loss + 1e-38)` would
    give -inf for a loss that underflowed to 0. Instead: exactly -38 for a loss of 0, and
    log10(loss) otherwise (equal to log10(loss + 1e-38) to float32 precision for normal losses).
    """
    positive = losses > 0
    return jnp.where(positive, jnp.log10(jnp.where(positive, losses, 1.0)), -38.0)
