"""Finding and loading the experiment files in `experiments/` (one `CONFIG` per file)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType


def experiments_dir() -> Path:
    """`$L2LGD_EXPERIMENTS`, else `./experiments`, else the repository's `experiments/`."""
    if "L2LGD_EXPERIMENTS" in os.environ:
        return Path(os.environ["L2LGD_EXPERIMENTS"])
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments"


def list_experiments(directory: Path | None = None) -> list[str]:
    directory = directory or experiments_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))


def load_experiment(name: str, directory: Path | None = None) -> ModuleType:
    """The module `experiments/<name>.py`; it defines `CONFIG` and, for the seed's experiments,
    `SEED_FIGURE` and `ROLLING_WINDOW`."""
    directory = directory or experiments_dir()
    path = directory / f"{name}.py"
    known = list_experiments(directory)
    if name not in known:
        raise ValueError(
            f"Unknown experiment {name!r}. Experiments in {directory}: {', '.join(known) or '(none)'}."
        )
    spec = importlib.util.spec_from_file_location(f"l2lgd_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "CONFIG"):
        raise ValueError(f"{path} defines no CONFIG.")
    return module
