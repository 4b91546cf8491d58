"""Finding and loading the experiment files in `experiments/` (one `CONFIG` per file)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType


def experiments_dir() -> Path:
    """`$L2LGD_EXPERIMENTS`, else `./experiments`, else the shipped experiments (the checkout's,
    or the copy inside an installed package)."""
    if "L2LGD_EXPERIMENTS" in os.environ:
        return Path(os.environ["L2LGD_EXPERIMENTS"])
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    from ._shipped import shipped_dir

    return shipped_dir("experiments") or here


def list_experiments(directory: Path | None = None) -> list[str]:
    directory = directory or experiments_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))


def is_experiment_path(name: str) -> bool:
    """Whether `name` names an experiment file (`path/to/file.py`) rather than a shipped name."""
    return name.endswith(".py")


def load_experiment(name: str, directory: Path | None = None) -> ModuleType:
    """The module `experiments/<name>.py`, or the file `name` when it ends in `.py` (anywhere on
    disk). It defines `CONFIG`; it may define `FAMILY` (a `TaskFamily` to train on instead of
    the one `CONFIG.task` names) and, for the seed's experiments, `SEED_FIGURE` and
    `ROLLING_WINDOW`."""
    if is_experiment_path(name):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"No experiment file {path}.")
        name = path.stem
    else:
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
