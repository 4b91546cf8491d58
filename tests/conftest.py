import os
from pathlib import Path

import jax
import pytest

# Command-line runs started by the tests keep compiled programs here, not in the user's cache.
os.environ.setdefault("L2LGD_COMPILATION_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "l2lgd-jax"))

import l2lgd

# A config small enough that a meta-step compiles and runs in well under a second.
TINY = l2lgd.Config(name="tiny", num_steps=5, hidden_size=4, meta_steps=20)


@pytest.fixture
def tiny():
    return TINY


@pytest.fixture
def key():
    return jax.random.key(0)
