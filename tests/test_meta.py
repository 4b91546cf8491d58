import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import l2lgd
from l2lgd import make_meta_step, make_task_batch


def _chunk(config):
    state, static = l2lgd.init_state(config)
    return state, l2lgd.make_train_chunk(config, static)


def test_training_is_deterministic_and_independent_of_chunking(tiny):
    state, chunk = _chunk(tiny)
    whole, rec = chunk(state, 6)
    part, rec1 = chunk(state, 4)
    part, rec2 = chunk(part, 2)
    chex.assert_trees_all_equal(whole.theta, part.theta)
    np.testing.assert_array_equal(rec.final_log10, np.concatenate([rec1.final_log10, rec2.final_log10]))
    again, _ = _chunk(tiny)[1](state, 6)
    chex.assert_trees_all_equal(whole.theta, again.theta)
    assert int(whole.step) == 6


def test_training_changes_theta_and_stays_finite(tiny):
    state, chunk = _chunk(tiny)
    new, rec = chunk(state, 5)
    chex.assert_tree_all_finite(new.theta)
    assert not np.allclose(jax.tree.leaves(new.theta)[0], jax.tree.leaves(state.theta)[0])
    assert rec.final_log10.shape == (5,)
    assert int(new.skipped) == 0


def test_non_finite_guard_skips_an_injected_nan(tiny):
    state, static = l2lgd.init_state(tiny)
    step = jax.jit(make_meta_step(tiny, static))
    tasks = make_task_batch(tiny)(state.key, state.step)
    poisoned = (tasks[0], tasks[1].at[0, 0].set(jnp.nan))
    after, record = step(state, poisoned)
    assert bool(record.skipped) and int(after.skipped) == 1 and int(after.consecutive_skips) == 1
    chex.assert_trees_all_equal(after.theta, state.theta)
    chex.assert_trees_all_equal(after.opt_state, state.opt_state)
    after2, record2 = step(after, tasks)
    assert not bool(record2.skipped) and int(after2.consecutive_skips) == 0 and int(after2.skipped) == 1
    chex.assert_tree_all_finite(after2.theta)


def test_per_task_clip_is_the_mean_of_clipped_meta_gradients(tiny):
    config = tiny.replace(batch_size=4, per_task_clip=True, clip_norm=1e-3)
    state, static = l2lgd.init_state(config)
    tasks = make_task_batch(config)(state.key, state.step)
    _, _, clipped_mean, _ = l2lgd.make_meta_gradient(config, static)(state.theta, tasks)
    loss = l2lgd.make_meta_loss(config, static)
    expected = None
    for i in range(4):
        g = jax.grad(lambda t: loss(t, jax.tree.map(lambda a: a[i], tasks))[0])(state.theta)
        norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
        assert float(norm) > 1e-3  # so the clip is active for every task
        g = jax.tree.map(lambda x: x * 1e-3 / norm / 4, g)
        expected = g if expected is None else jax.tree.map(jnp.add, expected, g)
    chex.assert_trees_all_close(clipped_mean, expected, rtol=1e-4, atol=1e-9)
    _, _, plain_mean, _ = l2lgd.make_meta_gradient(config.replace(per_task_clip=False), static)(state.theta, tasks)
    assert not np.allclose(jax.tree.leaves(plain_mean)[0], jax.tree.leaves(clipped_mean)[0])
