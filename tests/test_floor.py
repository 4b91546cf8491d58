"""The `floor` design: the lr_ratio preprocessing and the sum_log objective at exact zeros."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings

import l2lgd
from l2lgd import LearningRateRatio

FLOOR = l2lgd.Config(preprocessing="lr_ratio", objective="sum_log", num_steps=6, hidden_size=4, batch_size=4, per_task_clip=True)


def test_features_are_ratios_and_the_step_is_a_learning_rate():
    t = LearningRateRatio()
    state = t.init(3)
    g1 = jnp.array([1.0, -2.0, 0.5])
    f1 = t.encode(g1, state)
    np.testing.assert_array_equal(f1[:, 0], 0.0)  # no previous gradient
    np.testing.assert_array_equal(f1[:, 2], 1.0)  # first-step flag
    out = jnp.array([[0.0], [1.0], [-1.0]])
    u1, state = t.decode(out, g1, state)
    np.testing.assert_allclose(u1, -np.exp(np.array([0.0, 1.0, -1.0]) - 2.0) * g1, rtol=1e-6)
    g2 = jnp.array([0.5, 8.0, 0.25])
    f2 = t.encode(g2, state)
    np.testing.assert_allclose(f2[:, 0], [0.5, -2.0, 0.5], rtol=1e-6)  # -4 clipped to -2
    np.testing.assert_allclose(f2[:, 1], (np.array([0.0, 1.0, -1.0])) / 10.0, rtol=1e-6)
    np.testing.assert_array_equal(f2[:, 2], 0.0)


@settings(max_examples=20, deadline=None)
@given(scale_log=st.floats(-30, 10), seed=st.integers(0, 2**16))
def test_scale_free(scale_log, seed):
    # Multiplying every gradient by c leaves the features unchanged and multiplies steps by c.
    opt = l2lgd.make_optimizer(FLOOR, key=jax.random.key(seed))
    g = jax.random.normal(jax.random.key(seed + 1), (2, 5))
    c = np.float32(10.0**scale_log)
    s1, s2 = opt.init_state(5), opt.init_state(5)
    for t in range(2):
        u1, s1 = opt.step(g[t], s1)
        u2, s2 = opt.step(g[t] * c, s2)
        np.testing.assert_allclose(u2, u1 * c, rtol=2e-4)


def test_zero_gradients_give_zero_steps_and_no_nan():
    opt = l2lgd.make_optimizer(FLOOR, key=jax.random.key(0))
    state = opt.init_state(3)
    u, state = opt.step(jnp.array([1.0, 0.0, 1e-30]), state)
    assert float(u[1]) == 0.0 and float(u[0]) != 0.0
    for g in (jnp.zeros(3), jnp.array([0.5, 1e-38, 0.0])):  # 0/0 and x/0 ratios
        u, state = opt.step(g, state)
        chex.assert_tree_all_finite((u, state))
        np.testing.assert_array_equal(np.asarray(u)[np.asarray(g) == 0], 0.0)


def test_no_nan_when_losses_are_exactly_zero():
    state, static = l2lgd.init_state(FLOOR)
    loss = l2lgd.make_meta_loss(FLOOR, static)
    scale = jnp.ones((4, 2))
    x0 = jnp.zeros((4, 2)).at[0].set(1e-25)  # one task underflows at once, three start at 0
    tasks = (l2lgd.Quadratic(scale), x0)
    value, grads = jax.value_and_grad(lambda t: jnp.mean(jax.vmap(loss, in_axes=(None, 0))(t, tasks)[0]))(state.theta)
    chex.assert_tree_all_finite((value, grads))
    step = jax.jit(l2lgd.make_meta_step(FLOOR, static))
    new, record = step(state, tasks)
    assert not bool(record.skipped)
    chex.assert_tree_all_finite(new.theta)
    np.testing.assert_allclose(record.final_log10, -38.0)
