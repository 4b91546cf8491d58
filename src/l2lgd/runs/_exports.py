"""Exported (trained) optimizers: `<run_dir>/optimizer/<step>/` holds the weights (`weights`),
config, metrics and checksums of one snapshot, nothing else. This is what `load_optimizer`
loads and what the repository ships."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp

from .._config import Config
from ..optimizers._learned import LearnedOptimizer, make_optimizer
from ._shipped import resolve_optimizer_path
from ._snapshots import SNAPSHOTS, restore_state
from ._storage import (
    check_shapes, checksums, config_json, find_steps, is_array_like, manager, parse_config, read_json_item, restore_item,
)

EXPORT = "optimizer"


def skeleton(config: Config) -> LearnedOptimizer:
    """The optimizer that `config` builds, to be filled with stored weights."""
    return eqx.filter_eval_shape(lambda: make_optimizer(config, key=jax.random.key(0)))


def export_optimizer(run_dir: str | Path, theta: Any, config: Config, metrics: dict[str, Any]) -> Path:
    """Writes `<run_dir>/optimizer/<step>/`: weights, config, metrics and checksums of a trained
    optimizer. Atomic: the new export is complete on disk before the old one is removed."""
    directory = Path(run_dir) / EXPORT
    staging = Path(run_dir) / f".{EXPORT}.new"
    if staging.exists():
        shutil.rmtree(staging)
    writer = manager(staging)
    writer.save(
        int(metrics["step"]),
        args=ocp.args.Composite(
            weights=ocp.args.StandardSave(theta),
            config=ocp.args.JsonSave(config_json(config)),
            metrics=ocp.args.JsonSave(metrics),
            checksums=ocp.args.JsonSave({"weights": checksums(theta)}),
        ),
    )
    writer.wait_until_finished()
    writer.close()
    replace_folder(staging, directory)
    return directory


def copy_export(run_dir: Path, out: Path) -> None:
    """Copies `run_dir`'s exported optimizer to `out/optimizer`, atomically (`replace_folder`)."""
    staging = Path(out) / f".{EXPORT}.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(Path(run_dir) / EXPORT, staging)
    replace_folder(staging, Path(out) / EXPORT)


def replace_folder(new: Path, target: Path) -> None:
    """Puts the complete folder `new` at `target`: the old one is moved aside first and removed
    only once `new` is in place, so a crash leaves one of them whole."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


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


def load_optimizer(path: str | Path, step: int | None = None, *, family=None):
    """A trained optimizer as an `optax.GradientTransformation`.

    Args:
        path: a run folder such as `checkpoints/log30` (or its `optimizer/` folder), or the
            name of a shipped optimizer (`l2lgd.list_optimizers()`), e.g. "log30".
        step: None for the exported best snapshot; else the snapshot at that meta-step.
        family: as for `load_learned_optimizer`.

    Returns:
        The optimizer as optax's `init`/`update` pair (see `as_optax`); its config and metrics
        come with `load_learned_optimizer`.

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
    from ..optimizers._optax_face import as_optax

    opt, _, _ = load_learned_optimizer(path, step, family=family)
    return as_optax(opt)
