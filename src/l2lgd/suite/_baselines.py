"""The suite's baselines, each tuned per task, and the disk cache that keeps their results.

Each baseline is a learning rate -> optax transformation (given the task's horizon, for the
cosine decay), from the registry `l2lgd.optimizers._baselines.BASELINES`. Its learning rate is
chosen on validation instances from a half-decade grid, widened where the choice sits at an edge
(and marked if it still does). Results are cached on disk, keyed by the task's definition (the
family's fields and the source of its class), the baseline's definition (its source) and the
suite's settings: a change of any recomputes them, and a damaged or stale cache file is
recomputed, not trusted.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from ..optimizers import _baselines as registry

CACHE_VARIABLE = "L2LGD_SUITE_CACHE"
CACHE_FORMAT = 1


# The suite's own choice from the one registry of baselines (`l2lgd.optimizers._baselines`).
BASELINES: dict[str, registry.Baseline] = {
    name: registry.BASELINES[name] for name in ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw_cosine")
}

# Half-decade grids: log10 learning rates from -4 to 0 in steps of 0.5, widened by one decade at
# an edge where the choice sits, down to 1e-7 and up to 1e2. `GRID` (its exponents) is part of
# the cache key.
LEARNING_RATES = registry.LearningRateGrid(low=-4.0, high=0.0, per_decade=2, floor=-7.0, ceiling=2.0)
GRID = tuple(LEARNING_RATES.exponents())


def cache_dir() -> Path:
    """`$L2LGD_SUITE_CACHE`, else `$XDG_CACHE_HOME/l2lgd/suite` (`~/.cache/l2lgd/suite`)."""
    value = os.environ.get(CACHE_VARIABLE)
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2lgd" / "suite"


def definition(task, baseline: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a cached result depends on, as JSON-able text."""
    import jax

    return {
        "format": CACHE_FORMAT,
        "task": task.name,
        "family": repr(task.family),
        "family_source": inspect.getsource(type(task.family)),
        "baseline": baseline,
        "baseline_source": inspect.getsource(BASELINES[baseline]),
        "settings": settings,
        "jax": jax.__version__,
    }


def cache_key(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:24]


def load_cached(directory: Path, definition: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result for `definition`, or None when there is none, or it is damaged or stale."""
    path = Path(directory) / f"{definition['task']}-{definition['baseline']}-{cache_key(definition)}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("definition") != definition or not isinstance(data.get("result"), dict):
        return None
    return data["result"]


def store(directory: Path, definition: dict[str, Any], result: dict[str, Any]) -> Path:
    """Writes a result atomically (a temporary file renamed into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{definition['task']}-{definition['baseline']}-{cache_key(definition)}.json"
    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    staging.write_text(json.dumps({"definition": definition, "result": result}) + "\n")
    staging.replace(path)
    return path
