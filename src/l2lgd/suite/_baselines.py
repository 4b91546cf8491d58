"""The suite's baselines, each tuned per task, and the disk cache that keeps their results.

Each baseline is a learning rate -> optax transformation (given the task's horizon, for the
cosine decay), from the registry `l2lgd.optimizers._baselines.BASELINES`. Its learning rate is
chosen on validation instances from a half-decade grid, widened where the choice sits at an edge
(and marked if it still does).

Results are cached on disk, keyed by the task's definition (the family's fields and the source of
every class of the family and of the loss it samples, base classes included), the baseline's
definition (its source), the suite's settings and the versions of JAX, optax and l2lgd: a change
of any recomputes them. Each entry also keeps the task's `fingerprint` (the loss, gradient norm,
parameter norm and metrics at initialization of two validation instances, and the size of the
data they hold): an entry whose fingerprint is not the task's now (its code or data changed
in a way the key does not see) is recomputed, and so is an entry that is damaged (not JSON, or
not the schema of a result), each with a warning.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..optimizers import _baselines as registry

CACHE_VARIABLE = "L2LGD_SUITE_CACHE"
CACHE_FORMAT = 2  # 2: every class's source, the library versions, the fingerprint


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


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined in an interactive session: the fingerprint still tells
        return f"(no source: {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))})"


def _module_types(tree, found: dict | None = None) -> dict[str, type]:
    """The classes of `tree` and of every Equinox module inside it (fields, lists, dicts)."""
    import dataclasses

    import equinox as eqx

    found = {} if found is None else found
    if isinstance(tree, eqx.Module):
        cls = type(tree)
        if f"{cls.__module__}.{cls.__qualname__}" in found:
            return found
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        for field in dataclasses.fields(tree):
            _module_types(getattr(tree, field.name, None), found)
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            _module_types(item, found)
    elif isinstance(tree, dict):
        for item in tree.values():
            _module_types(item, found)
    return found


def sources(family) -> dict[str, str]:
    """The source of every class a task of `family` runs: the family's class and its bases, and the
    classes of the loss it samples (and of the modules inside it) and their bases, but for
    Python's, Equinox's and `TaskFamily`'s own."""
    import equinox as eqx
    import jax

    from ..tasks import TaskFamily

    loss_fn, _ = eqx.filter_eval_shape(family.sample, jax.random.key(0))
    classes = {**_module_types(family), **_module_types(loss_fn)}
    out = {}
    for cls in classes.values():
        for base in cls.__mro__:
            if base in (object, eqx.Module, TaskFamily) or base.__module__.split(".")[0] in ("builtins", "abc", "typing", "equinox"):
                continue
            out.setdefault(f"{base.__module__}.{base.__qualname__}", _source(base))
    return dict(sorted(out.items()))


def versions() -> dict[str, str]:
    """The versions of the libraries a cached result depends on."""
    import jax
    import optax

    from .._version import __version__

    return {"jax": jax.__version__, "optax": optax.__version__, "l2lgd": __version__}


def definition(task, baseline: str, settings: dict[str, Any], classes: dict[str, str] | None = None) -> dict[str, Any]:
    """What a cached result depends on, as JSON-able text (`classes`: `sources(task.family)`,
    computed when not given)."""
    return {
        "format": CACHE_FORMAT,
        "task": task.name,
        "family": repr(task.family),
        "sources": sources(task.family) if classes is None else classes,
        "baseline": baseline,
        "baseline_source": _source(BASELINES[baseline]),
        "settings": settings,
        **versions(),
    }


def rival_definition(task, rival: str, settings: dict[str, Any], classes: dict[str, str] | None = None) -> dict[str, Any]:
    """What a tuning-free rival's cached result depends on: as `definition`, with the rival's
    source (its `make` and `eval_params`) for the baseline's; its entry is named `rival.NAME`
    (the tuned baselines' entries and keys are untouched)."""
    made = registry.TUNING_FREE[rival]
    return {
        "format": CACHE_FORMAT,
        "task": task.name,
        "family": repr(task.family),
        "sources": sources(task.family) if classes is None else classes,
        "baseline": "rival." + "".join(c if c.isalnum() or c in "_." else "_" for c in rival),
        "rival": rival,
        "baseline_source": _source(made.make) + ("" if made.eval_params is None else _source(made.eval_params)),
        "scored": "as run" if made.eval_params is None else "losses and metrics at eval_params, each step",
        "settings": settings,
        **versions(),
    }


FAST_COMPILE = {"xla_backend_optimization_level": 0}
FINGERPRINT_INSTANCES = 2
# How far a fingerprint may move and still be the task's. Processes with other XLA flags (threads,
# optimization level) could round these float32 values differently by a few units in the last
# place (about 1e-7 relative; measured: bit-identical for all 24 tasks between the command line's
# flags and the tests'); a change of a task's code or data moves them by far more (a loss scaled
# by 100, another data set or initialization; one sample of a thousand moves a full-batch loss by
# about 1e-3).
FINGERPRINT_RTOL = 1e-5


def fingerprint(family) -> dict[str, list[float]]:
    """The numbers a task family's tasks begin with, on the first `FINGERPRINT_INSTANCES`
    validation instances: the minibatch loss, the gradient norm and the parameter norm at
    initialization, every metric there, and the sum of absolute values and of squares of the
    arrays its loss holds (its data), in float64 on the host. Compiled afresh each call, so a loss
    redefined in this process is seen."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .._evaluate import task_keys
    from ..tasks import draw_task
    from ._tasks import INSTANCE_SEEDS

    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))

    def probe(key):
        loss_fn, params, minibatch = draw_task(family, key)
        loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.wrap_key_data(minibatch))
        numbers = {"loss": loss, "gradient_norm": norm(grads), "params_norm": norm(params),
                   **{f"metric {k}": v for k, v in family.metrics(loss_fn, params).items()}}
        data = [x for x in jax.tree.leaves(eqx.filter(loss_fn, eqx.is_array))
                if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
        return numbers, data

    numbers, data = jax.jit(jax.vmap(probe), compiler_options=FAST_COMPILE)(
        task_keys(INSTANCE_SEEDS["validation"], FINGERPRINT_INSTANCES))
    out = {k: [float(v) for v in np.asarray(values, dtype=np.float64)] for k, values in numbers.items()}
    for i, leaf in enumerate(data):
        leaf = np.asarray(leaf, dtype=np.float64)
        out[f"data {i} {list(leaf.shape[1:])}"] = [float(np.sum(np.abs(leaf))), float(np.sum(np.square(leaf)))]
    return out


def same_fingerprint(a, b, rtol: float = FINGERPRINT_RTOL) -> bool:
    """Whether two fingerprints name the same numbers (equal names, each value within `rtol`;
    NaN equals NaN)."""
    if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
            return False
        for u, v in zip(x, y):
            if not _is_number(u) or not _is_number(v):
                return False
            if not (u == v or (math.isnan(u) and math.isnan(v)) or math.isclose(u, v, rel_tol=rtol, abs_tol=1e-30)):
                return False
    return True


def cache_key(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:24]


def entry_path(directory: Path, definition: dict[str, Any]) -> Path:
    return Path(directory) / f"{definition['task']}-{definition['baseline']}-{cache_key(definition)}.json"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _stats_problem(stats) -> str | None:
    if not isinstance(stats, dict) or set(stats) != {"mean", "ci95", "nonfinite"}:
        return "not {mean, ci95, nonfinite}"
    if not (_is_number(stats["mean"]) and _is_number(stats["ci95"])):
        return "a mean or CI that is not a number"
    if not isinstance(stats["nonfinite"], int) or isinstance(stats["nonfinite"], bool) or stats["nonfinite"] < 0:
        return "a count that is not a count"
    return None


def problem(result, *, steps: int | None = None, metrics=None, rival: bool = False) -> str | None:
    """What is wrong with a cached result (None: nothing): its schema, that of `tune_baseline`'s
    result (`rival`: `run_rival`'s, without a learning rate), with curves of `steps` values and
    the figures of `metrics` (when given)."""
    if not isinstance(result, dict):
        return "the result is not an object"
    missing = ({"test", "seconds"} if rival else {"lr", "grid_edge", "validation", "test", "seconds"}) - set(result)
    if missing:
        return f"no {', '.join(sorted(missing))}"
    if rival:
        if not _is_number(result["seconds"]):
            return "seconds of the wrong type"
    elif not _is_number(result["lr"]) or not (result["lr"] > 0 and math.isfinite(result["lr"])):
        return f"lr {result['lr']!r} is not a positive number"
    elif not isinstance(result["grid_edge"], bool) or not _is_number(result["seconds"]):
        return "grid_edge or seconds of the wrong type"
    elif not isinstance(result["validation"], dict) or not all(_is_number(v) for v in result["validation"].values()):
        return "validation scores that are not numbers"
    test = result["test"]
    if not isinstance(test, dict) or "train_loss" not in test or "curve" not in test or "nonfinite_runs" not in test:
        return "test figures without train_loss, curve or nonfinite_runs"
    if metrics is not None and set(test) - {"curve", "nonfinite_runs"} != set(metrics):
        return f"test figures {sorted(set(test) - {'curve', 'nonfinite_runs'})}, not the task's metrics {sorted(metrics)}"
    for name, stats in test.items():
        if name in ("curve", "nonfinite_runs"):
            continue
        why = _stats_problem(stats)
        if why:
            return f"test {name}: {why}"
    runs = test["nonfinite_runs"]
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
        return "nonfinite_runs is not a count"
    curve = test["curve"]
    if not isinstance(curve, dict) or set(curve) != {"mean", "p10", "p90"}:
        return "a curve that is not {mean, p10, p90}"
    for name, values in curve.items():
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            return f"curve {name} is not a list of numbers"
        if steps is not None and len(values) != steps:
            return f"curve {name} has {len(values)} steps, not {steps}"
    return None


def load_cached(directory: Path, definition: dict[str, Any], *, fingerprint: dict | None = None, steps: int | None = None,
                metrics=None, rival: bool = False) -> dict[str, Any] | None:
    """The cached result for `definition`, or None when there is none, or it is damaged (not JSON,
    or not a result of that schema: `problem`) or stale (another definition, or a fingerprint
    other than `fingerprint`); a damaged or stale entry is reported with a warning."""
    path = entry_path(directory, definition)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        warnings.warn(f"suite cache: {path} is unreadable ({e}); recomputing it.", stacklevel=2)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        warnings.warn(f"suite cache: {path} is damaged (not JSON: {e}); recomputing it.", stacklevel=2)
        return None
    if not isinstance(data, dict) or data.get("definition") != definition:
        warnings.warn(f"suite cache: {path} is damaged (not the entry of its key); recomputing it.", stacklevel=2)
        return None
    why = problem(data.get("result"), steps=steps, metrics=metrics, rival=rival)
    if why:
        warnings.warn(f"suite cache: {path} is damaged ({why}); recomputing it.", stacklevel=2)
        return None
    if fingerprint is not None and not same_fingerprint(data.get("fingerprint"), fingerprint):
        warnings.warn(f"suite cache: {path} was computed on other numbers than {definition['task']!r} gives now (its loss, "
                      "gradients, metrics or data at initialization changed); recomputing it.", stacklevel=2)
        return None
    return data["result"]


def check_writable(directory: Path) -> Path:
    """`directory`, made if need be, after checking that a file can be written in it; else a
    one-line error that says how to run without the cache."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ValueError(f"The suite's baseline cache {directory} is not writable ({e.strerror or e}); set "
                         f"${CACHE_VARIABLE} to a writable folder, or run without it (--no-cache; cache=None).") from None
    return directory


def store(directory: Path, definition: dict[str, Any], result: dict[str, Any], fingerprint: dict | None = None) -> Path:
    """Writes a result atomically (a temporary file renamed into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = entry_path(directory, definition)
    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    entry = {"definition": definition, "fingerprint": fingerprint, "result": result}
    try:
        staging.write_text(json.dumps(entry) + "\n")
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    return path
