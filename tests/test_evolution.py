"""Evolution estimators (PES, antithetic ES): unbiased against the exact meta-gradient of a full
unroll, antithetic cancellation, particles and horizons, and meta-training through them."""

import functools

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd.estimators._es import AntitheticES
from l2lgd.estimators._evolution import draw_horizons
from l2lgd.estimators._pes import PES
from l2lgd.tasks import draw_task
from l2lgd.tasks._mixture import FamilyMixture

# A tiny LSTM (1 layer of 2 units) on 2-D quadratics: a horizon of 10 steps in 2 truncations.
CONFIG = l2lgd.Config(name="evo", hidden_size=2, num_layers=1, num_steps=5, horizon=10, objective="sum",
                      estimator="pes", sigma=1e-3, perturbations=2_000, batch_size=1)
ROUNDS = 8  # independent estimates: their spread gives the standard error of the mean


@functools.lru_cache(maxsize=None)  # shared by the tests that compare the same estimate
def _exact_and_estimates(estimator, config, truncations):
    state, static = l2lgd.init_state(config.replace(estimator="autodiff"))
    theta = state.theta
    family = l2lgd.tasks.task_family(config)
    exact_config = config.replace(num_steps=config.num_steps * truncations, horizon=0, estimator="autodiff")

    task_key = jax.random.key(3)  # one task; each round draws its own perturbations
    particles = estimator.init_particles(config, static, theta, family, task_key, 1, config.steps_per_task)
    particles = estimator.refresh(config, static, theta, family, task_key, particles, config.steps_per_task)

    @jax.jit
    def one(noise_key):
        state, total = particles, jax.tree.map(jnp.zeros_like, theta)
        for i in range(truncations):
            result = estimator.particle_step(config, static, theta, state, jax.random.fold_in(noise_key, i), False)
            state, total = result.particles, jax.tree.map(jnp.add, total, result.grads)
        return total

    estimates = jax.vmap(one)(jax.random.split(jax.random.key(4), ROUNDS))
    # The same task, drawn as `refresh` drew it.
    task = draw_task(family, jax.random.split(jax.random.split(task_key)[0], 1)[0])
    exact = jax.grad(lambda th: l2lgd.make_meta_loss(exact_config, static)(th, task)[0])(theta)
    flat = lambda tree, lead: np.concatenate([np.asarray(x).reshape(*lead, -1) for x in jax.tree.leaves(tree)], axis=-1)
    return flat(estimates, (ROUNDS,)), flat(exact, ())


def _assert_within_error(estimates, exact, z=5.0):
    mean = estimates.mean(0)
    error = estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    # Every coordinate within z standard errors, and the whole vector close in direction.
    assert np.all(np.abs(mean - exact) <= z * error + 1e-3 * np.abs(exact).max()), (mean, exact, error)
    cosine = mean @ exact / (np.linalg.norm(mean) * np.linalg.norm(exact))
    assert cosine > 0.97, cosine


def test_pes_is_unbiased_over_truncations():
    """PES over 2 truncations estimates the exact gradient of the whole 10-step unroll."""
    estimates, exact = _exact_and_estimates(PES.from_config(CONFIG), CONFIG, truncations=2)
    _assert_within_error(estimates, exact)


def test_es_on_one_truncation_estimates_the_full_unroll():
    """With one truncation covering the horizon, antithetic ES estimates the exact gradient."""
    config = CONFIG.replace(num_steps=10, estimator="es")
    estimates, exact = _exact_and_estimates(AntitheticES.from_config(config), config, truncations=1)
    _assert_within_error(estimates, exact)


def test_truncated_es_misses_what_pes_keeps():
    """Over 2 truncations ES drops the dependence of the second on theta through the first: its
    estimate moves away from the exact gradient, by more than PES's does."""
    es, exact = _exact_and_estimates(AntitheticES.from_config(CONFIG), CONFIG.replace(estimator="es"), truncations=2)
    pes, _ = _exact_and_estimates(PES.from_config(CONFIG), CONFIG, truncations=2)
    assert np.linalg.norm(es.mean(0) - exact) > 2 * np.linalg.norm(pes.mean(0) - exact)


def test_antithetic_pairs_cancel_a_constant():
    """A loss that theta cannot change gives an estimate of exactly zero: every pair's
    difference cancels (the objective's constant part never enters the estimate)."""

    class Flat(l2lgd.TaskFamily):
        def sample(self, key):
            return _Constant(), {"x": jnp.ones(3)}

    state, static = l2lgd.init_state(CONFIG.replace(estimator="autodiff"))
    family = Flat()
    pes = PES(pairs=16)
    particles = pes.init_particles(CONFIG, static, state.theta, family, jax.random.key(0), 2, 10)
    particles = pes.refresh(CONFIG, static, state.theta, family, jax.random.key(1), particles, 10)
    result = pes.particle_step(CONFIG, static, state.theta, particles, jax.random.key(2), False)
    chex.assert_trees_all_equal(result.grads, jax.tree.map(jnp.zeros_like, state.theta))
    assert float(result.objective) == pytest.approx(5 * 7.0)


class _Constant(eqx.Module):
    def __call__(self, params, key=None):
        return 7.0 + 0.0 * jnp.sum(params["x"])


def test_non_finite_particles_contribute_nothing_and_are_redrawn():
    """A task whose particles diverge is dropped from the estimate and drawn afresh."""

    class Exploding(eqx.Module):
        def __call__(self, params, key=None):
            return jnp.sum(jnp.exp(1e3 * params["x"]))

    class Boom(l2lgd.TaskFamily):
        def sample(self, key):
            return Exploding(), {"x": jnp.ones(2)}

    state, static = l2lgd.init_state(CONFIG.replace(estimator="autodiff"))
    pes = PES(pairs=2)
    particles = pes.init_particles(CONFIG, static, state.theta, Boom(), jax.random.key(0), 1, 10)
    particles = pes.refresh(CONFIG, static, state.theta, Boom(), jax.random.key(1), particles, 10)
    result = pes.particle_step(CONFIG, static, state.theta, particles, jax.random.key(2), False)
    chex.assert_tree_all_finite(result.grads)
    assert float(result.usable) == 0.0
    assert int(result.particles.t[0]) >= int(result.particles.horizon[0])  # due for a fresh draw


def test_horizons_are_log_uniform_whole_truncations():
    h = np.asarray(draw_horizons(jax.random.key(0), 4000, 100, 2000, 20))
    assert h.min() >= 100 and h.max() <= 2000 and np.all(h % 20 == 0)
    # log-uniform: the median is near the geometric mean, sqrt(100 * 2000) ~ 447
    assert 380 < np.median(h) < 520


def test_mixture_meta_trains_and_resumes_identically(tmp_path):
    """Meta-training a two-family mixture by PES through `l2lgd.train` (the driver): finite, and a
    run stopped after its first snapshot and resumed ends with the uninterrupted run's weights."""
    family = FamilyMixture(
        (l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.LinearRegression(4, 3.0, 8, 20)), ("quad", "linreg")
    )
    config = l2lgd.Config(name="mix", hidden_size=2, num_layers=1, num_steps=5, estimator="pes", perturbations=2,
                          min_horizon=10, max_horizon=20, heldout_minibatch=True, objective="sum_log", meta_steps=8)
    options = l2lgd.RunOptions(checkpoint_every=4, validation_tasks=2, progress=False)
    whole = l2lgd.train(config, tmp_path / "whole", options, family=family)
    l2lgd.train(config.replace(meta_steps=4), tmp_path / "parts", options, family=family)
    resumed = l2lgd.train(config, tmp_path / "parts", options, family=family)
    chex.assert_tree_all_finite(whole.state.theta)
    chex.assert_trees_all_equal(whole.state.theta, resumed.state.theta)
    assert int(whole.state.step) == 8
    # The resumed run's last snapshot records the training seconds of both parts, not its own.
    from l2lgd.runs._snapshots import RunCheckpoints

    parts = RunCheckpoints(tmp_path / "parts")
    first, last = (parts.metrics(step)["train_seconds"] for step in (4, 8))
    parts.close()
    assert 0 < first < last and last == pytest.approx(first + resumed.train_time)
    tx = l2lgd.load_optimizer(tmp_path / "whole")
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}))
    chex.assert_tree_all_finite(updates)


def test_member_horizon_shorter_than_a_truncation_is_refused():
    with pytest.raises(ValueError, match="shorter than one truncation"):
        PES().member_horizon(l2lgd.Config(num_steps=50, estimator="pes"), l2lgd.ConditionedQuadratics(4, 10.0, 20))


@pytest.mark.parametrize("changes, match", [
    ({"estimator": "pes", "perturbations": 0}, "perturbations"),
    ({"estimator": "es", "sigma": 0.0}, "sigma"),
    ({"estimator": "pes", "min_horizon": 10, "max_horizon": 100}, "shorter than one truncation"),
    ({"estimator": "pes", "min_horizon": 200, "max_horizon": 100}, "min_horizon"),
    ({"estimator": "fused", "heldout_minibatch": True}, "evolution estimator"),
    ({"estimator": "sgd"}, "estimator"),
])
def test_bad_estimator_settings_fail_early(changes, match):
    with pytest.raises(ValueError, match=match):
        l2lgd.Config(num_steps=20, **changes)


def test_estimator_settings_validated():
    with pytest.raises(ValueError, match="pairs"):
        PES(pairs=0)
    with pytest.raises(ValueError, match="sigma"):
        AntitheticES(sigma=-1.0)


@pytest.mark.parametrize("preprocessing", ["general", "adaptive"])
@pytest.mark.parametrize("value", [0.0, 1e-30, -1e-30, 1e30, -1e30, 3e38])
def test_general_features_and_updates_are_finite_at_extreme_gradients(value, preprocessing):
    """The `general` and `adaptive` preprocessings' features and update stay finite at zero, tiny
    and huge gradients, and a huge gradient never moves its coordinate uphill."""
    config = l2lgd.Config(preprocessing=preprocessing, hidden_size=4, num_layers=1)
    opt = l2lgd.make_optimizer(config, key=jax.random.key(0))
    g = jnp.full(5, value, jnp.float32)
    state = opt.init_state(5)
    features = opt.preprocessing.encode(g, state[1])
    chex.assert_tree_all_finite(features)
    for _ in range(3):
        update, state = opt.step(g, state)
        chex.assert_tree_all_finite((update, state))
    if abs(value) >= 1e30:
        assert np.all(np.sign(np.asarray(update)) * np.sign(value) <= 0)


@pytest.mark.parametrize("preprocessing", ["general", "adaptive"])
def test_any_pytree_through_the_general_face(preprocessing):
    """Nested dicts, lists and tuples of leaves of any shape (scalars too) and float dtypes."""
    config = l2lgd.Config(preprocessing=preprocessing, hidden_size=4, num_layers=1)
    opt = l2lgd.make_optimizer(config, key=jax.random.key(0))
    tx = l2lgd.as_optax(opt)
    params = {"a": [jnp.ones((2, 3)), (jnp.zeros(()), jnp.ones(4, jnp.bfloat16))], "b": {"c": jnp.ones((1, 1, 2))}}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(params, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
    chex.assert_tree_all_finite(updates)


def test_adaptive_step_size_starts_as_adam_and_moves_within_bounds():
    """`adaptive` with LSTM outputs 0 is Adam at exp(lr_offset); its carried log step size moves
    by at most inc_max per step beside its leak towards lr_offset, and stays within
    [log_lr_min, log_lr_max]."""
    t = l2lgd.make_preprocessing("adaptive")
    decode = jax.jit(lambda out, g, state: t.decode(out, g, state))
    adam = optax.adam(np.exp(t.lr_offset), b1=0.9, b2=0.999, eps=1e-8)
    g = jax.random.normal(jax.random.key(0), (30, 6))
    state, adam_state = t.init(6), adam.init(jnp.zeros(6))
    for gi in g[:4]:
        update, state = t.decode(jnp.zeros((6, 3)), gi, state)
        expected, adam_state = adam.update(gi, adam_state)
        np.testing.assert_allclose(update, expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(state.log_lr, t.lr_offset)
    for sign, bound in ((1.0, t.log_lr_max), (-1.0, t.log_lr_min)):
        state = t.init(6)
        previous = np.asarray(state.log_lr)
        for i in range(400):
            _, state = decode(jnp.full((6, 3), 100.0 * sign), g[i % 30], state)
            now = np.asarray(state.log_lr)
            leak = (1 - t.rho) * np.abs(previous - t.lr_offset)
            assert np.all(np.abs(now - previous) <= (t.inc_max + leak) * (1 + 1e-5))
            previous = now
        np.testing.assert_allclose(now, bound, rtol=1e-6)
        features = t.encode(g[0], state)
        chex.assert_tree_all_finite(features)
        np.testing.assert_allclose(features[:, -1], (bound - t.lr_offset) / 5.0, rtol=1e-5)


def test_the_estimator_interface_gives_a_meta_gradient_of_theta():
    """`make_meta_gradient(..., estimator=PES())` on a batch of fresh tasks: theta's structure,
    finite, one final loss per task, and the same as AntitheticES on one truncation."""
    config = CONFIG.replace(estimator="pes", perturbations=8, batch_size=2, horizon=0)
    state, static = l2lgd.init_state(config.replace(estimator="autodiff"))
    tasks = l2lgd.make_task_batch(config)(state.key, 0)
    pes = jax.jit(l2lgd.make_meta_gradient(config, static, estimator=PES.from_config(config)))(state.theta, tasks)
    es = jax.jit(l2lgd.make_meta_gradient(config, static, estimator=AntitheticES.from_config(config)))(state.theta, tasks)
    assert jax.tree.structure(pes.grads) == jax.tree.structure(state.theta)
    chex.assert_tree_all_finite(pes.grads)
    assert pes.final_losses.shape == (2,)
    chex.assert_trees_all_close(pes.grads, es.grads)


def test_reparameterized_tasks_follow_the_same_path_at_a_rescaled_learning_rate():
    """A rescaled task has the same loss at its start, gradients `scale` times the task's, and SGD
    at lr / scale^2 in its coordinates retraces SGD at lr on the task; `reparam_scale=1` leaves the
    draw as it is, and the factors lie in [1/R, R]."""
    family = l2lgd.LinearRegression(4, 3.0, 8, 20)
    task = draw_task(family, jax.random.key(0))
    assert l2lgd.tasks.reparameterize(task, jax.random.key(1), 1.0) is task
    loss_fn, x0, _ = task
    scaled_fn, phi0, _ = l2lgd.tasks.reparameterize(task, jax.random.key(1), 10.0)
    scales = jax.tree.leaves(scaled_fn.scales)
    assert all(0.1 <= float(s) <= 10.0 for s in scales) and any(abs(float(s) - 1) > 0.05 for s in scales)
    key = jax.random.key(2)
    np.testing.assert_allclose(scaled_fn(phi0, key), loss_fn(x0, key), rtol=1e-6)
    chex.assert_trees_all_close(jax.grad(scaled_fn)(phi0, key),
                                jax.tree.map(lambda g, s: g * s, jax.grad(loss_fn)(x0, key), scaled_fn.scales), rtol=1e-5)
    x, phi = x0, phi0
    for _ in range(5):
        x = jax.tree.map(lambda p, g: p - 0.01 * g, x, jax.grad(loss_fn)(x, key))
        phi = jax.tree.map(lambda p, g, s: p - 0.01 / s**2 * g, phi, jax.grad(scaled_fn)(phi, key), scaled_fn.scales)
    chex.assert_trees_all_close(jax.tree.map(lambda p, s: p * s, phi, scaled_fn.scales), x, rtol=1e-4, atol=1e-6)


def test_meta_training_draws_rescaled_tasks():
    """With `reparam_scale`, PES's fresh tasks are rescaled (their loss a `Reparameterized`) and
    meta-training stays finite; without, they are the family's own."""
    family = l2lgd.ConditionedQuadratics(4, 10.0, 20)
    config = l2lgd.Config(name="aug", hidden_size=2, num_layers=1, num_steps=5, estimator="pes", perturbations=2,
                          reparam_scale=10.0)
    state, static = l2lgd.init_state(config, family)
    for scale, kind in ((10.0, l2lgd.tasks.Reparameterized), (1.0, type(draw_task(family, jax.random.key(0))[0]))):
        fresh = PES.from_config(config)._fresh(config.replace(reparam_scale=scale), static, state.theta, family, jax.random.key(0), 2, 20, 20)
        assert isinstance(fresh.task[0], kind)
    with pytest.raises(ValueError, match="reparam_scale"):
        l2lgd.Config(reparam_scale=0.5)
