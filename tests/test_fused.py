"""The fused meta-gradient (hand-written LSTM backward pass) equals `jax.grad` of the generic unroll."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2lgd
from l2lgd.estimators._fused import make_fused_unroll, written_out
from l2lgd import init_state, make_meta_gradient, make_task_batch

BASE = l2lgd.Config(num_steps=6, hidden_size=5, batch_size=3, dim=3)

CASES = {
    "identity/sum": BASE,
    "log_rescale/end_log": BASE.replace(preprocessing="log_rescale", log_range=30.0, objective="end_log"),
    "log_rescale/first_order": BASE.replace(preprocessing="log_rescale", objective="end", second_order=False),
    "lr_ratio/sum_log": BASE.replace(preprocessing="lr_ratio", objective="sum_log"),
    "paper/one_layer": BASE.replace(task="paper_quadratic", preprocessing="paper", num_layers=1, log_range=10.0),
    "paper/three_layers": BASE.replace(task="paper_quadratic", preprocessing="paper", num_layers=3, log_range=10.0),
    "digits/minibatch": BASE.replace(task="digits", preprocessing="paper", log_range=10.0, mlp_hidden_units=(4,), minibatch=16),
    "moments/per_task_clip": BASE.replace(preprocessing="moments", per_task_clip=True, clip_norm=1e-3),
    "digits/per_task_clip": BASE.replace(task="digits", preprocessing="paper", log_range=10.0,
                                            mlp_hidden_units=(4,), minibatch=16, per_task_clip=True, clip_norm=1e-2),
}
LOOPS = ["written", "scan"]


def _estimator(config, fused: bool, loop: str = "auto"):
    """The estimator with the config's settings (`per_task_clip`, `second_order`)."""
    return l2lgd.FusedBackprop.from_config(config, loop=loop) if fused else l2lgd.Autodiff.from_config(config)


def _grads(config, fused, start_at_zero=False, loop="auto"):
    state, static = init_state(config)
    tasks = make_task_batch(config)(state.key, state.step)
    if start_at_zero:  # x0 = 0: every loss and gradient of the unroll is exactly 0
        tasks = (tasks[0], jnp.zeros_like(tasks[1]), *tasks[2:])
    return jax.jit(make_meta_gradient(config, static, estimator=_estimator(config, fused, loop)))(state.theta, tasks)


# The scan runs the same step functions as the written-out loop: a few cases cover it.
SCANNED = ("lr_ratio/sum_log", "paper/three_layers", "digits/per_task_clip")


@pytest.mark.parametrize("name, loop", [(name, "written") for name in CASES] + [(name, "scan") for name in SCANNED])
def test_fused_meta_gradient_equals_autodiff(name, loop):
    config = CASES[name]
    objective, finals, grads, carries = _grads(config, fused=True, loop=loop)
    ref_objective, ref_finals, ref_grads, ref_carries = _grads(config, fused=False)
    np.testing.assert_allclose(objective, ref_objective, rtol=1e-5)
    np.testing.assert_allclose(finals, ref_finals, rtol=1e-4)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
    assert scale > 0
    chex.assert_trees_all_close(grads, ref_grads, atol=1e-5 * scale, rtol=1e-4)
    chex.assert_trees_all_equal_structs(carries, ref_carries)
    chex.assert_trees_all_close(carries, ref_carries, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loop", LOOPS)
def test_fused_continues_a_truncated_unroll(loop):
    """From a carried optimizer state (with a preprocessing state) and a later start."""
    config = BASE.replace(task="paper_quadratic", preprocessing="lr_ratio", objective="sum_log")
    _, _, _, carries = _grads(config, fused=False)
    params, opt_states = carries
    state, static = init_state(config)
    loss_fn, _, keys = make_task_batch(config)(state.key, state.step)
    tasks = (loss_fn, params, keys)
    results = {}
    for fused in (True, False):
        fn = jax.jit(make_meta_gradient(config, static, estimator=_estimator(config, fused, loop)))
        results[fused] = fn(state.theta, tasks, opt_states, jnp.int32(config.num_steps))
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(results[False][2]))
    chex.assert_trees_all_close(results[True][2], results[False][2], atol=1e-5 * scale, rtol=1e-4)


def test_fused_losses_are_the_unroll_losses(tiny):
    config = tiny.replace(batch_size=2, preprocessing="log_rescale")
    state, static = init_state(config)
    tasks = make_task_batch(config)(state.key, state.step)
    losses, (params, _) = make_fused_unroll(config, static)(state.theta, tasks)
    chex.assert_shape(losses, (2, config.num_steps))
    loss = l2lgd.make_meta_loss(config.replace(objective="end"), static)
    for b in range(2):
        task = jax.tree.map(lambda x: x[b], tasks)
        final, (_, (ref_params, _)) = loss(state.theta, task)
        np.testing.assert_allclose(losses[b, -1], final, rtol=1e-5)
        np.testing.assert_allclose(params[b], ref_params, rtol=1e-5, atol=1e-7)


def test_long_unrolls_are_scanned_and_equal_autodiff():
    """Over `MAX_WRITTEN_STEPS` steps the default loop is the scan; its meta-gradient is autodiff's."""
    config = BASE.replace(num_steps=40, preprocessing="log_rescale", objective="sum_log", batch_size=2)
    assert written_out(20) and not written_out(config.num_steps)
    objective, _, grads, _ = _grads(config, fused=True)
    ref_objective, _, ref_grads, _ = _grads(config, fused=False)
    np.testing.assert_allclose(objective, ref_objective, rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
    chex.assert_trees_all_close(grads, ref_grads, atol=1e-5 * scale, rtol=1e-4)


def test_an_unknown_loop_is_refused(tiny):
    _, static = init_state(tiny)
    with pytest.raises(ValueError, match="loop must be"):
        make_fused_unroll(tiny, static, loop="python")


@pytest.mark.parametrize("preprocessing", ["lr_ratio", "log_rescale"])
def test_fused_meta_gradient_is_finite_at_exact_zero_losses(preprocessing):
    """The floor's regime: losses of exactly 0 give a finite meta-gradient, equal to autodiff's."""
    config = BASE.replace(preprocessing=preprocessing, objective="sum_log")
    objective, finals, grads, _ = _grads(config, fused=True, start_at_zero=True)
    assert np.all(finals == 0) and np.isfinite(objective)
    chex.assert_tree_all_finite(grads)
    chex.assert_trees_all_close(grads, _grads(config, fused=False, start_at_zero=True)[2], atol=1e-6)
