"""The learned optimizer interface: what a kind of learned optimizer declares, and what the rest
of the package (the optax face, the estimators, storage and loading) relies on.

A kind is an Equinox module whose array leaves are its meta-parameters (theta) and whose other
fields are static settings. It works on one leaf of the optimizee's params at a time, flattened:
`init_state(n, dtype)` gives the leaf's state (per-coordinate arrays, and per-tensor ones if the
kind has them; `init_state_for(params)` the state of a leaf that starts at `params`, what the face
uses), `step(g, state, ...)` its update. A kind that declares `uses_horizon` also gets
the number of steps the user will run (the horizon; its training fraction is t / horizon): the
user gives it to the face (`as_optax(opt, num_steps=N)`), and the face keeps it in its state. The
optax face (`_optax_face.as_optax`) runs
every leaf through it; meta-training perturbs or differentiates its array leaves; storage saves
them and rebuilds the module from the stored config (`_kinds.make_optimizer`). A kind registers
under a name (`_kinds.register_optimizer_kind`) that `OptimizerConfig.kind` selects.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class LearnedOptimizer(eqx.Module):
    """A learned optimizer of one leaf of coordinates (the extension point).

    A kind implements `from_config`, `init_state` and `step`. It sets `coordinatewise = False`
    if a coordinate's update depends on other coordinates of its leaf (per-tensor statistics):
    the face then never splits a large leaf into blocks. It sets `uses_horizon = True` if its
    update depends on the training fraction t / num_steps (as VeLO's does): its `step` then gets
    `horizon`, and the user must give `num_steps` to the face. It sets `uses_params = True` (a
    class attribute, or a property of its settings) if its update depends on the parameters (as
    VeLO's steps are proportional to the tensor's RMS): its `step` then gets `params`, and the
    user must pass them to `update` (as optax's weight decay needs).
    """

    # Each coordinate's update and state depend on that coordinate alone, so a large leaf may run
    # in blocks of coordinates (`coordinate_axes` says where the coordinate axis of each state is).
    coordinatewise: ClassVar[bool] = True
    # `step` gets `horizon=`, the number of steps the user will run (a float scalar array).
    uses_horizon: ClassVar[bool] = False
    # `step` gets `params=`, the leaf's flattened parameters (the user passes them to `update`).
    uses_params: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Any, *, key: PRNGKeyArray) -> "LearnedOptimizer":
        """A freshly initialised optimizer from an `OptimizerConfig` (its settings), its weights
        drawn from `key`."""

    @abc.abstractmethod
    def init_state(self, n: int, dtype=jnp.float32) -> Any:
        """The state of one leaf of `n` coordinates (a pytree of arrays of `dtype`)."""

    def init_state_for(self, params: Float[Array, " n"]) -> Any:
        """The state of the leaf whose (flattened) params the optimizer starts from, in their
        dtype: what the face's `init(params)` gives each leaf. By default `init_state(n, dtype)`;
        a kind whose state remembers where it started (e.g. `ProdigyController`'s x_0) overrides it."""
        return self.init_state(params.shape[0], params.dtype)

    @abc.abstractmethod
    def step(
        self, g: Float[Array, " n"], state: Any, *, total: int = 0, horizon: Float[Array, ""] | None = None
    ) -> tuple[Float[Array, " n"], Any]:
        """The update of one leaf (x += update) for its flattened gradient `g`, and its new state.
        `total` is the number of coordinates of the whole update (every leaf), which a kind may use
        to choose how to compute (not what). `horizon`: the number of steps the user will run, a
        float32 scalar array; the face passes it only to a kind with `uses_horizon` (so a kind
        without it may leave it out of its signature). A kind with `uses_params` also gets
        `params=`, the leaf's flattened parameters."""

    def coordinate_axes(self, state: Any, n: int) -> Any:
        """For a `coordinatewise` kind: each state array's coordinate axis (None: shared by all
        coordinates). By default the first axis of length `n`."""
        def axis(x):
            return next((i for i, size in enumerate(jnp.shape(x)) if size == n), None)
        return jax.tree.map(axis, state)


def cast_optimizer(opt: LearnedOptimizer, dtype) -> LearnedOptimizer:
    """`opt` with its floating arrays cast to `dtype` (a no-op when they already are)."""
    return jax.tree.map(lambda w: w.astype(dtype) if eqx.is_inexact_array(w) else w, opt)
