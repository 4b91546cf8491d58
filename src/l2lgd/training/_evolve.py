"""Meta-training by evolution strategies (`Config.estimator` "es" or "pes") over a task family or a
mixture of families: every meta-step advances each member's particles by one truncation, draws
afresh the tasks that reached their horizon, and updates theta with the mean of the members'
estimates (after the meta-optimizer's clip). One compiled program holds every member.

Over several devices (e.g. two processes under `jax.distributed`) the particles of every task are
split among them (`particle_mesh`): each device unrolls its share, and XLA sums the estimate."""

from __future__ import annotations

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._config import Config
from ..estimators._evolution import Evolution
from ..tasks import TaskFamily
from ..tasks._mixture import members_of


def member_horizon(config: Config, member: TaskFamily) -> int:
    """A member's task length: its declared `horizon`, else the config's `steps_per_task`, as a
    whole number of truncations (an error, naming it, when shorter than one)."""
    horizon = int(getattr(member, "horizon", 0) or config.steps_per_task)
    if not config.min_horizon and horizon < config.num_steps:
        raise ValueError(
            f"{type(member).__name__} has a horizon of {horizon} steps, shorter than one truncation "
            f"(num_steps={config.num_steps}); lower num_steps or set min_horizon/max_horizon."
        )
    return -(-horizon // config.num_steps) * config.num_steps


def init_particles(config: Config, static, theta, family: TaskFamily, estimator: Evolution, key):
    """One `Particles` per member (a tuple), every task due for a fresh draw at the first step."""
    return tuple(
        estimator.init_particles(config, static, theta, member, jax.random.fold_in(key, m), config.batch_size,
                                 member_horizon(config, member))
        for m, (_, member) in enumerate(members_of(family))
    )


def divisor_mesh(size: int, axis: str, devices=None) -> Mesh | None:
    """A 1-D mesh (`axis`) over as many devices (of all hosts) as divide `size`, or None for one."""
    devices = list(devices if devices is not None else jax.devices())
    count = max(d for d in range(1, len(devices) + 1) if size % d == 0)
    return None if count == 1 else Mesh(np.array(devices[:count]), (axis,))


def particle_mesh(config: Config, estimator: Evolution, devices=None) -> Mesh | None:
    """The mesh ("particles") over the devices that divide a task's `2 * pairs` particles."""
    return divisor_mesh(2 * estimator.settings(config)[0], "particles", devices)


def shard_particles(particles, mesh: Mesh | None):
    """One member's `Particles` with their per-particle arrays (params and optimizer state,
    [B, 2P, ...]) split over `mesh` along the particle axis."""
    if mesh is None:
        return particles
    spec = NamedSharding(mesh, PartitionSpec(None, "particles"))
    constrain = lambda tree: jax.tree.map(lambda x: lax.with_sharding_constraint(x, spec), tree)
    return particles._replace(params=constrain(particles.params), opt_state=constrain(particles.opt_state))


def make_evolution_gradient(config: Config, static, family: TaskFamily, estimator: Evolution, mesh: Mesh | None = None):
    """`gradient(theta, particles, key) -> (grads, objective, final_log10, particles)`:
    the mean over the members of each member's estimate on its batch (the particles split over
    `mesh`, if given)."""
    members = members_of(family)
    horizons = [member_horizon(config, member) for _, member in members]

    def gradient(theta, particles, key):
        results = []
        for m, ((_, member), horizon, own) in enumerate(zip(members, horizons, particles)):
            draw_key, noise_key = jax.random.split(jax.random.fold_in(key, m))
            own = estimator.refresh(config, static, theta, member, draw_key, own, horizon)
            own = shard_particles(own, mesh)
            results.append(estimator.particle_step(config, static, theta, own, noise_key, member.stochastic))
        mean = lambda xs: sum(xs) / len(xs)
        grads = jax.tree.map(lambda *g: mean(g), *[r.grads for r in results])
        return (grads, mean([r.objective for r in results]), mean([r.final_log10 for r in results]),
                tuple(r.particles for r in results))

    return gradient

