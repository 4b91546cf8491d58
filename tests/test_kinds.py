"""The extension points: a kind of learned optimizer and a meta-gradient estimator defined here,
in this file alone, meta-train through `l2lgd.train`, save, load by path and run through the
optax face like the built-in ones."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd.tasks import draw_task, training_family


@l2lgd.register_optimizer_kind("test_linear")
class LinearRule(l2lgd.LearnedOptimizer):
    """A per-coordinate linear rule: update = -(a * g + b * m), m a momentum of the gradients."""

    weights: jax.Array  # [a, b]

    @classmethod
    def from_config(cls, config, *, key):
        return cls(jnp.array([0.05, 0.0]) + 1e-3 * jax.random.normal(key, (2,)))

    def init_state(self, n, dtype=jnp.float32):
        return jnp.zeros(n, dtype)

    def step(self, g, state, *, total=0):
        m = 0.9 * state + g
        return -(self.weights[0] * g + self.weights[1] * m), m


@l2lgd.register_estimator("test_forward")
class ForwardGradient(l2lgd.MetaGradientEstimator):
    """Forward-mode gradient estimates: (dL/dtheta . v) v along a random direction v, one fresh
    task per meta-step, by `jax.jvp` of the generic meta-loss (no state between meta-steps)."""

    def make(self, config, static):
        raise NotImplementedError("not needed here")

    def bind(self, config, static, family=None, mesh="auto"):
        family = family if family is not None else training_family(config)
        loss = l2lgd.make_meta_loss(config, static)

        def init(theta, key):
            return ()

        def draws(key_data, steps):
            run_key = jax.random.wrap_key_data(key_data)
            return jax.vmap(lambda s: jax.random.key_data(jax.random.fold_in(run_key, s)))(steps)

        def estimate(theta, state, key_data, step):
            task_key, direction_key = jax.random.split(jax.random.wrap_key_data(key_data))
            task = draw_task(family, task_key)
            leaves, treedef = jax.tree.flatten(theta)
            keys = jax.random.split(direction_key, len(leaves))
            v = treedef.unflatten([jax.random.normal(k, w.shape, w.dtype) for k, w in zip(keys, leaves)])
            (objective, aux), (slope, _) = jax.jvp(lambda th: loss(th, task), (theta,), (v,))
            grads = jax.tree.map(lambda d: slope * d, v)
            return l2lgd.Estimate(grads, objective, l2lgd.log10_loss(aux.final_loss), jnp.asarray(1.0)), state

        return l2lgd.Estimation(init, draws, estimate, None)


CONFIG = l2lgd.Config(name="kinds", kind="test_linear", num_steps=10, objective="sum_log", meta_steps=30, meta_lr=1e-2)
OPTIONS = l2lgd.RunOptions(checkpoint_every=15, chunk_size=15, validation_tasks=8, progress=False)


def _through_the_face(tx):
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.float32(0.3)}
    loss = lambda p: jnp.sum(p["w"] ** 2) + p["b"] ** 2
    state = tx.init(params)
    for _ in range(10):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return float(loss(params))


@pytest.mark.parametrize("estimator", ["pes", "test_forward"])
def test_a_kind_defined_here_meta_trains_saves_and_loads_by_path(tmp_path, estimator):
    config = CONFIG.replace(estimator=estimator, **({"horizon": 20, "perturbations": 2} if estimator == "pes" else {}))
    result = l2lgd.train(config, tmp_path / "run", OPTIONS)
    start = l2lgd.init_state(config).state.theta
    assert int(result.state.step) == 30 and int(result.state.skipped) == 0
    assert not np.allclose(result.state.theta.weights, start.weights)  # it meta-trained

    opt, loaded_config, metrics = l2lgd.load_learned_optimizer(tmp_path / "run")
    assert isinstance(opt, LinearRule) and loaded_config.kind == "test_linear" and loaded_config.estimator == estimator
    snapshot, _, _ = l2lgd.load_learned_optimizer(tmp_path / "run", step=metrics["step"])
    chex.assert_trees_all_equal(opt.weights, snapshot.weights)
    tx = l2lgd.load_optimizer(tmp_path / "run")
    final = _through_the_face(tx)
    assert np.isfinite(final) and final < _through_the_face(optax.sgd(0.0))  # it optimizes


def test_the_fused_backward_pass_refuses_another_kind_by_name():
    state, static = l2lgd.init_state(CONFIG.replace(estimator="pes"))
    with pytest.raises(TypeError, match="LSTM kind only, not LinearRule.*autodiff"):
        l2lgd.make_meta_gradient(CONFIG, static, estimator=l2lgd.FusedBackprop())
    loss = l2lgd.make_meta_gradient(CONFIG, static, estimator=l2lgd.Autodiff())  # the generic unroll works
    tasks = l2lgd.make_task_batch(CONFIG)(state.key, 0)
    chex.assert_tree_all_finite(loss(state.theta, tasks).grads)


def test_unknown_kinds_and_estimators_list_the_known_ones():
    with pytest.raises(ValueError, match="kind='nope' is not one of 'lstm'"):
        l2lgd.Config(kind="nope")
    with pytest.raises(ValueError, match="estimator='nope' is not one of 'fused'.*'test_forward'"):
        l2lgd.Config(estimator="nope")
    with pytest.raises(TypeError, match="LearnedOptimizer subclass"):
        l2lgd.register_optimizer_kind("bad")(object)


def test_an_estimator_passed_directly_owns_its_settings():
    """`init_state` and `make_train_chunk` take the same estimator: its particles are its own size,
    whatever the config says."""
    config = l2lgd.Config(hidden_size=2, num_layers=1, num_steps=5, horizon=10, estimator="pes", perturbations=8)
    pes = l2lgd.PES(pairs=3, sigma=0.01)
    state, static = l2lgd.init_state(config, estimator=pes)
    assert state.inner[0].params.shape[1] == 6  # 2 * pairs particles per task
    state, record = l2lgd.make_train_chunk(config, static, estimator=pes)(state, 3)
    assert state.inner[0].params.shape[1] == 6 and np.all(np.isfinite(record.meta_loss))


def test_a_meta_step_whose_every_particle_went_non_finite_is_skipped_and_recorded_nan():
    """sigma=1e30: every particle's optimizer is non-finite, the estimate has nothing to say."""
    config = l2lgd.Config(hidden_size=2, num_layers=1, num_steps=5, horizon=10, estimator="pes", perturbations=2,
                          sigma=1e30)
    state, static = l2lgd.init_state(config)
    new, record = l2lgd.make_train_chunk(config, static)(state, 4)
    assert int(new.skipped) == 4 and bool(np.all(record.skipped))
    assert np.all(np.isnan(record.meta_loss)) and np.all(np.isnan(record.final_log10))
    np.testing.assert_array_equal(record.usable, 0.0)  # the record says how much was usable
    chex.assert_trees_all_equal(new.theta, state.theta)


def test_backpropagation_refuses_a_mixture_of_families():
    mixture = l2lgd.FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.ConditionedQuadratics(3, 10.0, 20)), ("a", "b"))
    config = l2lgd.Config(hidden_size=2, num_layers=1, num_steps=5, estimator="fused")
    with pytest.raises(ValueError, match="not a mixture of 2.*'pes'"):
        l2lgd.init_state(config, mixture)


def test_a_run_whose_particles_all_go_non_finite_stops_at_max_skips_and_exports_nothing(tmp_path):
    config = l2lgd.Config(name="boom", hidden_size=2, num_layers=1, num_steps=5, horizon=10, estimator="pes",
                          perturbations=2, sigma=1e30, meta_steps=20)
    options = l2lgd.RunOptions(checkpoint_every=10, chunk_size=10, validation_tasks=4, max_consecutive_skips=5, progress=False)
    with pytest.raises(l2lgd.NonFiniteError, match="5 consecutive meta-steps"):
        l2lgd.train(config, tmp_path / "run", options)
    assert not (tmp_path / "run" / "optimizer").exists()
    assert np.all(np.isnan(l2lgd.load_record(tmp_path / "run")))
