"""Running optimizers on held-out problems, and the statistics the seed reports."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._config import Config
from ._meta import problem_sampler
from ._unroll import unroll

# Problem sets that training never draws from: training uses key(config.seed) split in two.
VALIDATION_SEED = 1_000_003
TEST_SEED = 2_000_003


def problem_keys(seed: int, num_problems: int) -> jax.Array:
    """The keys of a fixed problem set (validation: VALIDATION_SEED, test: TEST_SEED)."""
    return jax.random.split(jax.random.key(seed), num_problems)


def unroll_losses(
    tx: optax.GradientTransformation,
    config: Config,
    keys: jax.Array,
    *,
    num_steps: int | None = None,
    sample: Callable | None = None,
) -> jax.Array:
    """`[num_problems, num_steps]` losses of `tx` on the problems drawn with `keys`."""
    sample = sample or problem_sampler(config)
    num_steps = num_steps or config.num_steps

    def one(key):
        loss_fn, x0 = sample(key)
        return unroll(tx, loss_fn, x0, num_steps)

    return jax.vmap(one)(keys)


def log10_losses(losses: Any) -> np.ndarray:
    """log10(loss + 1e-38) in float64 on the host: exact, and -38 where a loss is 0."""
    return np.log10(np.asarray(losses, dtype=np.float64) + 1e-38)
