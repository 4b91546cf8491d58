"""Shipping a run's optimizer into `checkpoints/` (`--ship`), and comparing two exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np

from ._exports import EXPORT, copy_export
from ._loading import load_learned_optimizer
from ._shipped import checkout_dir, shipped_folder


def compare_exports(new: Path, old: Path) -> str | None:
    """None when the two exported optimizers have bit-identical weights and the same config;
    else how they differ, in words."""
    if not (old / "optimizer").is_dir():
        return "there is no shipped optimizer yet"
    new_opt, new_config, new_metrics = load_learned_optimizer(new)
    old_opt, old_config, old_metrics = load_learned_optimizer(old)
    changed = new_config.changed_fields(old_config, ignore=())
    if changed:
        return f"its config differs in {', '.join(changed)}"
    a, b = jax.tree.leaves(new_opt), jax.tree.leaves(old_opt)
    if all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)):
        return None
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    return (f"its weights differ (largest difference {diff:.3g}; exported meta-step {new_metrics['step']:,} vs "
            f"{old_metrics['step']:,}; validation {new_metrics['validation_log10_final']:.3f} vs "
            f"{old_metrics['validation_log10_final']:.3f})")


def ship(run_dir: Path, name: str) -> str:
    """Replaces the shipped optimizer `name` (and its config.json) with the run's export, unless
    they are bit-identical, in which case nothing is written. Returns what happened."""
    if checkout_dir("checkpoints") is None:
        raise FileNotFoundError("This l2lgd is an installed copy: --ship writes into a checkout's checkpoints/ only "
                                "(ship from a clone of the repository, installed with `pip install -e .`).")
    target = shipped_folder(name)
    difference = compare_exports(run_dir, target)
    if difference is None:
        return f"{run_dir} reproduces the shipped optimizer {target} bit for bit; left it untouched."
    target.mkdir(parents=True, exist_ok=True)
    copy_export(run_dir, target)
    shutil.copy(run_dir / "config.json", target / "config.json")
    return f"shipped {run_dir / EXPORT} to {target / EXPORT} ({difference})."
