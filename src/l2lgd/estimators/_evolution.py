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
became non-finite contributes nothing and is drawn afresh at the next meta-step; a meta-step
none of whose tasks stayed finite has a NaN objective, so the training step skips and counts it.

In meta-training (`bind`) the estimator's state is one `Particles` per member of the task family
(a `FamilyMixture` gives every member its batch); every meta-step advances each member's
particles by one truncation, draws afresh the tasks that reached their horizon, and returns the
mean of the members' estimates. Over several devices (two forced host devices of one process,
`train --devices 2`, or processes under `jax.distributed`) every task's antithetic pairs are split
among them (`particle_mesh`): the chunk of meta-steps runs under `jax.shard_map`, each device
unrolls its pairs of every task, and the devices exchange only the per-task sums of the estimate
at each meta-step (a few numbers per task and theta's size) and their particles at the chunk's
end (`Estimation.local`, `Estimation.gather`). A member too small to gain from half the
particles runs whole on one device instead, the devices balanced by its cost (`_placement`). The
perturbations are drawn in full on every device, so the estimate is the one-device estimate,
summed in another order.
"""


import functools
import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
from equinox import AbstractClassVar
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from jax.sharding import Mesh

from .._objectives import log10_loss, meta_objective
from ..optimizers._optax_face import as_optax, fill_horizon
from ..tasks import TaskFamily, draw_rescaled, training_family
from ..tasks._mixture import members_of
from ._base import Estimate, Estimation, MetaGradient, MetaGradientEstimator, all_finite, divisor_mesh
from ._placement import SPLIT, place_members, truncation_cost


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


class Advanced(NamedTuple):
    """One truncation of a batch's particles (or a device's share of them), before the estimate."""

    params: Any  # [B, 2P', ...]
    opt_state: Any  # [B, 2P', ...]
    noise: Any  # [B, P', ...]: the perturbations (PES: summed since each task began)
    objectives: Float[Array, "B twoP"]  # each particle's meta-objective of the truncation
    finals: Float[Array, "B twoP"]  # each particle's last loss of the truncation
    finite: Array  # [B] bool: every particle of the task (in this share) stayed finite


class TaskSums(NamedTuple):
    """Each task's sums over a share of its pairs (`Evolution.task_sums`): the devices add them."""

    grads: Any  # theta's structure with a leading [B]: sum_p (L+_p - L-_p) / (2 sigma) * w_p
    non_finite: Float[Array, " B"]  # 1 where a particle of the share went non-finite
    objective: Float[Array, " B"]  # the sum of the particles' meta-objectives
    finals: Float[Array, " B"]  # the sum of the particles' last losses
    log10: Float[Array, " B"]  # the sum of their log10


def draw_horizons(key, count: int, low: int, high: int, truncation: int) -> Int[Array, " count"]:
    """`count` horizons log-uniform on [low, high], rounded up to a multiple of `truncation`."""
    u = jax.random.uniform(key, (count,))
    h = jnp.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return (jnp.ceil(h / truncation) * truncation).astype(jnp.int32)


class Evolution(MetaGradientEstimator):
    """Antithetic evolution strategies over truncated unrolls of persistent particles (abstract:
    a kind sets `accumulate`).

    Settings: `pairs` antithetic pairs per task and meta-step, perturbations of standard deviation
    `sigma`; each task's horizon drawn log-uniformly from [`min_horizon`, `max_horizon`]
    optimizee steps, rounded up to whole truncations (0 and 0: the family's own horizon);
    `heldout_minibatch`: each loss of the meta-objective taken on a minibatch other than the one
    its gradient saw (Metz et al. 2019); `balance`: over several devices, a mixture's small
    members run whole on one device each and only the large ones are split (`_placement`; False:
    every member's pairs split over every device). Works with any optimizer kind, any task family
    and mixtures of families.
    """

    pairs: int = eqx.field(static=True, default=8)
    sigma: float = eqx.field(static=True, default=0.01)
    min_horizon: int = eqx.field(static=True, default=0)
    max_horizon: int = eqx.field(static=True, default=0)
    heldout_minibatch: bool = eqx.field(static=True, default=False)
    balance: bool = eqx.field(static=True, default=True)

    accumulate: AbstractClassVar[bool]  # PES: weight the perturbations summed since the task began

    def __check_init__(self):
        name = type(self).__name__
        if isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or self.pairs <= 0:
            raise ValueError(f"{name}.pairs (antithetic pairs per task) must be a positive integer, got {self.pairs!r}.")
        if (isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float))
                or not self.sigma > 0 or not math.isfinite(self.sigma)):
            raise ValueError(f"{name}.sigma must be a positive finite number, got {self.sigma!r}.")
        for field in ("min_horizon", "max_horizon"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}.{field} must be 0 or a positive integer, got {value!r}.")
        if self.max_horizon > 2**24:  # float32 draws (`draw_horizons`) stay whole numbers below it
            raise ValueError(f"{name}.max_horizon={self.max_horizon} is beyond 2**24 optimizee steps.")
        if (self.min_horizon == 0) != (self.max_horizon == 0) or self.max_horizon < self.min_horizon:
            raise ValueError(f"{name}.min_horizon={self.min_horizon} and max_horizon={self.max_horizon} must both be 0 "
                             "(the family's horizon) or satisfy 0 < min_horizon <= max_horizon.")
        if not isinstance(self.heldout_minibatch, bool):
            raise ValueError(f"{name}.heldout_minibatch must be True or False, got {self.heldout_minibatch!r}.")
        if not isinstance(self.balance, bool):
            raise ValueError(f"{name}.balance must be True or False, got {self.balance!r}.")

    @classmethod
    def from_config(cls, training) -> "Evolution":
        """`perturbations` (as `pairs`), `sigma`, `min_horizon`, `max_horizon` and
        `heldout_minibatch` from the config; `per_task_clip` is refused (the mean is clipped)."""
        if training.per_task_clip:
            raise ValueError(f"Config.per_task_clip is for backpropagation; estimator={training.estimator!r} clips the mean.")
        return cls(pairs=training.perturbations, sigma=float(training.sigma), min_horizon=training.min_horizon,
                   max_horizon=training.max_horizon, heldout_minibatch=training.heldout_minibatch)

    # --- particles -------------------------------------------------------------------------
    def init_particles(self, config, static, theta, family: TaskFamily, key, batch: int, horizon: int) -> Particles:
        """Particles of `batch` tasks that are all due for a fresh draw (t = horizon = 0), so the
        first `refresh` replaces every array: zeros of the shapes a draw has (found by tracing,
        not by running the draw op by op, which is slow)."""
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

    def _fresh(self, config, static, theta, family, key, batch, low, high, pairs=None) -> Particles:
        task_key, horizon_key = jax.random.split(key)
        tasks = jax.vmap(lambda k: draw_rescaled(family, k, config.reparam_scale))(jax.random.split(task_key, batch))
        horizons = draw_horizons(horizon_key, batch, low, high, config.num_steps)
        return self._start(config, static, theta, tasks, None, jnp.zeros(batch, jnp.int32), horizons, pairs)

    def _start(self, config, static, theta, tasks, opt_states, t, horizons, pairs=None) -> Particles:
        """Particles of `tasks` (a batch) from their params0 and `opt_states` (None: fresh; for a
        kind that uses the horizon, each task's own, `horizons`, is in its optimizer states), with
        `pairs` antithetic pairs a task (default: all; a device's share under a split)."""
        pairs = pairs or self.pairs
        x0 = tasks[1]
        if opt_states is None:
            tx = as_optax(eqx.combine(theta, static))
            opt_states = jax.vmap(lambda x, h: fill_horizon(tx.init(x), h))(x0, horizons)
        twice = lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], 2 * pairs, *x.shape[1:]))
        noise = jax.tree.map(lambda w: jnp.zeros((t.shape[0], pairs, *w.shape), w.dtype), theta)
        return Particles(tasks, jax.tree.map(twice, x0), jax.tree.map(twice, opt_states), noise, t, horizons)

    def refresh(self, config, static, theta, family, key, particles: Particles, horizon: int) -> Particles:
        """`particles` with every task that reached its horizon replaced by a fresh draw (of as
        many pairs as `particles` holds: a device's share under a split)."""
        low, high = (self.min_horizon, self.max_horizon) if self.min_horizon else (horizon, horizon)
        batch = particles.t.shape[0]
        pairs = jax.tree.leaves(particles.noise)[0].shape[1]
        done = particles.t >= particles.horizon

        def replaced(particles):
            fresh = self._fresh(config, static, theta, family, key, batch, low, high, pairs)
            pick = lambda new, old: jnp.where(done.reshape(-1, *([1] * (new.ndim - 1))), new, old)
            return jax.tree.map(pick, fresh, particles)

        # Most meta-steps draw nothing (a task lasts 5 to 100 truncations): the draw runs when due.
        return lax.cond(jnp.any(done), replaced, lambda particles: particles, particles)

    # --- one truncation ----------------------------------------------------------------------
    def particle_step(self, config, static, theta, particles: Particles, key, stochastic: bool) -> ParticleResult:
        """Every particle advanced by one truncation and the meta-gradient estimate of it, on one
        device (split over several, `bind` sums `task_sums` over them and finishes with
        `from_sums`)."""
        pairs, sigma = self.pairs, float(self.sigma)
        params, opt_state, noise, objectives, finals, usable = self.advance(config, static, theta, particles, key, stochastic)
        diff = jnp.where(usable[:, None], objectives[:, :pairs] - objectives[:, pairs:], 0.0) / (2 * sigma)
        count = jnp.maximum(jnp.sum(usable), 1)
        grads = jax.tree.map(lambda w: jnp.einsum("bp,bp...->...", diff, w) / (pairs * count), noise)
        safe_objective = jnp.where(usable[:, None], objectives, 0.0)
        t = particles.t + config.num_steps
        particles = Particles(
            particles.task, params, opt_state, noise,
            jnp.where(usable, t, particles.horizon),  # a task that went non-finite is drawn afresh
            particles.horizon,
        )
        return ParticleResult(
            grads=grads,
            objective=jnp.sum(safe_objective) / (2 * pairs * count),
            final_losses=jnp.where(usable, jnp.mean(finals, axis=1), jnp.nan),
            # A cross-entropy of a memorized minibatch can round to a tiny negative value: it is 0.
            final_log10=jnp.sum(jnp.where(usable[:, None], log10_loss(jnp.maximum(finals, 0.0)), 0.0)) / (2 * pairs * count),
            usable=jnp.mean(usable.astype(jnp.float32)),
            particles=particles,
        )

    def advance(self, config, static, theta, particles: Particles, key, stochastic: bool, axis: str | None = None) -> Advanced:
        """Every particle of `particles` (under `axis`: this device's share) advanced by one
        truncation, with its perturbation: the noise is drawn for all the pairs on every device,
        and each takes its share."""
        pairs, sigma = self.pairs, float(self.sigma)
        batch = particles.t.shape[0]
        eps = _normal_like(theta, key, (batch, pairs))
        local = jax.tree.leaves(particles.noise)[0].shape[1]
        if axis is not None:
            start = lax.axis_index(axis) * local
            eps = jax.tree.map(lambda e: lax.dynamic_slice_in_dim(e, start, local, 1), eps)
        signs = jnp.concatenate([jnp.ones(local), -jnp.ones(local)])
        num_steps, heldout = config.num_steps, self.heldout_minibatch

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
        finite = jnp.all(jnp.isfinite(objectives), axis=1) & jax.vmap(all_finite)((params, opt_state))
        return Advanced(params, opt_state, noise, objectives, finals, finite)

    def task_sums(self, advanced: Advanced) -> TaskSums:
        """Each task's sums over the pairs of `advanced` (a device's share): what the devices add."""
        local = advanced.objectives.shape[1] // 2
        diff = (advanced.objectives[:, :local] - advanced.objectives[:, local:]) / (2 * float(self.sigma))
        return TaskSums(
            grads=jax.tree.map(lambda w: jnp.einsum("bp,bp...->b...", diff, w), advanced.noise),
            non_finite=(~advanced.finite).astype(jnp.float32),
            objective=jnp.sum(advanced.objectives, axis=1),
            finals=jnp.sum(advanced.finals, axis=1),
            # A cross-entropy of a memorized minibatch can round to a tiny negative value: it is 0.
            log10=jnp.sum(log10_loss(jnp.maximum(advanced.finals, 0.0)), axis=1),
        )

    def from_sums(self, config, particles: Particles, advanced: Advanced, sums: TaskSums) -> ParticleResult:
        """The estimate from every device's `TaskSums` added, and `advanced` as the particles
        (the share), a task whose particles on any device went non-finite left out and drawn
        afresh."""
        pairs = self.pairs
        usable = sums.non_finite == 0
        count = jnp.maximum(jnp.sum(usable), 1)
        keep = lambda x: jnp.where(usable.reshape(-1, *([1] * (x.ndim - 1))), x, 0.0)
        return ParticleResult(
            grads=jax.tree.map(lambda g: jnp.sum(keep(g), axis=0) / (pairs * count), sums.grads),
            objective=jnp.sum(keep(sums.objective)) / (2 * pairs * count),
            final_losses=jnp.where(usable, sums.finals / (2 * pairs), jnp.nan),
            final_log10=jnp.sum(keep(sums.log10)) / (2 * pairs * count),
            usable=jnp.mean(usable.astype(jnp.float32)),
            particles=Particles(particles.task, advanced.params, advanced.opt_state, advanced.noise,
                                jnp.where(usable, particles.t + config.num_steps, particles.horizon), particles.horizon),
        )

    def make(self, config, static):
        """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`: the estimate
        from one truncation of fresh particles on a batch of tasks (for one truncation from a
        task's start, ES and PES are the same estimate of the full unroll's meta-gradient). The
        perturbations are drawn from the tasks' minibatch keys."""

        self.check_optimizer(static)

        def meta_gradient(theta, tasks, opt_states=None, start=0):
            steps = jnp.full(jax.tree.leaves(tasks[1])[0].shape[0], start, jnp.int32)
            particles = self._start(config, static, theta, tasks, opt_states, steps, steps + config.num_steps)
            key = jax.random.fold_in(jax.random.wrap_key_data(tasks[2][0]), 7)
            result = self.particle_step(config, static, theta, particles, key, stochastic=True)
            return MetaGradient(result.objective, result.final_losses, result.grads, None)

        return meta_gradient


    # --- meta-training over a family or a mixture ----------------------------------------------
    def member_horizon(self, config, member: TaskFamily) -> int:
        """A member's task length: its declared `horizon`, else the config's `steps_per_task`, as a
        whole number of truncations (an error, naming it, when shorter than one)."""
        horizon = int(member.horizon or config.steps_per_task)
        if not self.min_horizon and horizon < config.num_steps:
            raise ValueError(
                f"{type(member).__name__} has a horizon of {horizon} steps, shorter than one truncation "
                f"(num_steps={config.num_steps}); lower num_steps or set min_horizon/max_horizon."
            )
        return -(-horizon // config.num_steps) * config.num_steps

    def optimizee_steps(self, config, family) -> int:
        """Each member's batch of tasks, `2 * pairs` particles each, one truncation."""
        return len(members_of(family)) * config.batch_size * 2 * self.pairs * config.num_steps

    def validation_steps(self, config, family) -> int | None:
        """Evolution strategies train at each family's own horizon, and are scored there."""
        return family.horizon or None

    def particle_mesh(self, devices=None) -> Mesh | None:
        """The mesh ("pairs") over the devices that divide a task's antithetic pairs."""
        return divisor_mesh(self.pairs, "pairs", devices)

    def member_placement(self, config, static, theta, family, devices: int) -> tuple[int, ...]:
        """Where each member of `family` (None: the config's) runs over `devices` devices:
        `_placement.SPLIT` (its pairs split over all) or a device that runs it whole, chosen by
        the costs of its truncation traced at theta's shapes (all split when not `balance`)."""
        return self._placement(config, static, theta, family if family is not None else training_family(config),
                               devices)[0]

    def _placement(self, config, static, theta, family, devices: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
        members = members_of(family)
        if not self.balance or devices == 1:
            return (SPLIT,) * len(members), (None,) * len(members)
        horizons = [self.member_horizon(config, member) for _, member in members]
        whole, split, shapes, key = [], [], [], jax.random.key(0)
        for (_, member), horizon in zip(members, horizons):
            full = jax.eval_shape(lambda theta, member=member, horizon=horizon: self.init_particles(
                config, static, theta, member, key, config.batch_size, horizon), theta)
            cost, share, shape = truncation_cost(
                lambda theta, own, member=member: self.advance(config, static, theta, own, key, member.stochastic),
                theta, full, devices=devices)
            whole.append(cost)
            split.append(share)
            shapes.append(shape)
        return place_members(whole, split, devices), tuple(shapes)

    def bind(self, config, static, family=None, mesh: Mesh | None | str = "auto") -> Estimation:
        """The estimator's state is one `Particles` per member of `family` (default: the
        config's), every task due for a fresh draw at the first step; each meta-step's draw is its
        key (`fold_in(run_key, step)`), and the work is shared over `mesh` (a 1-D mesh whose size
        divides `pairs`): each member's pairs split over its devices or the member whole on one
        (`member_placement`), `estimate` runs under `jax.shard_map` on a device's share
        (`Estimation.local`) and returns the whole estimate on every device."""
        self.check_optimizer(static)
        family = family if family is not None else training_family(config)
        mesh = self.particle_mesh() if mesh == "auto" else mesh
        axis = None
        if mesh is not None:
            if len(mesh.axis_names) != 1 or self.pairs % mesh.devices.size:
                raise ValueError(f"{type(self).__name__} splits a task's {self.pairs} pairs over a 1-D mesh whose size "
                                 f"divides them; got a mesh of shape {dict(mesh.shape)}.")
            axis = mesh.axis_names[0]
        members = members_of(family)
        horizons = [self.member_horizon(config, member) for _, member in members]

        def init(theta, key):
            key = jax.random.fold_in(key, 2**31 - 1)
            return tuple(
                self.init_particles(config, static, theta, member, jax.random.fold_in(key, m), config.batch_size, horizon)
                for m, ((_, member), horizon) in enumerate(zip(members, horizons))
            )

        def draws(key_data, steps):
            run_key = jax.random.wrap_key_data(key_data)
            return jax.vmap(lambda step: jax.random.key_data(jax.random.fold_in(run_key, step)))(steps)

        def estimate(theta, particles, key_data, step):
            del step  # the draw is the step's key
            key = jax.random.wrap_key_data(key_data)
            owners, shapes = placement(theta) if axis is not None else ((), ())
            results, shares = [], []
            for m, ((_, member), horizon, own) in enumerate(zip(members, horizons, particles)):
                draw_key, noise_key = jax.random.split(jax.random.fold_in(key, m))
                own = self.refresh(config, static, theta, member, draw_key, own, horizon)
                if axis is None:
                    results.append(self.particle_step(config, static, theta, own, noise_key, member.stochastic))
                elif owners[m] == SPLIT:
                    shares.append((own, self.advance(config, static, theta, own, noise_key, member.stochastic, axis), None))
                else:  # the whole member on its device; the others skip it and add nothing
                    mine = lax.axis_index(axis) == owners[m]
                    run = lambda own, member=member, noise_key=noise_key: self.advance(
                        config, static, theta, own, noise_key, member.stochastic)
                    shares.append((own, lax.cond(mine, run, functools.partial(_skipped, shapes[m]), own), mine))
            if axis is not None:  # one exchange a meta-step: every member's per-task sums at once
                sums = [self.task_sums(advanced) if mine is None else
                        jax.tree.map(lambda x, mine=mine: jnp.where(mine, x, 0), self.task_sums(advanced))
                        for _, advanced, mine in shares]
                sums = psum_as_one(sums, axis)
                results = [self.from_sums(config, own, advanced, total) for (own, advanced, _), total in zip(shares, sums)]
            mean = lambda xs: sum(xs) / len(xs)
            grads = jax.tree.map(lambda *g: mean(g), *[r.grads for r in results])
            usable = mean([r.usable for r in results])
            # A meta-step none of whose tasks stayed finite estimates nothing: a NaN objective
            # makes the training step skip and count it (its grads are zeros, not a gradient).
            nothing = lambda x: jnp.where(usable > 0, x, jnp.nan)
            estimate = Estimate(grads, nothing(mean([r.objective for r in results])),
                                nothing(mean([r.final_log10 for r in results])), usable)
            return estimate, lax.stop_gradient(tuple(r.particles for r in results))

        if axis is None:
            return Estimation(init, draws, estimate, None)
        size = mesh.devices.size
        placements: dict[Any, tuple[tuple[int, ...], tuple[Any, ...]]] = {}

        def placement(theta) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            """Each member's placement and `Advanced` shapes (`_placement`) at theta's shapes,
            traced once."""
            theta = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), theta)
            known = (jax.tree.structure(theta), tuple(jax.tree.leaves(theta)))
            if known not in placements:
                placements[known] = self._placement(config, static, theta, family, size)
            return placements[known]

        def theta_of(particles: Particles):  # theta's shapes, from a member's noise [B, P, ...]
            return jax.tree.map(lambda n: jax.ShapeDtypeStruct(n.shape[2:], n.dtype), particles.noise)

        def local(state):
            owners, _ = placement(theta_of(state[0]))
            return tuple(local_share(p, axis, size) if owner == SPLIT else p for p, owner in zip(state, owners))

        def gather(state):
            owners, _ = placement(theta_of(state[0]))  # the noise's trailing axes are theta's in a share too
            return tuple(gather_shares(p, axis, size) if owner == SPLIT else from_owner(p, axis, owner)
                         for p, owner in zip(state, owners))

        return Estimation(init, draws, estimate, mesh, local=local, gather=gather)


def _skipped(shapes, own: Particles) -> "Advanced":
    """What a device that does not run a whole member returns for it: its particles as they
    came and nothing to add to the sums (the member's owner advances it, `from_owner` takes the
    owner's particles at the chunk's end)."""
    zeros = lambda x: jnp.zeros(x.shape, x.dtype)
    return Advanced(own.params, own.opt_state, own.noise, zeros(shapes.objectives), zeros(shapes.finals),
                    jnp.ones(shapes.finite.shape, shapes.finite.dtype))


def from_owner(particles: Particles, axis: str, owner: int) -> Particles:
    """A whole member's particles as its owner (device `owner` on `axis`) advanced them."""
    take = lambda tree: jax.tree.map(lambda x: lax.all_gather(x, axis)[owner], tree)
    return particles._replace(params=take(particles.params), opt_state=take(particles.opt_state),
                              noise=take(particles.noise))


def psum_as_one(tree, axis: str):
    """`lax.psum(tree, axis)` of a tree of float32 arrays as one collective on one flat vector (a
    collective's latency, e.g. gloo's between processes, costs far more than its few numbers)."""
    flat, unravel = ravel_pytree(tree)
    return unravel(lax.psum(flat, axis))


def local_share(particles: Particles, axis: str, size: int) -> Particles:
    """This device's share of one member's `Particles` (under `jax.shard_map` over `axis` of
    `size` devices): device d holds pairs [d * P/size, (d + 1) * P/size) of every task, their `+`
    and their `-` particles (params and optimizer states [B, 2P, ...] -> [B, 2P/size, ...], noise
    [B, P, ...] -> [B, P/size, ...]); the tasks, steps and horizons are every device's."""
    pairs = jax.tree.leaves(particles.noise)[0].shape[1]
    local = pairs // size
    start = lax.axis_index(axis) * local
    take = lambda x, offset: lax.dynamic_slice_in_dim(x, offset + start, local, 1)
    both = lambda tree: jax.tree.map(lambda x: jnp.concatenate([take(x, 0), take(x, pairs)], axis=1), tree)
    return particles._replace(params=both(particles.params), opt_state=both(particles.opt_state),
                              noise=jax.tree.map(lambda x: take(x, 0), particles.noise))


def gather_shares(particles: Particles, axis: str, size: int) -> Particles:
    """The inverse of `local_share`: every device's share gathered into the whole `Particles`, in
    the one-device order (the `+` particles of pairs 1..P, then their `-` particles)."""
    def particles_of(x):  # [B, size * 2 * local] by device -> [B, 2 * P] by sign, then pair
        x = lax.all_gather(x, axis, axis=1, tiled=True)
        b, _, *rest = x.shape
        x = x.reshape(b, size, 2, -1, *rest)
        return jnp.swapaxes(x, 1, 2).reshape(b, -1, *rest)

    gathered = lambda tree: jax.tree.map(particles_of, tree)
    return particles._replace(params=gathered(particles.params), opt_state=gathered(particles.opt_state),
                              noise=jax.tree.map(lambda x: lax.all_gather(x, axis, axis=1, tiled=True), particles.noise))


def _normal_like(theta, key, lead: tuple[int, ...]):
    """Standard normal draws of theta's structure with leading axes `lead`, independent per leaf."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([jax.random.normal(k, (*lead, *w.shape), w.dtype) for k, w in zip(keys, leaves)])
