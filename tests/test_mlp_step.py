"""The per-coordinate MLP over Adam with a schedule of the training fraction: it starts as Adam, it
needs the steps the user will run and reads them, it stays finite on extreme gradients and past
its horizon, each PES task carries its own horizon, and it meta-trains through `l2lgd.train` and
loads by path."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd.tasks import training_family

CONFIG = l2lgd.Config(name="mlp", kind="mlp_step", hidden_size=4, estimator="pes", perturbations=2,
                      num_steps=10, horizon=20, objective="sum_log", meta_steps=10, meta_lr=1e-2)


def _params():
    return {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.3, -0.1])}


def _loss(p):
    return jnp.sum(jnp.square(p["w"])) + jnp.sum(jnp.square(p["b"] - 1.0))


def _run(tx, steps=50):
    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(_loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), (_loss(p), updates)

    params = _params()
    (params, state), (losses, updates) = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, state, losses, updates


def _randomized(opt, key):
    """`opt` with every weight drawn at random (its learned parts switched on)."""
    leaves, treedef = jax.tree.flatten(opt)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([w + 0.3 * jax.random.normal(k, w.shape) for k, w in zip(keys, leaves)])


def test_it_starts_as_adam_at_1e_3():
    opt = l2lgd.make_optimizer(CONFIG, key=jax.random.key(0))
    _, state, _, mine = _run(l2lgd.as_optax(opt, num_steps=50))
    _, _, _, adam = _run(optax.adam(1e-3))
    chex.assert_trees_all_close(mine, adam, rtol=1e-5, atol=1e-9)
    leaf = state.per_leaf["w"]  # three momenta and v: 16 bytes a coordinate
    assert (leaf.m.shape, leaf.v.shape, leaf.m.dtype) == ((3, 4), (4,), jnp.float32)


def test_it_needs_num_steps_and_reads_it():
    opt = _randomized(l2lgd.make_optimizer(CONFIG, key=jax.random.key(0)), jax.random.key(1))
    tx = l2lgd.as_optax(opt)
    with pytest.raises(ValueError, match="num_steps"):
        tx.update(jax.grad(_loss)(_params()), tx.init(_params()))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_steps"):
            l2lgd.as_optax(opt, num_steps=bad)
    _, _, _, short = _run(l2lgd.as_optax(opt, num_steps=10), steps=5)
    _, _, _, long = _run(l2lgd.as_optax(opt, num_steps=1000), steps=5)
    _, _, _, filled = _run(optax.GradientTransformation(
        lambda p: l2lgd.fill_horizon(tx.init(p), 10), tx.update), steps=5)
    assert not np.allclose(short["w"], long["w"])  # the training fraction reaches the update
    chex.assert_trees_all_close(filled, short)


@pytest.mark.parametrize("scale", [1e30, 1e-30, 0.0])
def test_it_stays_finite_on_extreme_gradients(scale):
    opt = _randomized(l2lgd.make_optimizer(CONFIG, key=jax.random.key(0)), jax.random.key(2))
    tx = l2lgd.as_optax(opt, num_steps=5)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    grads = {"w": scale * jnp.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]]), "b": jnp.array([scale, -scale, 1.0, 0.0])}
    state = tx.init(params)
    for _ in range(5):
        updates, state = tx.update(grads, state)
        chex.assert_tree_all_finite((updates, state))


def test_past_num_steps_it_stays_finite_and_keeps_descending():
    opt = _randomized(l2lgd.make_optimizer(CONFIG, key=jax.random.key(0)), jax.random.key(3))
    _, _, losses, updates = _run(l2lgd.as_optax(opt, num_steps=20), steps=60)  # 3x num_steps
    chex.assert_tree_all_finite((losses, updates))
    _, _, fresh, _ = _run(l2lgd.as_optax(l2lgd.make_optimizer(CONFIG, key=jax.random.key(0)), num_steps=20), steps=60)
    assert np.all(np.isfinite(fresh)) and fresh[-1] < fresh[0]


def test_each_pes_task_carries_its_own_horizon():
    estimator = l2lgd.estimator_for(CONFIG.replace(min_horizon=10, max_horizon=1000))
    theta, static = eqx.partition(l2lgd.make_optimizer(CONFIG, key=jax.random.key(0)), eqx.is_array)
    particles = estimator._fresh(CONFIG, static, theta, training_family(CONFIG), jax.random.key(4), 6, 10, 1000)
    horizons = np.asarray(particles.horizon, np.float32)
    assert len(set(horizons.tolist())) > 1
    np.testing.assert_array_equal(particles.opt_state.horizon, np.broadcast_to(horizons[:, None], (6, 4)))


def test_it_meta_trains_by_pes_and_loads_by_path(tmp_path):
    options = l2lgd.RunOptions(checkpoint_every=5, chunk_size=5, validation_tasks=8, progress=False)
    result = l2lgd.train(CONFIG, tmp_path / "run", options)
    start = l2lgd.init_state(CONFIG).state.theta
    assert int(result.state.skipped) == 0
    assert not np.allclose(result.state.theta.w2, start.w2)  # the network learned something
    with pytest.raises(ValueError, match="num_steps"):
        l2lgd.load_optimizer(tmp_path / "run")
    _, _, losses, _ = _run(l2lgd.load_optimizer(tmp_path / "run", num_steps=50))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
