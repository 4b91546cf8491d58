import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2lgd
from l2lgd._evaluate import host_log10, task_keys, unroll_losses


def test_seed_rmsprop_formula():
    tx = l2lgd.reference_rmsprop(0.1, 0.99)
    g = jnp.array([0.5, -2.0])
    u, s = tx.update(g, tx.init(g))
    nu = 0.01 * g**2
    np.testing.assert_allclose(s.nu, nu, rtol=1e-6)
    np.testing.assert_allclose(u, -0.1 * g / (np.sqrt(nu) + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("name, tx, expected", [("sgd", l2lgd.reference_sgd(), -3.70), ("rmsprop", l2lgd.reference_rmsprop(), -18.2)])
def test_seed_baselines_reproduce_their_known_means(name, tx, expected):
    # 10,000 tasks of the reference's family on a fixed key: mean log10(f(x_19) + 1e-38).
    losses = jax.jit(lambda k: unroll_losses(tx, l2lgd.Config(), k))(task_keys(0, 10_000))
    mean = host_log10(losses[:, -1]).mean()
    assert abs(mean - expected) < 0.1, (name, mean)
