"""The record of a run: every meta-step's log10 final loss, float32, appended to
`<run_dir>/final_log10.f32` as training goes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

RECORD = "final_log10.f32"


def append_record(run_dir: Path, values: np.ndarray) -> None:
    with open(Path(run_dir) / RECORD, "ab") as f:
        f.write(np.asarray(values, dtype="<f4").tobytes())


def load_record(run_dir: str | Path) -> np.ndarray:
    """Every meta-step's log10 final loss of a run, in order (float32)."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"No meta-training record at {path}: train with `make train` first.")
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").copy()


def truncate_record(run_dir: Path, num_steps: int) -> None:
    """Keeps the first `num_steps` entries: the ones that a restored snapshot has seen."""
    path = Path(run_dir) / RECORD
    size = path.stat().st_size if path.exists() else 0
    if size < 4 * num_steps:
        warnings.warn(
            f"{path} holds {size // 4} meta-steps but the snapshot to resume is at step {num_steps}: "
            "the missing entries are recorded as NaN (the weights are unaffected).",
            stacklevel=2,
        )
        with open(path, "ab") as f:
            f.truncate(size // 4 * 4)
            f.write(np.full(num_steps - size // 4, np.nan, dtype="<f4").tobytes())
    with open(path, "r+b") as f:
        f.truncate(4 * num_steps)
