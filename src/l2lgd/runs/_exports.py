"""Exporting a trained optimizer: `<run_dir>/optimizer/<step>/` holds the weights (`weights`),
config, metrics and checksums of one snapshot, nothing else. This is what `_loading` loads and
what the repository ships."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

import orbax.checkpoint as ocp

from .._config import Config
from ..optimizers._base import LearnedOptimizer
from ..optimizers._kinds import make_optimizer
from ._storage import checksums, config_json, manager

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
