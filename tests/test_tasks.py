"""The paper's task families and truncated meta-training."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import l2lgd
from l2lgd import task_keys, run_optimizer

DIGITS = l2lgd.Config(
    task="digits", mlp_hidden_units=(4,), minibatch=8, num_steps=2, horizon=4, hidden_size=4, batch_size=2,
    preprocessing="paper", log_range=10.0, second_order=False,
)


def test_digits_is_learnable_by_sgd():
    losses = run_optimizer(optax.sgd(2.0), DIGITS.replace(mlp_hidden_units=(20,), minibatch=64, num_steps=20, horizon=100), task_keys(0, 4))
    assert losses.shape == (4, 100)
    assert losses[:, :5].mean() > 2.0 and losses[:, -5:].mean() < 0.6 * losses[:, :5].mean() / 2


def test_truncated_training_carries_and_resets_tasks():
    state, static = l2lgd.init_state(DIGITS)
    chunk = l2lgd.make_train_chunk(DIGITS, static)
    start_params = state.inner.params
    one, _ = chunk(state, 1)  # first truncation of the first tasks: params move on
    assert not np.allclose(one.inner.params[0]["w"], start_params[0]["w"])
    two, _ = chunk(one, 1)  # second truncation: continues from `one`
    three, rec = chunk(two, 1)  # step 2 % 2 == 0: fresh tasks, drawn at step 2
    fresh = l2lgd.make_task_batch(DIGITS)(state.key, jnp.int32(2))[1]
    tx = l2lgd.as_optax(eqx.combine(two.theta, static))
    # The third step starts from the fresh tasks' params, not from the carried ones.
    _, (_, carry) = jax.vmap(l2lgd.make_meta_loss(DIGITS, static), in_axes=(None, 0, 0, None))(
        two.theta, (three.inner.loss_fn, fresh, three.inner.key), jax.vmap(tx.init)(fresh), 0
    )
    chex.assert_trees_all_close(carry[0], three.inner.params, rtol=1e-5, atol=1e-6)
    chex.assert_tree_all_finite((three.theta, three.inner.params, rec.final_log10))
