"""The suite's aggregates against hand-computed figures."""

import numpy as np
import pytest

from l2lgd.suite._profiles import (
    iqm, iqm_interval, performance_ratios, profile, profile_score, speedup, steps_to_target,
)


def test_steps_to_target_counts_evaluations_and_fails_on_any_non_finite_run():
    losses = np.array([[4.0, 3.0, 1.0, 0.5], [2.0, 1.0, 1.0, 0.5]])  # means 3, 2, 1, 0.5
    assert steps_to_target(losses, 2.0) == 2 and steps_to_target(losses, 3.0) == 1
    assert steps_to_target(losses, 0.1) == np.inf
    losses[1, 0] = np.nan
    assert steps_to_target(losses, 2.0) == np.inf  # a failure, not a run left out
    with pytest.raises(ValueError, match="finite loss"):
        steps_to_target(losses, np.nan)


def test_profiles_and_the_algoperf_score():
    ratios = performance_ratios({"a": np.array([10.0, 20.0, np.inf]), "b": np.array([20.0, 10.0, 30.0])})
    np.testing.assert_array_equal(ratios["a"], [1.0, 2.0, np.inf])
    np.testing.assert_array_equal(ratios["b"], [2.0, 1.0, 1.0])
    np.testing.assert_allclose(profile(ratios["a"], [1.0, 1.5, 2.0, 100.0]), [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert profile_score(ratios["b"]) == pytest.approx(1 - (1 / 3) * (1 / 3), abs=1e-3)  # rho = 2/3 on [1, 2), 1 after
    assert profile_score(ratios["a"]) == pytest.approx((1 / 3) * (1 / 3) + (2 / 3) * (2 / 3), abs=1e-3)
    assert profile_score(np.ones(5)) == pytest.approx(1.0) and profile_score(np.full(5, np.inf)) == 0.0
    nobody = performance_ratios({"a": np.array([np.inf]), "b": np.array([np.inf])})
    assert nobody["a"][0] == np.inf


def test_iqm_trims_a_quarter_from_each_end_and_keeps_failures():
    assert iqm(np.array([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0])) == pytest.approx(3.5)  # mean of 2..5
    assert iqm(np.array([1.0, 2.0, 3.0, np.inf])) == pytest.approx(2.5)  # one failure in four is trimmed
    assert iqm(np.array([1.0, np.inf, np.inf, np.inf])) == np.inf  # most failed: it shows
    interval = iqm_interval(np.arange(1.0, 21.0), resamples=500, seed=1)
    assert interval.value == pytest.approx(10.5) and interval.low < interval.value < interval.high


def test_speedup_over_a_reference():
    reference = np.array([[4.0, 2.0, 1.0, 1.0]])  # reaches its final mean (1.0) at evaluation 3
    faster = np.array([[1.0, 1.0, 1.0, 1.0]])
    never = np.array([[5.0, 5.0, 5.0, 5.0]])
    assert speedup(reference, faster) == 3.0 and speedup(reference, never) == 0.0
    assert np.isnan(speedup(np.array([[np.nan, 1.0]]), faster))


def test_every_tuning_free_rival_optimizes_a_quadratic_at_its_defaults():
    import jax
    import jax.numpy as jnp
    import optax

    from l2lgd.optimizers._baselines import TUNING_FREE

    loss = lambda w: jnp.sum(jnp.square(w - 1.0))
    for name, rival in TUNING_FREE.items():
        tx = rival.make()

        def step(carry, _):
            w, s = carry
            updates, s = tx.update(jax.grad(loss)(w), s, w)
            return (optax.apply_updates(w, updates), s), None

        (w, state), _ = jax.lax.scan(step, (jnp.zeros(4), tx.init(jnp.zeros(4))), None, length=300)
        scored = rival.eval_params(state, w) if rival.eval_params else w
        assert float(loss(scored)) < 0.9 * float(loss(jnp.zeros(4))), name  # adam:1e-3 is the slowest
