"""Loading a trained optimizer, exported or from a snapshot, by shipped name or folder: the module
rebuilt from its stored config (`_exports.skeleton`, any registered kind) and filled with its
stored weights, or directly as an optax transformation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np

from .._config import Config
from ..optimizers._base import LearnedOptimizer
from ._exports import EXPORT, skeleton
from ._shipped import resolve_optimizer_path
from ._snapshots import SNAPSHOTS, restore_state
from ._storage import check_shapes, find_steps, is_array_like, parse_config, read_json_item, restore_item


def load_learned_optimizer(
    path: str | Path, step: int | None = None, *, family=None
) -> tuple[LearnedOptimizer, Config, dict[str, Any]]:
    """Loads a trained optimizer: its module, its config and its metrics.

    Args:
        path: a run folder (e.g. `checkpoints/log30`), or its `optimizer/` folder, or the name
            of a shipped optimizer (`l2lgd.list_optimizers()`), e.g. "log30".
        step: None for the exported (best) optimizer; else the snapshot at that meta-step.
        family: the `TaskFamily` a truncated or evolution run with `step` was trained on, when
            it is not the one its config names (a snapshot holds that family's tasks in flight).

    Returns:
        `(optimizer, config, metrics)`: the `LearnedOptimizer` module, the `Config` it was
        trained with, and the snapshot's metrics ("step", "validation_log10_final", ...).

    Raises:
        FileNotFoundError: nothing is at `path`; ValueError: what is there is not an l2lgd
        checkpoint of this format, or is damaged (naming the file).

    Example:
        >>> opt, config, metrics = l2lgd.load_learned_optimizer("log30")
        >>> (config.preprocessing, config.objective, metrics["step"] > 0)
        ('log_rescale', 'end_log', True)
    """
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))):
        raise TypeError(f"step must be an integer meta-step or None, got {step!r} ({type(step).__name__}).")
    path = resolve_optimizer_path(path)
    if path.parent.name == EXPORT and path.name.isdigit() and step is None:
        path = path.parent  # a step folder of an export: the export itself
    if not path.is_dir():
        raise ValueError(f"{path} is a file; expected an l2lgd run folder such as checkpoints/log30.")
    if path.name == EXPORT and step is None:
        folder, item = path, "weights"
    elif step is None:
        folder, item = path / EXPORT, "weights"
    else:
        folder, item = path / SNAPSHOTS, "state"
    if not folder.is_dir():
        if item == "state" and (path / EXPORT).is_dir():
            raise ValueError(
                f"{path} holds only its exported optimizer, no snapshots (shipped optimizers ship none): load it "
                "without step=, or pass a run folder of your own with snapshots/."
            )
        snapshots = find_steps(path / SNAPSHOTS) if item == "weights" and (path / SNAPSHOTS).is_dir() else []
        if snapshots:
            raise ValueError(
                f"{path} holds a run that has not exported an optimizer yet (it exports when it finishes): load one "
                f"of its snapshots with step= (it has {', '.join(map(str, snapshots))}), or resume the run to its end."
            )
        raise ValueError(
            f"{path} is not an l2lgd checkpoint: it has no {folder.name}/ folder "
            "(train one with `make train EXP=...`)."
        )
    steps = find_steps(folder)
    if step is None:
        if not steps:
            raise ValueError(f"{folder} holds no checkpoint step folder: not an l2lgd checkpoint.")
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"{folder} has no snapshot at step {step}; it has steps {steps}.")
    step_dir = folder / str(step)
    config = parse_config(read_json_item(step_dir, "config"), step_dir / "config")
    metrics = read_json_item(step_dir, "metrics")
    opt = skeleton(config)
    if item == "state":
        theta = restore_state(step_dir, config, family).theta
    else:
        abstract = eqx.filter(opt, is_array_like)
        check_shapes(step_dir, item, abstract, config)
        theta = restore_item(step_dir, item, abstract)
    static = eqx.filter(opt, is_array_like, inverse=True)
    return eqx.combine(theta, static), config, metrics


def load_optimizer(path: str | Path, step: int | None = None, *, family=None, num_steps: int | None = None):
    """A trained optimizer as an `optax.GradientTransformation`.

    Args:
        path: a run folder such as `checkpoints/log30` (or its `optimizer/` folder), or the
            name of a shipped optimizer (`l2lgd.list_optimizers()`), e.g. "log30".
        step: None for the exported best snapshot; else the snapshot at that meta-step.
        family: as for `load_learned_optimizer`.
        num_steps: the number of steps you will run, needed by a kind that uses the training
            fraction t / num_steps (e.g. "mlp_step"; `LearnedOptimizer.uses_horizon`), ignored
            by the others. Past it the optimizer goes on as at the end of its horizon.

    Returns:
        The optimizer as optax's `init`/`update` pair (see `as_optax`); its config and metrics
        come with `load_learned_optimizer`.

    Raises:
        ValueError: `num_steps` is not a positive integer, or is missing for a kind that uses it.

    Example:
        >>> tx = l2lgd.load_optimizer("log30")
        >>> params = {"w": jnp.array([0.5, -1.0])}
        >>> loss = lambda p: jnp.sum((1.3 * p["w"]) ** 2)
        >>> state = tx.init(params)
        >>> for _ in range(19):  # the horizon it was trained for
        ...     updates, state = tx.update(jax.grad(loss)(params), state)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-10)
        True
    """
    from ..optimizers._optax_face import as_optax, check_num_steps

    check_num_steps(num_steps)
    opt, _, _ = load_learned_optimizer(path, step, family=family)
    if opt.uses_horizon and num_steps is None:
        raise ValueError(
            f"The optimizer at {path} ({type(opt).__name__}) uses the training fraction t / num_steps: pass "
            "load_optimizer(..., num_steps=N), N the optimizee steps you will run."
        )
    return as_optax(opt, num_steps=num_steps)
