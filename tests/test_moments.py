"""The `digits` design: the moments preprocessing (Adam's statistics in, direction and step size
out) and the digits task family's metrics."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

import l2lgd
from l2lgd import Moments

CONFIG = l2lgd.Config(
    task="digits", preprocessing="moments", objective="sum_log", mlp_hidden_units=(4,), minibatch=8,
    num_steps=3, horizon=6, hidden_size=4, batch_size=2, second_order=False,
)


def _optimizer(seed=0):
    return l2lgd.make_optimizer(CONFIG, key=jax.random.key(seed))


def test_zero_outputs_are_adam():
    """With the LSTM's outputs at 0 the update is Adam's, learning rate exp(lr_offset)."""
    t = Moments()
    adam = optax.adam(np.exp(t.lr_offset), b1=0.9, b2=0.999, eps=1e-8)
    g = jax.random.normal(jax.random.key(0), (4, 6))
    state, adam_state = t.init(6), adam.init(jnp.zeros(6))
    for gi in g:
        update, state = t.decode(jnp.zeros((6, 2)), gi, state)
        expected, adam_state = adam.update(gi, adam_state)
        np.testing.assert_allclose(update, expected, rtol=2e-5, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(value=st.sampled_from([0.0, 1e-30, 1e30, -1e30, 3.0]), seed=st.integers(0, 2**16))
def test_features_and_updates_stay_finite_at_extreme_gradients(value, seed):
    opt = _optimizer(seed)
    state = opt.init_state(5)
    g = jnp.full(5, value, jnp.float32)
    for _ in range(3):
        features = opt.preprocessing.encode(g, state[1])
        chex.assert_tree_all_finite(features)
        assert float(jnp.max(jnp.abs(features))) <= opt.preprocessing.f_max
        update, state = opt.step(g, state)
        chex.assert_tree_all_finite(update)
    if value == 0.0:  # no gradient ever: the Adam direction is 0, only the learned correction moves
        np.testing.assert_array_equal(features[:, :4], 0.0)


@settings(max_examples=10, deadline=None)
@given(scale_log=st.floats(-3, 6), seed=st.integers(0, 2**16))
def test_invariant_to_the_scale_of_the_loss(scale_log, seed):
    """Gradients multiplied by c > 0 give the same updates (Adam's normalization; eps = 1e-8).
    Exact but for eps / |c g|, so every |g| is at least 0.5: at c = 1e-3 that is at most 2e-5
    (a normal draw near 0 made it 0.2%, over the tolerance, at seed 7619)."""
    opt = _optimizer(seed)
    draw = jax.random.normal(jax.random.key(seed + 1), (3, 7))
    g = jnp.sign(draw) * (0.5 + jnp.abs(draw))
    c = np.float32(10.0**scale_log)
    s1, s2 = opt.init_state(7), opt.init_state(7)
    for gi in g:
        u1, s1 = opt.step(gi, s1)
        u2, s2 = opt.step(c * gi, s2)
        np.testing.assert_allclose(u1, u2, rtol=1e-3, atol=1e-7)  # exact but for eps / |g|


def test_any_pytree_through_the_optax_face_under_jit_and_vmap():
    tx = l2lgd.as_optax(_optimizer())
    params = {"w": jnp.ones((3, 2)), "b": [jnp.zeros(2), jnp.float32(0.5)]}
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"][0] - 1) ** 2) + p["b"][1] ** 2

    @jax.jit
    def run(params):
        state = tx.init(params)
        for _ in range(5):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
        return params

    out = run(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(out, params)
    assert float(loss(out)) < float(loss(params))
    batched = jax.vmap(run)(jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], batched), out, rtol=1e-5)


def test_meta_training_is_finite_at_exactly_zero_losses():
    """Tasks started at their optimum: every loss and gradient is 0 from the start."""
    config = CONFIG.replace(task="quadratic", dim=3, horizon=0)
    state, static = l2lgd.init_state(config)
    tasks = l2lgd.make_task_batch(config)(state.key, state.step)
    tasks = (tasks[0], jnp.zeros_like(tasks[1]), *tasks[2:])
    for fused in (True, False):
        objective, finals, grads, _ = jax.jit(l2lgd.make_meta_gradient(config, static, estimator=l2lgd.FusedBackprop.from_config(config) if fused else l2lgd.Autodiff.from_config(config)))(state.theta, tasks)
        chex.assert_tree_all_finite((objective, grads))
        np.testing.assert_array_equal(finals, 0.0)  # a coordinate never given a gradient never moves


def test_digits_metrics_are_test_loss_and_accuracy():
    family = l2lgd.Digits(hidden_units=(8,), minibatch=16)
    loss_fn, params = family.sample(jax.random.key(0))
    metrics = family.metrics(loss_fn, params)
    assert set(metrics) == {"train_loss", "test_loss", "test_accuracy"}
    np.testing.assert_allclose(metrics["test_loss"], np.log(10.0), rtol=0.2)  # a fresh MLP is near chance
    assert 0.0 <= float(metrics["test_accuracy"]) <= 1.0
    wine = l2lgd.Digits(hidden_units=(8,), dataset="wine")
    _, wine_params = wine.sample(jax.random.key(0))
    assert wine_params[0]["w"].shape == (13, 8) and wine_params[-1]["w"].shape == (8, 3)


def test_variants_batch_together_and_a_skipped_layer_gets_no_gradient():
    family = l2lgd.DigitsVariants(width=6, minibatch=16, p_deep=0.5, p_relu=0.5)
    keys = jax.random.split(jax.random.key(0), 16)
    losses, params = jax.vmap(family.sample)(keys)
    assert params[1]["w"].shape == (16, 6, 6)
    assert 0 < int(losses.deep.sum()) < 16 and 0 < int(losses.relu.sum()) < 16
    grads = jax.vmap(lambda l, p, k: jax.grad(l)(p, k))(losses, params, keys)
    shallow = ~np.asarray(losses.deep)
    np.testing.assert_array_equal(np.asarray(grads[1]["w"])[shallow], 0.0)
    assert float(jnp.abs(grads[1]["w"][np.asarray(losses.deep)]).max()) > 0


def test_train_task_trains_on_the_variants_and_selects_on_the_task(tmp_path):
    config = CONFIG.replace(train_task="digits_variants", meta_steps=4)
    result = l2lgd.train(config, tmp_path, l2lgd.RunOptions(checkpoint_every=2, progress=False, validation_tasks=4))
    assert result.config.task == "digits" and result.config.train_task == "digits_variants"
    assert len(result.state.inner.params) == 3  # the variants' three layers are in flight
    _, loaded, _ = l2lgd.load_learned_optimizer(tmp_path)
    assert loaded.task == "digits"
    with pytest.raises(ValueError, match=r"Config.train_task='nope' is not one of"):
        CONFIG.replace(train_task="nope")
