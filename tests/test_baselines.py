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


def test_one_registry_serves_eval_the_paper_and_the_suite():
    from l2lgd.lab import compare
    from l2lgd.optimizers._baselines import BASELINES
    from l2lgd.suite import _baselines as suite_baselines

    assert set(compare.TUNED.values()) <= set(BASELINES)
    assert all(suite_baselines.BASELINES[name] is BASELINES[name] for name in suite_baselines.BASELINES)
    g = jnp.array([0.5, -2.0])
    for name, reference in (("reference_sgd", l2lgd.reference_sgd(0.3)), ("reference_rmsprop", l2lgd.reference_rmsprop(0.3))):
        tx = BASELINES[name](0.3, 20)
        np.testing.assert_array_equal(tx.update(g, tx.init(g))[0], reference.update(g, reference.init(g))[0])


def test_the_grid_widens_a_decade_at_an_edge_up_to_its_limits():
    from l2lgd.optimizers._baselines import LearningRateGrid

    grid = LearningRateGrid(low=-2.0, high=0.0, per_decade=2, floor=-3.0, ceiling=1.0)
    assert grid.rates() == pytest.approx([1e-2, 10**-1.5, 1e-1, 10**-0.5, 1.0])
    calls = []

    def scores_of(best):
        def score(rates):
            calls.append([round(float(np.log10(r)), 6) for r in rates])
            return {r: abs(np.log10(r) - best) for r in rates}
        return score

    # Best at 10^0.5: the grid widens upward by one decade (two points), and the best is inside.
    lr, scores, edge = grid.search(scores_of(0.5))
    assert lr == pytest.approx(10**0.5) and not edge and calls == [[-2.0, -1.5, -1.0, -0.5, 0.0], [0.5, 1.0]]
    assert list(scores) == pytest.approx([1e-2, 10**-1.5, 1e-1, 10**-0.5, 1.0, 10**0.5, 10.0])
    # Best below the floor: widened to 1e-3 and no further, and marked as still at the edge.
    calls.clear()
    lr, scores, edge = grid.search(scores_of(-5.0))
    assert lr == pytest.approx(1e-3) and edge and calls[1:] == [[-3.0, -2.5]]
    # Diverged rates (inf) are never chosen; where every rate diverges, the lowest is.
    lr, _, edge = grid.search(lambda rates: {r: (np.nan if r > 0.2 else -r) for r in rates})
    assert lr == pytest.approx(0.1) and not edge
    lr, _, edge = grid.search(lambda rates: {r: np.inf for r in rates})
    assert lr == pytest.approx(1e-3) and edge
