"""The learned controller over Adam: it starts as Adam, its state is Adam's, it meta-trains by PES
through `l2lgd.train` and runs through the optax face on any pytree."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import l2lgd

CONFIG = l2lgd.Config(name="ctrl", kind="adam_controller", hidden_size=4, estimator="pes", perturbations=2,
                      num_steps=10, horizon=20, objective="sum_log", meta_steps=20, meta_lr=1e-2)


def _run(tx, steps=50):
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.3, -0.1])}
    loss = lambda p: jnp.sum(jnp.square(p["w"])) + jnp.sum(jnp.square(p["b"] - 1.0))

    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), loss(p)

    (params, state), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, state, losses


def test_it_starts_as_adam_at_1e_3():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    mine, state, _ = _run(l2lgd.as_optax(opt, num_steps=50))
    adam, _, _ = _run(optax.adam(1e-3))
    chex.assert_trees_all_close(mine, adam, rtol=1e-5, atol=1e-6)
    assert state.per_leaf["w"].m.dtype == jnp.float32 and state.per_leaf["w"].m.shape == (4,)  # Adam's 8 bytes a coordinate


def test_it_meta_trains_by_pes_and_loads_by_path(tmp_path):
    options = l2lgd.RunOptions(checkpoint_every=10, chunk_size=10, validation_tasks=8, progress=False)
    result = l2lgd.train(CONFIG, tmp_path / "run", options)
    start = l2lgd.init_state(CONFIG).state.theta
    assert int(result.state.skipped) == 0
    assert not np.allclose(result.state.theta.w2, start.w2)  # the controller learned something
    tx = l2lgd.load_optimizer(tmp_path / "run", num_steps=50)
    _, _, losses = _run(tx)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    _, _, longer = _run(tx, steps=150)  # three times its num_steps: as at its end, no blow-up
    assert np.all(np.isfinite(longer)) and longer[-1] <= losses[-1] * 1.01


def test_its_step_size_stays_within_max_lr_and_the_config_names_a_bad_one():
    import dataclasses

    import pytest

    for max_lr in (1.0, 10.0):
        opt = l2lgd.make_optimizer(dataclasses.replace(CONFIG, max_lr=max_lr), key=jax.random.key(0))
        opt = dataclasses.replace(opt, b2=jnp.array([10.0, 0.0]))  # steer the step size up at every step
        _, state, _ = _run(l2lgd.as_optax(opt, num_steps=200), steps=200)
        np.testing.assert_allclose(float(jnp.exp(state.per_leaf["w"].log_lr)), max_lr, rtol=1e-5)
    assert "max_lr" not in l2lgd.Config(kind="adam_controller").to_dict()  # stored as before at its default
    with pytest.raises(ValueError, match="max_lr.*positive.*-1"):
        l2lgd.Config(kind="adam_controller", max_lr=-1)
