"""Evolution strategies over persistent particles: the abstract `Evolution` estimator, shared by
antithetic ES (`_es.py`) and PES (`_pes.py`).

Each task of a batch carries `2 * pairs` particles: the optimizee unrolled by the optimizer with
theta + sigma * eps_p (`+`) and theta - sigma * eps_p (`-`) for pairs p = 1..P. One meta-step
advances every particle by one truncation of `num_steps` optimizee steps, forward only (no
activations are kept), and scores it by the meta-objective of the truncation's losses. The
antithetic difference L+ - L- cancels every term of the objective that is even in eps (the
constant and the curvature), leaving

    grad ~ mean_p (L+_p - L-_p) / (2 sigma) * w_p,

where `w_p` is the current eps_p (truncated ES: the gradient of this truncation alone, biased
toward short horizons) or, for PES, the sum of the eps_p of every truncation since the task
started (Vicol et al. 2021: unbiased for the whole horizon's objective). Particles of one pair
use +eps and -eps throughout, so their trajectories stay antithetic. A task whose particles
became non-finite contributes nothing and is drawn afresh at the next meta-step.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jaxtyping import Array, Float, Int

from .._objectives import log10_loss, meta_objective
from ..optimizers._optax_face import as_optax
from ..tasks import TaskFamily, draw_rescaled
from ._base import MetaGradient, MetaGradientEstimator


class Particles(NamedTuple):
    """The persistent state of a batch of tasks (leading axis B) and their 2P particles each."""

    task: Any  # (loss_fn, params0, minibatch key data) of each task
    params: Any  # [B, 2P, ...]: each particle's optimizee parameters
    opt_state: Any  # [B, 2P, ...]: each particle's optimizer state
    noise: Any  # theta's structure, [B, P, ...]: the sum of the perturbations since the task began (PES)
    t: Int[Array, " B"]  # optimizee steps done in each task
    horizon: Int[Array, " B"]  # each task's length, a whole number of truncations


class ParticleResult(NamedTuple):
    """What `Evolution.particle_step` returns for one batch of tasks."""

    grads: Any  # the estimate for this batch (theta's structure), the mean over its usable tasks
    objective: Float[Array, ""]  # the mean meta-objective over the particles of usable tasks
    final_losses: Float[Array, " B"]  # each task's last loss of the truncation (mean over its particles; NaN if unusable)
    final_log10: Float[Array, ""]  # mean log10 of the truncation's last loss over usable tasks
    usable: Float[Array, ""]  # the fraction of tasks whose particles stayed finite
    particles: Particles


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def draw_horizons(key, count: int, low: int, high: int, truncation: int) -> Int[Array, " count"]:
    """`count` horizons log-uniform on [low, high], rounded up to a multiple of `truncation`."""
    u = jax.random.uniform(key, (count,))
    h = jnp.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return (jnp.ceil(h / truncation) * truncation).astype(jnp.int32)


class Evolution(MetaGradientEstimator):
    """Antithetic evolution strategies over truncated unrolls of persistent particles.

    `pairs` and `sigma` default to the config's `perturbations` and `sigma` (None); a kind sets
    `accumulate` (PES: True). Works with any optimizer module, any task family and mixtures of
    families (each member its own `Particles`, see `l2lgd.training`).
    """

    pairs: int | None = eqx.field(static=True, default=None)
    sigma: float | None = eqx.field(static=True, default=None)

    accumulate: ClassVar[bool] = False  # PES: weight the perturbations summed since the task began

    def __check_init__(self):
        if self.pairs is not None and (isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or self.pairs <= 0):
            raise ValueError(f"{type(self).__name__}.pairs (antithetic pairs per task) must be a positive integer, got {self.pairs!r}.")
        if self.sigma is not None and (isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float))
                                       or not self.sigma > 0 or not math.isfinite(self.sigma)):
            raise ValueError(f"{type(self).__name__}.sigma must be a positive finite number, got {self.sigma!r}.")

    def settings(self, config) -> tuple[int, float]:
        """(pairs, sigma): this estimator's, else the config's."""
        return (self.pairs or config.perturbations, float(self.sigma or config.sigma))

    # --- particles -------------------------------------------------------------------------
    def init_particles(self, config, static, theta, family: TaskFamily, key, batch: int, horizon: int) -> Particles:
        """Particles of `batch` tasks that are all due for a fresh draw (t = horizon = 0), so the
        first `refresh` replaces every array: zeros of the shapes a draw has (found by tracing,
        not by running the draw op by op, which took seconds per run)."""
        shapes = eqx.filter_eval_shape(self._fresh, config, static, theta, family, key, batch, horizon, horizon)
        default_key = jax.random.key(0)
        if any(isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
               and x.dtype != default_key.dtype for x in jax.tree.leaves(shapes)):  # keys of another PRNG
            particles = self._fresh(config, static, theta, family, key, batch, horizon, horizon)
            return particles._replace(t=particles.horizon)

        def zeros(x):
            if not isinstance(x, jax.ShapeDtypeStruct):
                return x
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jnp.broadcast_to(default_key, x.shape)
            return jnp.zeros(x.shape, x.dtype)

        return jax.tree.map(zeros, shapes)

    def _fresh(self, config, static, theta, family, key, batch, low, high) -> Particles:
        task_key, horizon_key = jax.random.split(key)
        tasks = jax.vmap(lambda k: draw_rescaled(family, k, config.reparam_scale))(jax.random.split(task_key, batch))
        horizons = draw_horizons(horizon_key, batch, low, high, config.num_steps)
        return self._start(config, static, theta, tasks, None, jnp.zeros(batch, jnp.int32), horizons)

    def _start(self, config, static, theta, tasks, opt_states, t, horizons) -> Particles:
        """Particles of `tasks` (a batch) from their params0 and `opt_states` (None: fresh)."""
        pairs, _ = self.settings(config)
        x0 = tasks[1]
        if opt_states is None:
            opt_states = jax.vmap(as_optax(eqx.combine(theta, static)).init)(x0)
        twice = lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], 2 * pairs, *x.shape[1:]))
        noise = jax.tree.map(lambda w: jnp.zeros((t.shape[0], pairs, *w.shape), w.dtype), theta)
        return Particles(tasks, jax.tree.map(twice, x0), jax.tree.map(twice, opt_states), noise, t, horizons)

    def refresh(self, config, static, theta, family, key, particles: Particles, horizon: int) -> Particles:
        """`particles` with every task that reached its horizon replaced by a fresh draw."""
        low, high = (config.min_horizon, config.max_horizon) if config.min_horizon else (horizon, horizon)
        batch = particles.t.shape[0]
        fresh = self._fresh(config, static, theta, family, key, batch, low, high)
        done = particles.t >= particles.horizon

        def pick(new, old):
            return jnp.where(done.reshape(-1, *([1] * (new.ndim - 1))), new, old)

        return jax.tree.map(pick, fresh, particles)

    # --- one truncation ----------------------------------------------------------------------
    def particle_step(self, config, static, theta, particles: Particles, key, stochastic: bool) -> ParticleResult:
        """Every particle advanced by one truncation and the meta-gradient estimate of it."""
        pairs, sigma = self.settings(config)
        batch = particles.t.shape[0]
        eps = _normal_like(theta, key, (batch, pairs))
        signs = jnp.concatenate([jnp.ones(pairs), -jnp.ones(pairs)])
        num_steps, heldout = config.num_steps, config.heldout_minibatch

        def particle(x, opt_state, e, sign, task, t):
            loss_fn, _, mkey = task
            tx = as_optax(eqx.combine(jax.tree.map(lambda w, d: w + sign * sigma * d, theta, e), static))
            stream = jax.random.wrap_key_data(mkey)

            def body(carry, i):
                x, s = carry
                k = jax.random.fold_in(stream, t + i)
                loss, g = jax.value_and_grad(loss_fn)(x, k)
                scored = loss_fn(x, jax.random.fold_in(k, 1)) if heldout and stochastic else loss
                updates, s = tx.update(g, s, x)
                return (optax.apply_updates(x, updates), s), (scored, loss)

            (x, opt_state), (scored, losses) = lax.scan(body, (x, opt_state), jnp.arange(num_steps))
            return x, opt_state, meta_objective(scored, config.objective), losses[-1]

        def task_particles(x, opt_state, e, task, t):
            e2 = jax.tree.map(lambda d: jnp.concatenate([d, d]), e)
            return jax.vmap(particle, in_axes=(0, 0, 0, 0, None, None))(x, opt_state, e2, signs, task, t)

        params, opt_state, objectives, finals = jax.vmap(task_particles)(
            particles.params, particles.opt_state, eps, particles.task, particles.t
        )
        noise = jax.tree.map(jnp.add, particles.noise, eps) if self.accumulate else eps
        usable = jnp.all(jnp.isfinite(objectives), axis=1) & jax.vmap(_all_finite)((params, opt_state))
        diff = jnp.where(usable[:, None], objectives[:, :pairs] - objectives[:, pairs:], 0.0) / (2 * sigma)
        count = jnp.maximum(jnp.sum(usable), 1)
        grads = jax.tree.map(lambda w: jnp.einsum("bp,bp...->...", diff, w) / (pairs * count), noise)
        safe_objective = jnp.where(usable[:, None], objectives, 0.0)
        t = particles.t + num_steps
        particles = Particles(
            particles.task, params, opt_state, noise,
            jnp.where(usable, t, particles.horizon),  # a task that went non-finite is drawn afresh
            particles.horizon,
        )
        return ParticleResult(
            grads=grads,
            objective=jnp.sum(safe_objective) / (2 * pairs * count),
            final_losses=jnp.where(usable, jnp.mean(finals, axis=1), jnp.nan),
            final_log10=jnp.sum(jnp.where(usable[:, None], log10_loss(finals), 0.0)) / (2 * pairs * count),
            usable=jnp.mean(usable.astype(jnp.float32)),
            particles=particles,
        )

    def make(self, config, static):
        """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`: the estimate
        from one truncation of fresh particles on a batch of tasks (for one truncation from a
        task's start, ES and PES are the same estimate of the full unroll's meta-gradient). The
        perturbations are drawn from the tasks' minibatch keys."""

        def meta_gradient(theta, tasks, opt_states=None, start=0):
            steps = jnp.full(jax.tree.leaves(tasks[1])[0].shape[0], start, jnp.int32)
            particles = self._start(config, static, theta, tasks, opt_states, steps, steps + config.num_steps)
            key = jax.random.fold_in(jax.random.wrap_key_data(tasks[2][0]), 7)
            result = self.particle_step(config, static, theta, particles, key, stochastic=True)
            return MetaGradient(result.objective, result.final_losses, result.grads, None)

        return meta_gradient


def _normal_like(theta, key, lead: tuple[int, ...]):
    """Standard normal draws of theta's structure with leading axes `lead`, independent per leaf."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([jax.random.normal(k, (*lead, *w.shape), w.dtype) for k, w in zip(keys, leaves)])
