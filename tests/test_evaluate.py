import numpy as np
import optax
import pytest

import l2lgd
from l2lgd import task_keys, summarize, tune_learning_rate


def test_summary_statistics_on_a_hand_checked_array():
    s = summarize(np.array([1e-2, 1e-4, 0.0, 1.0]))
    logs = np.array([-2.0, -4.0, -38.0, 0.0])
    assert s["mean"] == pytest.approx(-11.0)
    assert s["median"] == pytest.approx(-3.0)
    assert s["frac_zero"] == 0.25
    half = 1.96 * logs.std(ddof=1) / 2.0
    assert s["ci95_low"] == pytest.approx(-11.0 - half) and s["ci95_high"] == pytest.approx(-11.0 + half)
    assert s["p5"] == pytest.approx(np.percentile(logs, 5)) and s["p95"] == pytest.approx(np.percentile(logs, 95))


def test_the_95_percent_ci_on_a_hand_checked_array():
    from l2lgd._evaluate import ci95_half_width

    # [1, 2, 3, 4]: sample variance 5/3, so 1.96 * sqrt(5/3) / sqrt(4) = 1.2651745...
    assert ci95_half_width([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.2651745, rel=1e-7)
    assert np.isnan(ci95_half_width([1.0])) and np.isnan(ci95_half_width([]))


def test_grid_search_finds_the_known_best_rate():
    # On f(x) = sum((s x)^2) with s = 1 exactly, SGD with lr 0.5 lands on 0 in one step:
    # x - 0.5 * 2x = 0. It must win the grid.
    config = l2lgd.Config(dim=3)
    class UnitScale(l2lgd.TaskFamily):
        def sample(self, key):
            return l2lgd.Quadratic(np.ones(3, np.float32)), l2lgd.sample_quadratic(key, 3)[1]

    best, scores = tune_learning_rate(
        optax.sgd, [0.1, 0.3, 0.5, 0.7], config, task_keys(0, 16), progress=False, family=UnitScale()
    )
    assert best == 0.5
    assert scores[0.5] == pytest.approx(-38.0)
    best, scores = tune_learning_rate(
        optax.sgd, [0.1, 0.3, 0.5, 0.7], config, task_keys(0, 16), progress=False, family=UnitScale(), score="loss"
    )
    assert best == 0.5 and scores[0.5] == 0.0 and scores[0.1] > 0.0


def test_grid_refuses_an_unreasonable_grid():
    with pytest.raises(ValueError, match=r"would take about \d+ s"):
        tune_learning_rate(optax.sgd, [0.1] * 1000, l2lgd.Config(), task_keys(0, 64), max_seconds=1e-6, progress=False)
