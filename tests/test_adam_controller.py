"""The learned controller over Adam: it starts as Adam, its state is Adam's, it meta-trains by PES
through `l2lgd.train` and runs through the optax face on any pytree."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from conftest import run_optax

CONFIG = l2lgd.Config(name="ctrl", kind="adam_controller", hidden_size=4, estimator="pes", perturbations=2,
                      num_steps=10, horizon=20, objective="sum_log", meta_steps=20, meta_lr=1e-2)


def _run(tx, steps=50):
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.3, -0.1])}
    loss = lambda p: jnp.sum(jnp.square(p["w"])) + jnp.sum(jnp.square(p["b"] - 1.0))
    return run_optax(tx, params, loss, steps)


def test_it_starts_as_adam_at_1e_3():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    mine, state, _ = _run(l2lgd.as_optax(opt, num_steps=50))
    adam, _, _ = _run(optax.adam(1e-3))
    chex.assert_trees_all_close(mine, adam, rtol=1e-5, atol=1e-6)
    assert state.per_leaf["w"].m.dtype == jnp.float32 and state.per_leaf["w"].m.shape == (4,)  # Adam's 8 bytes a coordinate


@pytest.mark.parametrize("relative", [False, True])
def test_it_meta_trains_by_pes_and_loads_by_path(tmp_path, relative):
    config = dataclasses.replace(CONFIG, relative_steps=relative)
    options = l2lgd.RunOptions(checkpoint_every=10, chunk_size=10, validation_tasks=8, progress=False)
    result = l2lgd.train(config, tmp_path / "run", options)
    start = l2lgd.init_state(config).state.theta
    assert int(result.state.skipped) == 0
    assert not np.allclose(result.state.theta.w2, start.w2)  # the controller learned something
    tx = l2lgd.load_optimizer(tmp_path / "run", num_steps=50)
    _, _, losses = _run(tx)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    _, _, longer = _run(tx, steps=150)  # three times its num_steps: as at its end, no blow-up
    assert np.all(np.isfinite(longer)) and longer[-1] <= losses[-1] * 1.01


def test_its_step_size_stays_within_max_lr_and_the_config_names_a_bad_one():
    for max_lr in (1.0, 10.0):
        opt = l2lgd.make_optimizer(dataclasses.replace(CONFIG, max_lr=max_lr), key=jax.random.key(0))
        opt = dataclasses.replace(opt, b2=jnp.array([10.0, 0.0]))  # steer the step size up at every step
        _, state, _ = _run(l2lgd.as_optax(opt, num_steps=200), steps=200)
        np.testing.assert_allclose(float(jnp.exp(state.per_leaf["w"].log_lr)), max_lr, rtol=1e-5)
    assert "max_lr" not in l2lgd.Config(kind="adam_controller").to_dict()  # stored as before at its default
    with pytest.raises(ValueError, match="max_lr.*positive.*-1"):
        l2lgd.Config(kind="adam_controller", max_lr=-1)


def test_relative_steps_scale_with_the_tensor_and_need_the_params():
    opt = l2lgd.make_optimizer(dataclasses.replace(CONFIG, relative_steps=True), key=jax.random.key(0))
    tx = l2lgd.as_optax(opt, num_steps=10)
    params = {"w": jnp.full((3, 2), 2.0), "b": jnp.zeros(2)}
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    # At the start: Adam(1e-3)'s step times (the tensor's RMS + the floor, 1).
    np.testing.assert_allclose(updates["w"], -1e-3 * 3.0, rtol=1e-4)
    np.testing.assert_allclose(updates["b"], -1e-3 * 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match=r"pass them, tx.update\(grads, state, params\)"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="structure"):
        tx.update(params, state, {"w": params["w"]})

    def final_loss(scale, steps=30):  # the same task in coordinates rescaled by `scale`
        loss = lambda q: jnp.sum(jnp.square(q["w"] * scale - 1.0))
        tx = l2lgd.as_optax(dataclasses.replace(opt, b2=jnp.array([0.0, 0.0, -30.0])), num_steps=steps)  # no floor
        q = {"w": jnp.full((4,), 0.5) / scale}
        s = tx.init(q)
        for _ in range(steps):
            u, s = tx.update(jax.grad(loss)(q), s, q)
            q = optax.apply_updates(q, u)
        return float(loss(q))

    np.testing.assert_allclose([final_loss(1e-2), final_loss(1e2)], final_loss(1.0), rtol=1e-3)
