import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2lgd


def test_losses_are_recorded_before_each_update():
    loss_fn, x0 = l2lgd.sample_quadratic(jax.random.key(3), 2)
    losses = l2lgd.unroll(l2lgd.reference_sgd(0.1), loss_fn, x0, 20)
    assert losses.shape == (20,)
    np.testing.assert_allclose(losses[0], loss_fn(x0), rtol=1e-6)
    x = x0
    for _ in range(19):
        x = x - 0.1 * jax.grad(loss_fn)(x)
    np.testing.assert_allclose(losses[-1], loss_fn(x), rtol=1e-5)  # the "final loss" is f(x_19)


def test_task_family_ranges():
    loss_fn, x0 = jax.vmap(lambda k: l2lgd.sample_quadratic(k, 2))(jax.random.split(jax.random.key(0), 1000))
    assert 0.5 <= float(loss_fn.scale.min()) and float(loss_fn.scale.max()) <= 1.5
    assert -1.0 <= float(x0.min()) and float(x0.max()) <= 1.0


def test_vmapped_batch_equals_loop(tiny):
    state, static = l2lgd.init_state(tiny)
    loss = l2lgd.make_meta_loss(tiny, static)
    tasks = jax.vmap(lambda k: l2lgd.sample_quadratic(k, 2))(jax.random.split(jax.random.key(1), 4))
    batched = jax.vmap(loss, in_axes=(None, 0))(state.theta, tasks)
    for i in range(4):
        single = loss(state.theta, jax.tree.map(lambda a: a[i], tasks))
        np.testing.assert_allclose(batched[0][i], single[0], rtol=1e-5)
        np.testing.assert_allclose(batched[1][0][i], single[1][0], rtol=1e-5)
        np.testing.assert_allclose(batched[1][1][0][i], single[1][1][0], rtol=1e-5)


@pytest.mark.parametrize("objective", ["sum", "end", "end_log"])
def test_meta_gradient_is_finite_and_matches_finite_differences(tiny, objective):
    config = tiny.replace(objective=objective)
    with jax.enable_x64(True):
        state, static = l2lgd.init_state(config)
        theta = jax.tree.map(lambda w: w.astype(jnp.float64), state.theta)
        loss = l2lgd.make_meta_loss(config, static)
        task = jax.tree.map(lambda a: a.astype(jnp.float64), l2lgd.sample_quadratic(jax.random.key(5), 2))
        f = lambda t: loss(t, task)[0]
        grad = jax.grad(f)(theta)
        jax.tree.map(lambda g: np.testing.assert_array_equal(np.isfinite(g), True), grad)
        direction = jax.tree.map(lambda w: jax.random.normal(jax.random.key(7), w.shape, w.dtype), theta)
        eps = 1e-5
        shifted = lambda s: jax.tree.map(lambda w, d: w + s * eps * d, theta, direction)
        numeric = (f(shifted(1.0)) - f(shifted(-1.0))) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


def test_second_order_flag_drops_the_terms_through_the_gradient(tiny):
    task = l2lgd.sample_quadratic(jax.random.key(2), 2)
    grads = {}
    for flag in (True, False):
        config = tiny.replace(second_order=flag, objective="end")
        state, static = l2lgd.init_state(config)
        grads[flag] = jax.grad(lambda t: l2lgd.make_meta_loss(config, static)(t, task)[0])(state.theta)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads[True]), jax.tree.leaves(grads[False])))
    assert diff > 1e-6


def test_safe_log_is_finite_at_zero_and_has_no_gradient_there():
    assert np.isfinite(l2lgd.safe_log(jnp.float32(0.0)))
    assert float(jax.grad(l2lgd.safe_log)(jnp.float32(0.0))) == 0.0
    np.testing.assert_allclose(jax.grad(l2lgd.safe_log)(jnp.float32(1e-20)), 1e20, rtol=1e-5)


def test_log10_loss_survives_underflow():
    values = l2lgd.log10_loss(jnp.array([0.0, 1e-30, 1.0], jnp.float32))
    np.testing.assert_allclose(values, [-38.0, -30.0, 0.0], rtol=1e-6)


def test_truncated_unroll_with_one_truncation_equals_the_full_unroll(tiny):
    full = tiny.replace(objective="sum")
    truncated = full.replace(horizon=full.num_steps)  # one truncation: the same computation
    assert truncated.truncations == 1
    a, _ = l2lgd.make_train_chunk(full, l2lgd.init_state(full)[1])(l2lgd.init_state(full)[0], 3)
    b, _ = l2lgd.make_train_chunk(truncated, l2lgd.init_state(truncated)[1])(l2lgd.init_state(truncated)[0], 3)
    import chex

    chex.assert_trees_all_close(a.theta, b.theta, rtol=1e-6)


def test_truncations_continue_where_the_last_one_stopped(tiny):
    # Two truncations of 5 steps from the carried state = one unroll of 10 steps.
    config = tiny.replace(horizon=10, objective="sum")
    state, static = l2lgd.init_state(config)
    tx = l2lgd.as_optax(eqx.combine(state.theta, static))
    inner = jax.tree.map(lambda a: a[0], state.inner)
    full = l2lgd.unroll(tx, inner.loss_fn, inner.params, 10)
    loss = l2lgd.make_meta_loss(config, static)
    _, (_, carry) = loss(state.theta, (inner.loss_fn, inner.params))
    first = l2lgd.unroll(tx, inner.loss_fn, inner.params, 5)
    _, (last, _) = loss(state.theta, (inner.loss_fn, carry[0]), carry[1], 5)
    np.testing.assert_allclose(first, full[:5], rtol=1e-6)
    np.testing.assert_allclose(last, full[-1], rtol=1e-5)


def test_a_task_family_vmaps():
    from l2lgd.tasks._mlp import sample_digits
    from l2lgd.tasks._quadratic import sample_paper_quadratic

    keys = jax.random.split(jax.random.key(0), 3)
    tasks, theta0 = jax.vmap(lambda k: sample_paper_quadratic(k, 10))(keys)
    assert tasks.w.shape == (3, 10, 10) and theta0.shape == (3, 10)
    losses = jax.vmap(lambda t, x: t(x))(tasks, theta0)
    assert losses.shape == (3,) and bool(jnp.all(losses > 0))
    loss_fn, params = jax.vmap(lambda k: sample_digits(k, (20,), "sigmoid", 16))(keys)
    assert params[0]["w"].shape == (3, 64, 20)
    values = jax.vmap(loss_fn, in_axes=(0, 0))(params, keys)
    np.testing.assert_allclose(values, np.log(10.0), rtol=0.2)  # a fresh MLP is near chance
