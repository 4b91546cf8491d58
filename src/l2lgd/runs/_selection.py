"""Model selection: the best snapshot of a run by its validation score, and the best of several
runs (seeds) by their exports'."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from ._exports import EXPORT, copy_export
from ._snapshots import RunCheckpoints
from ._storage import find_steps, read_json_item


def select_best(checkpoints: RunCheckpoints, skip=()) -> tuple[int, float]:
    """The snapshot with the lowest validation score (ties: the later one); snapshots in `skip`
    and those whose metrics cannot be read (with a warning) are left out."""
    best = None
    for step in checkpoints.steps():
        if step in skip:
            continue
        try:
            score = checkpoints.metrics(step).get("validation_log10_final", math.inf)
        except ValueError as e:
            warnings.warn(f"{e} Model selection skips snapshot {step}.", stacklevel=2)
            continue
        if not math.isfinite(score):
            continue
        if best is None or score <= best[1]:
            best = (step, score)
    if best is None:
        raise ValueError(f"No intact snapshot in {checkpoints.directory} has a finite validation score.")
    return best


def export_best_of(run_dirs: list[Path], out: str | Path) -> Path:
    """Copies the exported optimizer with the best validation score among `run_dirs` to
    `<out>/optimizer` (model selection across seeds)."""
    scored = []
    for run_dir in run_dirs:
        folder = Path(run_dir) / EXPORT
        steps = find_steps(folder) if folder.is_dir() else []
        if steps:
            metrics = read_json_item(folder / str(steps[-1]), "metrics")
            scored.append((metrics["validation_log10_final"], Path(run_dir)))
    if not scored:
        raise ValueError(f"None of {[str(r) for r in run_dirs]} holds an exported optimizer.")
    _, best = min(scored)
    copy_export(best, Path(out))
    return best
