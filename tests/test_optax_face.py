from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd import task_keys
from l2lgd._evaluate import unroll_losses


@pytest.fixture(scope="module")
def opt():
    return l2lgd.make_optimizer(l2lgd.Config(preprocessing="log_rescale", log_range=30.0), key=jax.random.key(4))


def _params():
    return {"layer": {"w": jnp.ones((3, 2)) * 0.3, "b": jnp.zeros(2)}, "scale": jnp.float32(0.7)}


def _loss(p):
    return jnp.sum(p["layer"]["w"] ** 2) + jnp.sum((p["layer"]["b"] - 1) ** 2) + p["scale"] ** 2


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "log30"


def test_nested_pytree_under_jit_traced_once():
    tx = l2lgd.load_optimizer(SHIPPED)
    params = _params()
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    losses = []
    for _ in range(19):
        params, state = step(params, state)
        losses.append(float(_loss(params)))
    chex.assert_trees_all_equal_shapes_and_dtypes(params, _params())
    assert losses[-1] < 1e-6 * float(_loss(_params())), losses


def test_every_coordinate_is_a_row(opt):
    # The update of a leaf equals the learned step on its flattened coordinates.
    tx = l2lgd.as_optax(opt)
    g = {"a": jnp.arange(6.0).reshape(2, 3) - 2.5, "s": jnp.float32(0.1)}
    updates, _ = tx.update(g, tx.init(g))
    ref, _ = opt.step(g["a"].reshape(-1), opt.init_state(6))
    np.testing.assert_allclose(updates["a"], ref.reshape(2, 3), rtol=1e-6)
    assert updates["s"].shape == ()


def test_vmap_and_chain(opt):
    tx = optax.chain(optax.clip(10.0), l2lgd.as_optax(opt))
    params = jax.vmap(lambda k: {"x": jax.random.normal(k, (4,))})(jax.random.split(jax.random.key(0), 5))
    grads = jax.tree.map(lambda x: 2 * x, params)
    updates, _ = jax.vmap(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    single, _ = tx.update({"x": grads["x"][1]}, tx.init({"x": params["x"][1]}))
    np.testing.assert_allclose(updates["x"][1], single["x"], rtol=1e-6)


def test_float64_leaves_keep_their_dtype(opt):
    with jax.enable_x64(True):
        tx = l2lgd.as_optax(opt)
        params = {"x": jnp.ones(3, jnp.float64), "y": jnp.ones(2, jnp.float32)}
        updates, state = tx.update(params, tx.init(params))
        assert updates["x"].dtype == jnp.float64 and updates["y"].dtype == jnp.float32
        chex.assert_tree_all_finite(updates)


@pytest.mark.parametrize("leaf", [jnp.arange(3), jnp.array([True, False])])
def test_integer_and_boolean_leaves_are_refused_by_path(opt, leaf):
    tx = l2lgd.as_optax(opt)
    with pytest.raises(TypeError, match=r"\['bad'\]"):
        tx.init({"good": jnp.ones(2), "bad": leaf})


def test_driving_by_hand_matches_the_training_unroll(opt):
    config = l2lgd.Config(preprocessing="log_rescale", log_range=30.0)
    keys = task_keys(11, 8)
    trained_losses = unroll_losses(l2lgd.as_optax(opt), config, keys)
    tx = l2lgd.as_optax(opt)
    for i in range(8):
        loss_fn, x = l2lgd.sample_quadratic(keys[i], 2)
        state = tx.init(x)
        by_hand = []
        for _ in range(20):
            by_hand.append(loss_fn(x))
            updates, state = tx.update(jax.grad(loss_fn)(x), state, x)
            x = optax.apply_updates(x, updates)
        np.testing.assert_allclose(np.log10(np.array(by_hand) + 1e-38), np.log10(np.asarray(trained_losses[i]) + 1e-38), atol=1e-3)


@pytest.mark.parametrize("preprocessing", ["log_rescale", "moments", "lr_ratio", "adaptive"])
def test_a_large_leaf_is_updated_block_by_block_with_the_same_result(preprocessing, monkeypatch):
    """Over 2 * BLOCK coordinates `update` runs in blocks (a `fori_loop` over the full blocks, then the rest); the result is the plain step's."""
    from l2lgd.optimizers import _optax_face

    monkeypatch.setattr(_optax_face, "BLOCK", 16)
    config = l2lgd.Config(preprocessing=preprocessing, hidden_size=4)
    opt = l2lgd.make_optimizer(config, key=jax.random.key(0))
    tx = l2lgd.as_optax(opt)
    params = {"w": jnp.linspace(-1.0, 1.0, 70).reshape(7, 10)}  # 70 coordinates: 5 blocks, the last padded
    state = tx.init(params)
    for i in range(3):
        grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1)), params)
        updates, new_state = tx.update(grads, state)
        ref_update, ref_state = opt.step(grads["w"].reshape(-1), state.per_leaf["w"])
        np.testing.assert_allclose(updates["w"].reshape(-1), ref_update, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(new_state.per_leaf["w"], ref_state, rtol=1e-6, atol=1e-7)
        state = new_state


@pytest.mark.parametrize("hidden_size, num_layers", [(4, 1), (20, 2)])
def test_elementwise_products_are_the_matrix_products_within_rounding(hidden_size, num_layers):
    lstm = l2lgd.make_optimizer(l2lgd.Config(preprocessing="adaptive", hidden_size=hidden_size, num_layers=num_layers),
                                key=jax.random.key(1)).lstm
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    features = jax.random.normal(k1, (50, lstm.in_kernel.shape[0]))
    state = type(lstm.init_state(50))(jax.random.normal(k2, (num_layers, 50, hidden_size)),
                                      jax.random.normal(k3, (num_layers, 50, hidden_size)))
    chex.assert_trees_all_close(lstm(features, state, elementwise=True), lstm(features, state), rtol=1e-5, atol=1e-6)


def test_only_a_model_sized_update_of_a_small_lstm_runs_elementwise(monkeypatch):
    """Updates of at most 2 * BLOCK coordinates in all (meta-training's) are bit for bit the
    plain step's; a larger one of a small LSTM runs the elementwise products, within rounding."""
    from l2lgd.optimizers import _lstm_optimizer, _optax_face

    monkeypatch.setattr(_optax_face, "BLOCK", 16)
    monkeypatch.setattr(_lstm_optimizer, "ELEMENTWISE_MIN_COORDINATES", 32)
    small = l2lgd.make_optimizer(l2lgd.Config(preprocessing="adaptive", hidden_size=4, num_layers=1), key=jax.random.key(0))
    large = l2lgd.make_optimizer(l2lgd.Config(hidden_size=20), key=jax.random.key(0))
    assert not small.runs_elementwise(32) and small.runs_elementwise(33)
    assert not large.runs_elementwise(10**6)
    tx = l2lgd.as_optax(small)
    for leaves in ({"a": jnp.linspace(-1.0, 1.0, 20), "b": jnp.linspace(0.0, 2.0, 12)},  # 32: plain
                   {"a": jnp.linspace(-1.0, 1.0, 20), "b": jnp.linspace(0.0, 2.0, 30)}):  # 50: elementwise
        updates, _ = tx.update(leaves, tx.init(leaves))
        for name, g in leaves.items():
            ref, _ = small.step(g, small.init_state(g.size))
            if sum(x.size for x in leaves.values()) <= 32:
                chex.assert_trees_all_equal(updates[name], ref)
            else:
                np.testing.assert_allclose(updates[name], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["general", "digits"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_poisons_its_coordinate_as_adam_does(name, bad):
    """One NaN or Inf in a gradient: the coordinate's update and state become NaN, visibly (the
    others go on), as with optax's Adam; before, the coordinate froze (NaN) or moved uphill (Inf)."""
    loss = lambda w: jnp.sum(w**2)

    def run(tx, steps=30):
        def step(carry, i):
            w, state = carry
            g = jax.grad(loss)(w)
            g = g.at[2].set(jnp.where(i == 5, bad, g[2]))
            updates, state = tx.update(g, state, w)
            return (optax.apply_updates(w, updates), state), None

        w = jnp.array([3.0, -2.0, 1.5])
        (w, _), _ = jax.jit(lambda w: jax.lax.scan(step, (w, tx.init(w)), jnp.arange(steps)))(w)
        return np.asarray(w)

    for tx in (l2lgd.load_optimizer(name, num_steps=30), optax.adam(1e-2)):
        w = run(tx)
        assert np.isnan(w[2]) and np.all(np.isfinite(w[:2])), w
    guarded = run(optax.apply_if_finite(l2lgd.load_optimizer(name, num_steps=300), max_consecutive_errors=5), steps=300)
    assert np.all(np.isfinite(guarded)) and float(loss(guarded)) < 1e-2
