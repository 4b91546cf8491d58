import os
from pathlib import Path

import jax
import pytest

from l2lgd._process import configure_cpu

# Command-line runs started by the tests keep compiled programs here, not in the user's cache.
os.environ.setdefault("L2LGD_COMPILATION_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "l2lgd-jax"))

# The tests compile far more than they run: XLA's backend without its optimization passes
# compiles faster (the programs run slower, and their results may differ from the optimized ones
# by float rounding; every comparison in the tests is within one set of flags).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

# As the command line runs: single-threaded XLA (the two test workers share the cores) and the
# persistent cache for every program, so a program two tests (or two `train` calls of one
# resume test) build alike compiles once per session.
configure_cpu()

import l2lgd

# A config small enough that a meta-step compiles and runs in well under a second.
TINY = l2lgd.Config(name="tiny", num_steps=5, hidden_size=4, meta_steps=20)


@pytest.fixture
def tiny():
    return TINY


@pytest.fixture
def key():
    return jax.random.key(0)


def run_optax(tx, params, loss, steps):
    """`steps` steps of the optax transformation `tx` on `loss` from `params`, under `lax.scan`:
    `(final params, final state, the loss before each step)`."""
    import optax

    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), loss(p)

    (params, state), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, state, losses
