"""Experiments: what each file of `experiments/` declares (`Experiment`), found and loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Mapping

from .._config import Config
from ..tasks import TaskFamily
from ._shipped import shipped_dir


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment file's declaration: `EXPERIMENT = Experiment(config=Config(...), ...)`.

    Args:
        config: what is trained (the optimizer, the meta-objective, the meta-training).
        checkpoint_every: meta-steps between snapshots (each scored on validation tasks).
        validation_tasks: validation tasks for model selection and for tuning baselines.
        eval_tasks: test tasks of `make eval`.
        rolling_window: meta-steps in the rolling mean of the final loss that `make reproduce`
            reports during meta-training.
        reference_figure: the reference notebook's figure for that rolling mean (for its own
            six experiments), or None.
        family: a `TaskFamily` to train on instead of the one `config.task` names.
        validation_family: a `TaskFamily` (e.g. the suite's `validation` split as a mixture) to
            score snapshots on instead of `family`, so that model selection never sees a
            training family.
        ablations: the variants `python -m l2lgd ablate` trains, name -> Config changes.
        ablation_base: Config changes applied to every ablation variant (e.g. fewer meta-steps).
        score_start: snapshot and score the starting optimizer too (`RunOptions.score_start`), so
            that model selection may keep the start (a kind that starts as a hand-designed rule).
    """

    config: Config
    checkpoint_every: int = 5_000
    validation_tasks: int = 1_000
    eval_tasks: int = 10_000
    rolling_window: int = 5_000
    reference_figure: float | None = None
    family: Any = None
    validation_family: Any = None
    ablations: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    ablation_base: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    score_start: bool = False

    def __post_init__(self):
        if not isinstance(self.config, Config):
            raise TypeError(f"Experiment.config must be a Config, got {type(self.config).__name__}.")
        if isinstance(self.family, type):
            raise TypeError(f"Experiment.family must be a TaskFamily instance, got the class {self.family.__name__}: "
                            f"write {self.family.__name__}(...).")
        for field in ("family", "validation_family"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, TaskFamily):
                raise TypeError(f"Experiment.{field} must be an l2lgd TaskFamily or None, got {type(value).__name__}.")
        for field in ("checkpoint_every", "validation_tasks", "eval_tasks", "rolling_window"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Experiment.{field} must be a positive integer, got {value!r}.")
        if not isinstance(self.score_start, bool):
            raise ValueError(f"Experiment.score_start must be True or False, got {self.score_start!r}.")


# The module constants of experiment files written before `Experiment`, and their fields.
_LEGACY = {
    "CHECKPOINT_EVERY": "checkpoint_every", "VALIDATION_PROBLEMS": "validation_tasks",
    "EVAL_PROBLEMS": "eval_tasks", "ROLLING_WINDOW": "rolling_window", "SEED_FIGURE": "reference_figure",
    "FAMILY": "family", "ABLATIONS": "ablations", "ABLATION_BASE": "ablation_base",
}


def experiments_dir() -> Path:
    """`$L2LGD_EXPERIMENTS`, else `./experiments`, else the shipped experiments (the checkout's,
    or the copy inside an installed package)."""
    if "L2LGD_EXPERIMENTS" in os.environ:
        return Path(os.environ["L2LGD_EXPERIMENTS"])
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    return shipped_dir("experiments") or here


def list_experiments(directory: Path | None = None) -> list[str]:
    directory = directory or experiments_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.py") if not p.stem.startswith("_"))


def is_experiment_path(name: str) -> bool:
    """Whether `name` names an experiment file (`path/to/file.py`) rather than a shipped name."""
    return name.endswith(".py")


def load_experiment(name: str, directory: Path | None = None) -> Experiment:
    """The `Experiment` that `experiments/<name>.py` declares, or the file `name` when it ends in
    `.py` (anywhere on disk). A file declares `EXPERIMENT = Experiment(...)`; a file with only
    `CONFIG = Config(...)` (and optionally the older module constants, `_LEGACY`) works too."""
    if is_experiment_path(name):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"No experiment file {path}.")
        name = path.stem
    else:
        given = directory is not None
        directory = directory or experiments_dir()
        path = directory / f"{name}.py"
        known = list_experiments(directory)
        shipped = shipped_dir("experiments")
        if name not in known and not given and shipped is not None and shipped.resolve() != directory.resolve():
            # A local `experiments/` without it: the shipped one of that name, said so.
            if name in list_experiments(shipped):
                print(f"[l2lgd] {name!r} is not in {directory}; using the shipped experiment {shipped / (name + '.py')}.",
                      file=sys.stderr)
                directory, path, known = shipped, shipped / f"{name}.py", list_experiments(shipped)
        if name not in known:
            also = (f"; shipped experiments in {shipped}: {', '.join(list_experiments(shipped)) or '(none)'}"
                    if shipped is not None and shipped.resolve() != directory.resolve() else "")
            raise ValueError(
                f"Unknown experiment {name!r}. Experiments in {directory}: {', '.join(known) or '(none)'}{also}."
            )
    spec = importlib.util.spec_from_file_location(f"l2lgd_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (ValueError, TypeError) as e:  # name the file and line, not only the message
        frame = next((f for f in reversed(traceback.extract_tb(e.__traceback__)) if Path(f.filename) == path.resolve()
                      or f.filename == str(path)), None)
        where = f"{path}, line {frame.lineno}" if frame else str(path)
        raise type(e)(f"{where}: {e}") from None
    if hasattr(module, "EXPERIMENT"):
        if not isinstance(module.EXPERIMENT, Experiment):
            raise TypeError(f"{path}: EXPERIMENT must be an l2lgd Experiment, got {type(module.EXPERIMENT).__name__}.")
        return module.EXPERIMENT
    if not hasattr(module, "CONFIG"):
        raise ValueError(f"{path} declares no EXPERIMENT (nor a CONFIG).")
    return Experiment(config=module.CONFIG, **{field: getattr(module, k) for k, field in _LEGACY.items() if hasattr(module, k)})
