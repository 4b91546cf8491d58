"""The learned controller over Prodigy: it starts as Prodigy (per tensor), its state is 16 bytes a
coordinate, its learned multiplier only damps Prodigy's step, it survives huge and zero gradients, and it
meta-trains by PES through `l2lgd.train` and loads by path."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from conftest import run_optax
from l2lgd.optimizers._prodigy_controller import MAX_LOG_MULTIPLIER

CONFIG = l2lgd.Config(name="prodigy", kind="prodigy_controller", hidden_size=4, estimator="pes", perturbations=2,
                      num_steps=10, horizon=20, objective="sum_log", meta_steps=20, meta_lr=1e-2)


def _regression(key=0):
    a = jax.random.normal(jax.random.key(key), (30, 6))
    b = jax.random.normal(jax.random.key(key + 1), (30,))
    return {"w": jnp.zeros(6)}, lambda p: jnp.mean(jnp.square(a @ p["w"] - b))


def test_it_starts_as_prodigy_with_16_bytes_a_coordinate():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    params, loss = _regression()
    mine, state, losses = run_optax(l2lgd.as_optax(opt, num_steps=60), params, loss, 60)
    theirs, _, _ = run_optax(optax.contrib.prodigy(), params, loss, 60)  # one tensor: per-tensor Prodigy is Prodigy
    chex.assert_trees_all_close(mine, theirs, rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0]
    leaf = state.per_leaf["w"]
    assert sum(x.nbytes for x in (leaf.m, leaf.v, leaf.s, leaf.x0)) == 16 * 6 and leaf.d.shape == ()
    assert float(leaf.d) > 1e-6  # its step size estimate grew


def test_its_multiplier_is_bounded_and_huge_or_zero_gradients_stay_finite():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    tx0 = l2lgd.as_optax(opt, num_steps=5)
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    up0, _ = tx0.update(grads, tx0.init(params), params)
    for bias, factor in ((100.0, 1.0), (-100.0, np.exp(-MAX_LOG_MULTIPLIER))):  # it damps Prodigy's step, never raises it
        tx = l2lgd.as_optax(dataclasses.replace(opt, b2=jnp.asarray(bias)), num_steps=5)
        up, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(up["w"], up0["w"] * factor, rtol=1e-4)
    state = tx0.init(params)
    for g in ({"w": jnp.full(4, 1e30)}, {"w": jnp.zeros(4)}, {"w": jnp.array([1e-30, -1e30, 0.0, 1.0])}):
        up, state = tx0.update(g, state, params)
        assert np.all(np.isfinite(up["w"])) and np.isfinite(float(state.per_leaf["w"].d))
    with pytest.raises(ValueError, match="params"):
        tx0.update(grads, state)
    # A NaN gradient poisons its own coordinate and its state, visibly, as Adam's does; the others
    # go on, and the tensor's d keeps growing.
    state = tx0.init(params)
    for i in range(6):
        g = grads if i != 2 else {"w": grads["w"].at[1].set(jnp.nan)}
        d = float(state.per_leaf["w"].d) if i else 0.0
        up, state = tx0.update(g, state, params)
        params = optax.apply_updates(params, up)
    assert np.isnan(params["w"][1]) and np.all(np.isfinite(np.delete(np.asarray(params["w"]), 1)))
    assert float(state.per_leaf["w"].d) > d


def test_its_first_params_are_those_given_to_init_and_its_update_is_differentiable():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(1))
    opt = dataclasses.replace(opt, w2=jnp.full_like(opt.w2, -0.5))  # a multiplier below 1: the learned part acts
    params, loss = _regression(2)
    params = {"w": params["w"] + 0.5}
    _, state, _ = run_optax(l2lgd.as_optax(opt, num_steps=20), params, loss, 20)
    np.testing.assert_array_equal(state.per_leaf["w"].x0, params["w"])  # kept from init, never rewritten

    def final_loss(w2):  # what the estimators that backpropagate (autodiff) differentiate
        _, _, losses = run_optax(l2lgd.as_optax(dataclasses.replace(opt, w2=w2), num_steps=20), params, loss, 20)
        return losses[-1]

    grad = jax.grad(final_loss)(opt.w2)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_it_meta_trains_by_pes_the_start_among_the_snapshots_and_loads_by_path(tmp_path):
    options = l2lgd.RunOptions(checkpoint_every=10, chunk_size=10, validation_tasks=8, progress=False, score_start=True)
    result = l2lgd.train(CONFIG, tmp_path / "run", options)
    start = l2lgd.init_state(CONFIG).state.theta
    assert int(result.state.skipped) == 0
    assert not np.allclose(result.state.theta.w2, start.w2)  # the controller learned something
    assert sorted(int(p.name) for p in (tmp_path / "run" / "snapshots").iterdir() if p.name.isdigit()) == [0, 10, 20]
    assert len(l2lgd.load_record(tmp_path / "run")) == 20  # the start is a candidate of model selection, not a meta-step
    again = l2lgd.train(CONFIG, tmp_path / "run", options)  # a finished run resumes to the same export
    assert again.best_step == result.best_step
    with pytest.raises(ValueError, match="score_start.*True or False"):
        l2lgd.RunOptions(score_start=1)
    with pytest.raises(ValueError, match="num_steps"):
        l2lgd.load_optimizer(tmp_path / "run")
    tx = l2lgd.load_optimizer(tmp_path / "run", num_steps=50)
    params, loss = _regression(3)
    _, _, losses = run_optax(tx, params, loss, 50)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    _, _, longer = run_optax(tx, params, loss, 250)  # five times its num_steps: as at its end, no blow-up
    assert np.all(np.isfinite(longer)) and longer[-1] <= losses[-1] * 1.01


def test_its_cosine_schedule_scales_prodigys_step_down_to_five_percent_and_stays_there():
    config = CONFIG.replace(schedule="cosine")
    fresh = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    opt = l2lgd.make_optimizer(config, key=jax.random.key(0))
    assert opt.schedule == "cosine" and "schedule" in l2lgd.Config.from_dict(config.to_dict()).to_dict()
    assert "schedule" not in CONFIG.to_dict()  # the default is not stored: earlier configs read the same
    with pytest.raises(ValueError, match="schedule='cosine' is the prodigy_controller kind's setting.*kind='lstm'"):
        config.replace(kind="lstm")
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    for num_steps in (1, 2, 4):  # the step after t steps is scaled by the cosine at t / num_steps, 5% from the end on
        txs = [l2lgd.as_optax(o, num_steps=num_steps) for o in (fresh, opt)]
        states = [tx.init(params) for tx in txs]
        for t in range(6):
            (base, states[0]), (mine, states[1]) = (tx.update(grads, s, params) for tx, s in zip(txs, states))
            fraction = min(t / num_steps, 1.0)
            np.testing.assert_allclose(mine["w"], base["w"] * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * fraction))),
                                       rtol=1e-5)
