"""The meta-objectives computed on an unroll's losses, and the logs that survive float32."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

# The smallest normal float32: losses below it count as solved in `safe_log`.
LOSS_FLOOR = float(jnp.finfo(jnp.float32).tiny)


def safe_log(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """log(max(x, LOSS_FLOOR)): finite at x = 0, and with zero gradient once x is below the floor.

    A loss that underflowed to 0 has nothing left to learn from, so it contributes log(floor)
    and no gradient, instead of the reference's log(0) = -inf and a NaN meta-gradient.
    """
    return jnp.log(jnp.maximum(x, LOSS_FLOOR))


# A loss this small counts as solved in `sum_log_floored` and in a mixture's validation score.
SOLVED = 1e-8

# The meta-objectives a Config may name: the reference's `sum` of the losses, the `end` loss, and
# `end_log`, its log; and `sum_log`, the sum over steps of the (safe) log losses, which rewards
# every decade gained at every step equally.
OBJECTIVES: dict[str, Callable[[Float[Array, " num_steps"]], Float[Array, ""]]] = {
    "sum": jnp.sum,
    "end": lambda losses: losses[-1],
    "end_log": lambda losses: safe_log(losses[-1]),
    "sum_log": lambda losses: jnp.sum(safe_log(losses)),
    # `sum_log` with losses below `SOLVED` counted as `SOLVED`: across a mixture of families, one
    # whose loss can be driven to 1e-20 (a memorized data set) would otherwise outweigh the rest.
    "sum_log_floored": lambda losses: jnp.sum(jnp.log(jnp.maximum(losses, SOLVED))),
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
    A NaN or negative loss has no log: it stays NaN (never the perfect score -38).
    """
    positive = losses > 0
    value = jnp.where(positive, jnp.log10(jnp.where(positive, losses, 1.0)), -38.0)
    return jnp.where(losses >= 0, value, jnp.nan)
