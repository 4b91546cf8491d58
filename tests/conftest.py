import jax
import pytest

import l2lgd

# A config small enough that a meta-step compiles and runs in well under a second.
TINY = l2lgd.Config(name="tiny", num_steps=5, hidden_size=4, meta_steps=20)


@pytest.fixture
def tiny():
    return TINY


@pytest.fixture
def key():
    return jax.random.key(0)
