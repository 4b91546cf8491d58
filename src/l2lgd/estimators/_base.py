"""The meta-gradient estimator protocol, and the results every estimator returns.

An estimator is an Equinox module whose fields are its settings. Bound to a run
(`bind(config, static, family)`, an `Estimation`), it owns the state it carries from one
meta-step to the next (`TrainState.inner`: backpropagation's optimizees in flight between
truncations, evolution strategies' particles), as learned_optimization's `GradientEstimator`
does:

    estimation = estimator.bind(config, static, family)
    state = estimation.init(theta, key)
    estimate, state = estimation.estimate(theta, state, draw, step)

where `draw` is what meta-step `step` consumes, drawn for a whole chunk up front in one batched
call (`estimation.draws(run_key_data, steps)`: a batch of tasks, or the step's key), so that a
resumed run draws exactly what an uninterrupted one draws, however the steps are chunked. The training step
applies the meta-optimizer to `estimate.grads`, and knows nothing else of the estimator. A config
names an estimator and its settings (`estimators._named`); the API also takes one directly.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Float


class MetaLossAux(NamedTuple):
    """The auxiliary result of a meta-loss (`make_meta_loss`)."""

    final_loss: Float[Array, ""]  # f(x_{T-1}) of the unroll
    carry: Any  # (params, optimizer state) after the unroll: where a truncated unroll continues


class MetaGradient(NamedTuple):
    """What a meta-gradient function (`MetaGradientEstimator.make`) returns for a batch of tasks."""

    objective: Float[Array, ""]  # the mean meta-objective over the batch
    final_losses: Float[Array, " batch"]  # each task's f(x_{T-1})
    grads: Any  # the meta-gradient (the theta's structure): the batch mean, per-task clipped if asked
    carries: Any  # each task's (params, optimizer state) after the unroll


class Estimate(NamedTuple):
    """What one meta-step's estimate (`Estimation.estimate`) gives the training step."""

    grads: Any  # the meta-gradient estimate (theta's structure)
    objective: Float[Array, ""]  # the mean meta-objective (NaN when nothing was usable)
    final_log10: Float[Array, ""]  # mean log10 of the tasks' last loss of this unroll
    usable: Float[Array, ""]  # the fraction of the estimate's tasks that stayed finite


class Estimation(NamedTuple):
    """An estimator bound to a run: pure functions of arrays, safe inside jit."""

    init: Callable[[Any, Any], Any]  # (theta, key) -> the estimator's state
    draws: Callable[[Any, Array], Any]  # (run key data, steps [S]) -> the chunk's draws, leading axis S
    estimate: Callable[..., tuple[Estimate, Any]]  # (theta, state, draw, step) -> (Estimate, state)
    mesh: Mesh | None  # the devices the estimate is split over (None: one)
    # An estimator that splits its own work over `mesh` (evolution strategies: each task's pairs)
    # gives these: the chunk of meta-steps then runs under `jax.shard_map`, `local(state)` taking
    # this device's share of the state at the chunk's start and `gather(state)` putting the
    # shares together at its end, while `estimate` works on the share and sums over the devices.
    # None: XLA splits the work by the shardings (backpropagation's batch).
    local: Callable[[Any], Any] | None = None
    gather: Callable[[Any], Any] | None = None


class MetaGradientEstimator(eqx.Module):
    """How the meta-gradient is estimated (the extension point). A kind implements `bind` (the
    meta-training protocol) and `make` (one estimate on a given batch of tasks), and `from_config`
    if it takes settings from a config; it overrides `check_optimizer` if it works only with some
    kinds of learned optimizer."""

    # Whether an estimate differentiates the unroll (a backward pass, about twice the forward's
    # cost); benchmarks count its work by it.
    backpropagates: ClassVar[bool] = False

    @classmethod
    def from_config(cls, training) -> "MetaGradientEstimator":
        """The estimator with its settings from a `MetaTrainingConfig` (or a `Config`); refuses,
        naming them, settings of other estimators that it would ignore."""
        return cls()

    def check_optimizer(self, static) -> None:
        """Raises, naming what works, if this estimator cannot train the optimizer `static`."""

    def optimizee_steps(self, config, family) -> int:
        """Optimizee steps one meta-step takes on `family` (a mixture: of all members)."""
        return config.batch_size * config.num_steps

    def validation_steps(self, config, family) -> int | None:
        """The optimizee steps of a validation task of `family` (one member): the horizon the
        estimator trains at. None: the config's `steps_per_task`."""
        return None

    @abc.abstractmethod
    def bind(self, config, static, family=None, mesh: Mesh | None | str = "auto") -> Estimation:
        """The estimator bound to a run of `config` on `family` (default: the config's), the
        optimizer's static part `static`, split over `mesh` ("auto": the devices that divide the
        estimator's work; None: one device)."""

    @abc.abstractmethod
    def make(self, config, static) -> Callable[..., MetaGradient]:
        """`meta_gradient(theta, tasks, opt_states=None, start=0) -> MetaGradient`: a pure
        function of a batch of tasks `(loss_fn, params0[, minibatch_key])` with a leading batch
        axis, the batch's optimizer states (None: fresh) and the index of the first step within
        each task (truncated unrolls)."""


def all_finite(tree) -> Array:
    """Whether every floating leaf of `tree` is finite everywhere (True for no floating leaf)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def divisor_mesh(size: int, axis: str, devices=None) -> Mesh | None:
    """A 1-D mesh (`axis`) over as many devices (of all hosts) as divide `size`, or None for one."""
    devices = list(devices if devices is not None else jax.devices())
    count = max(d for d in range(1, len(devices) + 1) if size % d == 0)
    return None if count == 1 else Mesh(np.array(devices[:count]), (axis,))
