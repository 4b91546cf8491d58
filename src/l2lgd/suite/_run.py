"""Running an optimizer through the suite: per task, the optimizer on test instances against each
baseline tuned on validation instances; over the suite, how often and by how much it wins."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import re
import time
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._evaluate import _run_task, ci95_half_width, task_keys
from ..optimizers._baselines import TUNING_FREE
from . import _baselines as baselines
from . import _profiles
from ._tasks import INSTANCE_SEEDS, SuiteTask, select


@dataclasses.dataclass(frozen=True)
class Settings:
    """How many instances a task is judged on, and (quick runs) a cap on its horizon."""

    validation_instances: int = 16
    test_instances: int = 50
    horizon_cap: int | None = None
    horizon_scale: int = 1  # run every task for this many times its horizon ("longer than it trained")

    def __post_init__(self):
        for field in ("validation_instances", "test_instances", "horizon_cap", "horizon_scale"):
            value = getattr(self, field)
            if field == "horizon_cap" and value is None:
                continue
            least = 2 if field.endswith("instances") else 1
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < least:
                what = f"an integer of at least {least}" + (" or None" if field == "horizon_cap" else "")
                raise ValueError(f"Settings.{field} must be {what}, got {value!r}.")
            object.__setattr__(self, field, int(value))  # a NumPy integer is stored as Python's

    def steps_for(self, task: SuiteTask) -> int:
        """The steps `task` runs for: its horizon times `horizon_scale`, at most `horizon_cap`."""
        horizon = task.horizon * self.horizon_scale
        return horizon if self.horizon_cap is None else min(horizon, self.horizon_cap)

    def for_task(self, task: SuiteTask) -> "Settings":
        """These settings on `task`: its instances capped at `task.max_instances` (large models)."""
        cap = task.max_instances
        if cap is None or (self.validation_instances <= cap and self.test_instances <= cap):
            return self
        return dataclasses.replace(self, validation_instances=min(self.validation_instances, cap),
                                   test_instances=min(self.test_instances, cap))


QUICK = Settings(validation_instances=4, test_instances=8, horizon_cap=50)
QUICK_TASKS = ("linreg_cond1e4", "quadratic_cond1e4", "logreg_cond10_d50")


def _instances(task: SuiteTask, kind: str, n: int) -> jax.Array:
    return task_keys(INSTANCE_SEEDS[kind], n)


# XLA's backend optimizations cost a baseline's program several times its compile time and save
# it less in run time than that: a baseline's program runs about a dozen times, once per learning
# rate, so it compiles without them, except where the unoptimized program is far slower
# (convolutions).
FAST_COMPILE = baselines.FAST_COMPILE
# Kinds whose programs XLA optimizes fully (the others compile at level 0: small tasks run about
# as fast and compile far faster); large models (`SuiteTask.max_instances`) are optimized too.
OPTIMIZED_KINDS = ("conv", "transformer")


def _optimized(task: SuiteTask) -> bool:
    return task.kind in OPTIMIZED_KINDS or task.max_instances is not None


def _runner(family, horizon: int, make_tx, *, fast_compile: bool = False):
    """`run(lr, keys) -> (losses [N, T], metrics)`, jitted once: `make_tx(lr)` on each instance."""

    def run(lr, keys):
        def one(key):
            loss_fn, params, losses = _run_task(make_tx(lr), family, key, horizon)
            return losses, family.metrics(loss_fn, params)

        return jax.vmap(one)(keys)

    return jax.jit(run, compiler_options=FAST_COMPILE if fast_compile else None)


_BASELINE_RUNNERS: dict = {}


def _baseline_runner(task: SuiteTask, name: str, horizon: int, identity: str = ""):
    """The compiled program of baseline `name` on `task` (one per process: the learning rate is
    its argument; `identity`, a digest of the task's sources and fingerprint, tells a task whose
    loss was redefined since)."""
    key = (task.name, repr(task.family), name, horizon, identity)
    if key not in _BASELINE_RUNNERS:
        make = baselines.BASELINES[name]
        fast = not _optimized(task)
        _BASELINE_RUNNERS[key] = (make, _runner(task.family, horizon, lambda rate: make(rate, horizon), fast_compile=fast))
    made, runner = _BASELINE_RUNNERS[key]
    if made is not baselines.BASELINES[name]:  # redefined since: compile the new one
        del _BASELINE_RUNNERS[key]
        return _baseline_runner(task, name, horizon, identity)
    return runner


def _in_chunks(run, lr, keys, size: int):
    """`run(lr, keys)` on `size` keys at a time (one compiled shape), the last chunk padded with
    copies of its first key and trimmed."""
    parts = []
    for start in range(0, len(keys), size):
        chunk = keys[start:start + size]
        n = len(chunk)
        if n < size:
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[:1], size - n)])
        parts.append(jax.tree.map(lambda x, n=n: x[:n], run(lr, chunk)))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _stats(values) -> dict[str, Any]:
    """Mean and 95% CI half-width over the finite values, and how many were not finite."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"mean": float(finite.mean()) if finite.size else math.inf, "ci95": ci95_half_width(finite),
            "nonfinite": int(values.size - finite.size)}


def summarize_run(losses, metrics) -> dict[str, Any]:
    """The figures of one optimizer's test instances: final training loss (full batch, at the
    params after the last step), test loss and accuracy where the family has them, and the
    per-step mean and 10-90% band of the recorded losses."""
    losses = np.asarray(losses, dtype=np.float64)
    out = {name: _stats(values) for name, values in metrics.items()}
    with np.errstate(invalid="ignore"):
        out["curve"] = {
            "mean": np.nanmean(np.where(np.isfinite(losses), losses, np.nan), axis=0).tolist(),
            "p10": np.nanpercentile(np.where(np.isfinite(losses), losses, np.nan), 10, axis=0).tolist(),
            "p90": np.nanpercentile(np.where(np.isfinite(losses), losses, np.nan), 90, axis=0).tolist(),
        }
    out["nonfinite_runs"] = int(np.sum(~np.all(np.isfinite(losses), axis=1) | ~np.isfinite(np.asarray(metrics["train_loss"]))))
    return out


def _validation_score(metrics) -> float:
    finals = np.asarray(metrics["train_loss"], dtype=np.float64)
    return float(finals.mean()) if np.all(np.isfinite(finals)) else math.inf


def task_identity(task: SuiteTask) -> dict[str, Any]:
    """What the cache checks a task's results against: the sources of its classes
    (`_baselines.sources`, part of the key) and its `fingerprint` (checked on reading)."""
    return {"sources": baselines.sources(task.family), "fingerprint": baselines.fingerprint(task.family)}


def _described(settings: Settings) -> dict[str, Any]:
    described = dataclasses.asdict(settings)
    if described["horizon_scale"] == 1:  # as cached before the field existed
        del described["horizon_scale"]
    return described


def _store(cache: Path, definition, result, identity, what: str, task: SuiteTask) -> None:
    try:
        baselines.store(cache, definition, result, identity["fingerprint"])
    except OSError as e:  # the result stands; only its cache entry is lost
        warnings.warn(f"suite cache: could not write {what} on {task.name} into {cache} ({e.strerror or e}); "
                      "it will be computed again next time.", stacklevel=3)


def _rival_runner(task: SuiteTask, name: str, horizon: int):
    """`run(_, keys) -> (losses [N, T], metrics)` of tuning-free rival `name` at its defaults. Where
    it has `eval_params` (schedule-free: the averaged iterate), its losses and metrics are taken
    there: before each step, the loss at the eval params of the state then, on that step's
    minibatch; at the end, the metrics at the final eval params."""
    from .._unroll import run_steps
    from ..tasks import draw_task

    rival = TUNING_FREE[name]
    family = task.family

    def at_eval_params(tx, loss_fn, x0, minibatch_key):
        key = jax.random.wrap_key_data(minibatch_key)  # step t's minibatch: fold_in(key, t), as `run_steps` draws it

        def body(carry, t):
            x, state = carry
            batch = jax.random.fold_in(key, t)
            grads = jax.grad(loss_fn)(x, batch)
            seen = loss_fn(rival.eval_params(state, x), batch)
            updates, state = tx.update(grads, state, x)
            return (optax.apply_updates(x, updates), state), seen

        (x, state), losses = jax.lax.scan(body, (x0, tx.init(x0)), jnp.arange(horizon))
        return rival.eval_params(state, x), losses

    def run(_, keys):
        def one(key):
            tx = rival.make()
            loss_fn, x0, minibatch_key = draw_task(family, key)
            if rival.eval_params is None:
                (params, _), losses = run_steps(tx, loss_fn, x0, tx.init(x0), num_steps=horizon, key=minibatch_key)
            else:
                params, losses = at_eval_params(tx, loss_fn, x0, minibatch_key)
            return losses, family.metrics(loss_fn, params)

        return jax.vmap(one)(keys)

    return jax.jit(run, compiler_options=None if _optimized(task) else FAST_COMPILE)


def run_rival(task: SuiteTask, name: str, settings: Settings, *, cache: Path | None,
              identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tuning-free rival `name` (`TUNING_FREE`) on `task`'s test instances, untuned:
    `{"test": summarize_run(...), "seconds"}`. Cached as the baselines are (entries `rival.NAME`)."""
    horizon = settings.steps_for(task)
    identity = identity or task_identity(task)
    definition = baselines.rival_definition(task, name, _described(settings), identity["sources"])
    metrics = [k.removeprefix("metric ") for k in identity["fingerprint"] if k.startswith("metric ")]
    if cache is not None:
        cached = baselines.load_cached(cache, definition, fingerprint=identity["fingerprint"], steps=horizon,
                                       metrics=metrics, rival=True)
        if cached is not None:
            return cached
    start = time.perf_counter()
    losses, metrics_ = _rival_runner(task, name, horizon)(0.0, _instances(task, "test", settings.test_instances))
    result = {"test": summarize_run(losses, metrics_), "seconds": time.perf_counter() - start}
    if cache is not None:
        _store(cache, definition, result, identity, f"rival {name}", task)
    return result


def tune_baseline(task: SuiteTask, name: str, settings: Settings, *, cache: Path | None, lr: float | None = None,
                  identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Baseline `name` on `task`: its learning rate tuned on validation instances (or `lr`, fixed),
    then its figures on the test instances. Cached (see `_baselines`); `identity`:
    `task_identity(task)`, computed when not given."""
    horizon = settings.steps_for(task)
    identity = identity or task_identity(task)
    described = _described(settings)
    definition = baselines.definition(task, name, {**described, "fixed_lr": lr, "grid": list(baselines.GRID)},
                                      identity["sources"])
    metrics = [k.removeprefix("metric ") for k in identity["fingerprint"] if k.startswith("metric ")]
    if cache is not None:
        cached = baselines.load_cached(cache, definition, fingerprint=identity["fingerprint"], steps=horizon, metrics=metrics)
        if cached is not None:
            return cached
    start = time.perf_counter()
    digest = baselines.cache_key({"sources": identity["sources"], "fingerprint": identity["fingerprint"]})
    run = _baseline_runner(task, name, horizon, digest)
    scores: dict[float, float] = {}
    edge = False
    if lr is None:
        val_keys = _instances(task, "validation", settings.validation_instances)
        lr, scores, edge = baselines.LEARNING_RATES.search(
            lambda rates: {rate: _validation_score(run(jnp.float32(rate), val_keys)[1]) for rate in rates})
    losses, metrics_ = _in_chunks(run, jnp.float32(lr), _instances(task, "test", settings.test_instances),
                                  settings.validation_instances)
    result = {"lr": lr, "grid_edge": edge, "validation": {f"{r:.3g}": s for r, s in sorted(scores.items())},
              "test": summarize_run(losses, metrics_), "seconds": time.perf_counter() - start}
    if cache is not None:
        _store(cache, definition, result, identity, name, task)
    return result


def speedup(curve, reference_curve) -> float | None:
    """VeLO's speed-up over a reference: the steps the reference needs to reach the optimizer's
    final mean loss, over the horizon (> 1: the optimizer is faster). Both curves are smoothed
    over a twentieth of the horizon. None when the reference never reaches it (faster than the
    whole horizon: reported as "> 1")."""
    curve, reference = np.asarray(curve, np.float64), np.asarray(reference_curve, np.float64)
    window = max(1, curve.size // 20)
    target = np.nanmean(curve[-window:])
    if not np.isfinite(target):
        return 0.0
    smooth = np.convolve(np.nan_to_num(reference, nan=np.inf), np.ones(window) / window, mode="valid")
    hits = np.nonzero(smooth <= target)[0]
    if hits.size == 0:
        return None
    return float((hits[0] + window) / curve.size)


@dataclasses.dataclass
class TaskResult:
    """One task's figures: the optimizer's and each tuned baseline's (`summarize_run`), the best
    baseline and the ratios of mean final training loss."""

    name: str
    kind: str
    split: str
    horizon: int
    optimizer: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    best_baseline: str
    ratio_to_best: float
    ratio_to_adam: float
    speedup_over_adam: float | None
    suite_adam: dict[str, Any] | None = None  # Adam at the suite-wide learning rate
    ratio_to_suite_adam: float | None = None
    rivals: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # tuning-free, untuned: `run_rival`
    ratio_to_rivals: dict[str, float] = dataclasses.field(default_factory=dict)
    target: float | None = None  # steps to target: the best tuned baseline's mean final training loss
    steps_to_target: dict[str, float] = dataclasses.field(default_factory=dict)  # per optimizer of the comparison

    def final(self, who: str | None = None) -> dict[str, Any]:
        source = self.optimizer if who is None else self.baselines[who]["test"]
        return source["train_loss"]


@dataclasses.dataclass
class SuiteResult:
    """What `run` returns: the optimizer's name, the settings, each task's figures, the summary."""

    optimizer: str
    settings: dict[str, Any]
    tasks: list[TaskResult]
    summary: dict[str, Any]
    seconds: float
    baseline_seconds: float
    # What the optimizer's numbers were (`optimizer_identity`): a learned one's weights digest, so
    # that a run of another `general` under the same name is never taken for this one's; "" in
    # results written before it was kept.
    optimizer_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# A win is a mean lower by more than this fraction. A copy of a baseline, compiled as another
# program, differs from it by float rounding (a ratio of 0.9999999, or 1 - 1e-4 after hundreds of
# float32 steps on a non-convex task), and the tables print ratios to three digits: a win must
# show there as 0.999 or less.
WIN_MARGIN = 1e-3


def _failed(mine: dict[str, Any]) -> bool:
    """Whether an optimizer's runs on a task include a non-finite one: a loss against every
    baseline, whatever the mean of its finite runs."""
    return mine.get("nonfinite_runs", 0) > 0 or not math.isfinite(mine["train_loss"]["mean"])


def _ratio(a: float, b: float) -> float:
    if not math.isfinite(a):
        return math.inf
    if b <= 0:
        return 1.0 if a <= 0 else math.inf
    return a / b


def _below(a: float, b: float) -> bool:
    """Whether mean `a` is below mean `b` beyond float rounding (`WIN_MARGIN`)."""
    return math.isfinite(a) and a < b - WIN_MARGIN * abs(b)


def _separated_below(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether mean a is below mean b with their 95% CIs apart."""
    ca, cb = (x["ci95"] if math.isfinite(x["ci95"]) else 0.0 for x in (a, b))
    return a["mean"] + ca < b["mean"] - cb


def _wins(r: TaskResult, other: dict[str, Any], *, separated: bool = False) -> bool:
    """Whether the optimizer beats `other`'s final training loss on task `r`: no non-finite run,
    and a lower mean (beyond rounding; `separated`: with the 95% CIs apart)."""
    if _failed(r.optimizer):
        return False
    mine = r.optimizer["train_loss"]
    return _separated_below(mine, other) if separated else _below(mine["mean"], other["mean"])


def judge(task: SuiteTask, horizon: int, mine: dict[str, Any], tuned: dict[str, dict[str, Any]],
          rivals: dict[str, dict[str, Any]] | None = None) -> TaskResult:
    """One task's `TaskResult`: the best baseline and the ratios to it, to tuned Adam and to each
    tuning-free rival. An optimizer with a non-finite run on the task scores inf (and a speed-up
    of 0)."""
    best = min(tuned, key=lambda b: tuned[b]["test"]["train_loss"]["mean"])
    failed = _failed(mine)

    def ratio(b):
        return math.inf if failed else _ratio(mine["train_loss"]["mean"], tuned[b]["test"]["train_loss"]["mean"])

    rivals = rivals or {}
    return TaskResult(
        name=task.name, kind=task.kind, split=task.split, horizon=horizon, optimizer=mine, baselines=tuned,
        best_baseline=best, ratio_to_best=ratio(best), ratio_to_adam=ratio("adam"),
        speedup_over_adam=0.0 if failed else speedup(mine["curve"]["mean"], tuned["adam"]["test"]["curve"]["mean"]),
        rivals=rivals,
        ratio_to_rivals={r: math.inf if failed else _ratio(mine["train_loss"]["mean"], v["test"]["train_loss"]["mean"])
                         for r, v in rivals.items()},
    )


# The optimizers of a task's comparison (steps to target, performance profiles): the one under
# test, each tuned baseline ("tuned NAME") and each tuning-free rival (its name).
PROFILE_TAUS = tuple(float(t) for t in np.round(np.linspace(1.0, _profiles.TAU_MAX, 61), 6))


def _evaluations(figures: dict[str, Any]) -> np.ndarray | None:
    """An optimizer's mean loss at each evaluation of a task: the mean minibatch loss before each
    step, then the mean full-batch training loss after the last ([1, steps + 1]); None when any
    of its runs was non-finite (a failure)."""
    if _failed(figures):
        return None
    return np.asarray([list(figures["curve"]["mean"]) + [figures["train_loss"]["mean"]]], dtype=np.float64)


def contenders(r: TaskResult, name: str = "optimizer") -> dict[str, dict[str, Any]]:
    """Label -> figures (`summarize_run`) of every optimizer in task `r`'s comparison: the one
    under test (`name`; "NAME (tested)" where that is another's label), "tuned B" for each tuned
    baseline, and each rival by its name."""
    others = {**{f"tuned {b}": v["test"] for b, v in r.baselines.items()}, **{k: v["test"] for k, v in r.rivals.items()}}
    label = name if name not in others else f"{name} (tested)"
    return {label: r.optimizer, **others}


def task_steps(r: TaskResult, entries: dict[str, dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """`(target, label -> evaluations to reach it)` on task `r`: the target is the best tuned
    baseline's mean final training loss (None, and every count inf, where it is not finite)."""
    target = r.baselines[r.best_baseline]["test"]["train_loss"]["mean"]
    if not math.isfinite(target):
        return None, {k: math.inf for k in entries}
    steps = {}
    for label, figures in entries.items():
        ev = _evaluations(figures)
        steps[label] = math.inf if ev is None else _profiles.steps_to_target(ev, target)
    return target, steps


def _interval(values) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.any(np.isnan(values)):
        return {"value": math.nan, "low": math.nan, "high": math.nan}
    return dict(_profiles.iqm_interval(values)._asdict())


def _quartiles(values) -> dict[str, float]:
    values = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if values.size == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan}
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def profiles(results: list[TaskResult], entries: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Over tasks (`entries[i]`: label -> figures of task `results[i]`, the same labels on every
    task): each optimizer's steps to target per task, performance profile rho(tau) on
    `PROFILE_TAUS` and its AlgoPerf-style score (area for tau in [1, 4], over 3), the IQM (with a
    bootstrap 95% interval) of its ratio of mean final training loss to tuned Adam's (inf where it
    failed), and the median and quartiles of its speed-up over tuned Adam (tuned Adam's
    evaluations to its own final loss over the optimizer's; 0 where it never gets there)."""
    labels = list(entries[0]) if entries else []
    steps = {k: [] for k in labels}
    targets = []
    for r, e in zip(results, entries):
        target, counts = task_steps(r, e)
        targets.append(target)
        for k in labels:
            steps[k].append(counts[k])
    out: dict[str, Any] = {
        "target": "per task, the best tuned baseline's mean final training loss; an optimizer's steps to it count its "
                  "evaluations (the mean minibatch loss before each step, then the full-batch loss after the last), "
                  "inf where it never gets there or had a non-finite run",
        "targets": targets, "taus": list(PROFILE_TAUS), "optimizers": {},
    }
    if not labels:
        return out
    ratios = _profiles.performance_ratios({k: np.asarray(v) for k, v in steps.items()})
    for k in labels:
        to_adam, speedups = [], []
        for r, e in zip(results, entries):
            adam = r.baselines["adam"]["test"]
            to_adam.append(math.inf if _failed(e[k]) else _ratio(e[k]["train_loss"]["mean"], adam["train_loss"]["mean"]))
            reference, mine = _evaluations(adam), _evaluations(e[k])
            speedups.append(math.nan if reference is None else 0.0 if mine is None else _profiles.speedup(reference, mine))
        out["optimizers"][k] = {
            "steps_to_target": steps[k], "score": _profiles.profile_score(ratios[k]),
            "rho": _profiles.profile(ratios[k], np.asarray(PROFILE_TAUS)).tolist(),
            "iqm_ratio_to_adam": _interval(to_adam), "speedup_over_adam": _quartiles(speedups),
        }
    return out


def suite_wide_rate(results: list[TaskResult]) -> float | None:
    """The one Adam learning rate of the base grid that is best over all the tasks on validation:
    lowest mean over tasks of log10(its validation loss / the task's best validation loss)."""
    rates = None
    per_task = []
    for r in results:
        scores = {float(k): v for k, v in r.baselines["adam"]["validation"].items()}
        per_task.append(scores)
        rates = set(scores) if rates is None else rates & set(scores)
    if not rates:
        return None

    def regret(rate):
        values = [math.log10(s[rate] / min(s.values())) if math.isfinite(s[rate]) and min(s.values()) > 0 else math.inf
                  for s in per_task]
        return float(np.mean(values))

    return min(sorted(rates), key=regret)


def summarize_suite(results: list[TaskResult], name: str = "optimizer") -> dict[str, Any]:
    """Over the suite: per baseline the fraction of tasks the optimizer beats with separated CIs
    and with a lower mean; the median and geometric-mean ratio to the best baseline; the same per
    kind; and against Adam at one suite-wide learning rate. A task where the optimizer had a
    non-finite run is a loss against every baseline (its ratios are inf); a lower mean is a win
    only beyond float rounding (`WIN_MARGIN`)."""
    ratios = np.array([r.ratio_to_best for r in results], dtype=np.float64)
    names = list(results[0].baselines) if results else []
    beats = {b: float(np.mean([_wins(r, r.final(b), separated=True) for r in results])) for b in names}
    below = {b: float(np.mean([_wins(r, r.final(b)) for r in results])) for b in names}
    below["best"] = float(np.mean([_wins(r, r.final(r.best_baseline)) for r in results])) if results else math.nan
    kinds = {}
    for kind in sorted({r.kind for r in results}):
        mine = [r for r in results if r.kind == kind]
        kinds[kind] = {"tasks": len(mine), "median_ratio": float(np.median([r.ratio_to_best for r in mine])),
                       "below_best": float(np.mean([_wins(r, r.final(r.best_baseline)) for r in mine]))}
    shared = [r for r in results if r.suite_adam is not None and r.ratio_to_suite_adam is not None]
    suite_ratios = [r.ratio_to_suite_adam for r in shared]
    speedups = [r.speedup_over_adam for r in results]
    with np.errstate(divide="ignore"):
        geo = float(np.exp(np.mean(np.log(ratios)))) if ratios.size and np.all(ratios > 0) else math.nan
    return {
        "tasks": len(results),
        "median_ratio_to_best": float(np.median(ratios)) if ratios.size else math.nan,
        "geomean_ratio_to_best": geo,
        "median_ratio_to_adam": float(np.median([r.ratio_to_adam for r in results])) if results else math.nan,
        "fraction_beating_with_separated_ci": beats,
        "fraction_with_lower_mean": below,
        "median_speedup_over_adam": float(np.median([math.inf if s is None else s for s in speedups])) if speedups else math.nan,
        "per_kind": kinds,
        "suite_adam_lr": results[0].suite_adam["lr"] if results and results[0].suite_adam else None,
        "fraction_below_suite_adam": float(np.mean([_wins(r, r.suite_adam["train_loss"]) for r in shared])) if shared else math.nan,
        "median_ratio_to_suite_adam": float(np.median(suite_ratios)) if suite_ratios else math.nan,
        "nonfinite_runs": int(sum(r.optimizer["nonfinite_runs"] for r in results)),
        "tasks_with_nonfinite_runs": int(sum(_failed(r.optimizer) for r in results)),
        **_rival_summary(results, name),
    }


def _rival_summary(results: list[TaskResult], name: str) -> dict[str, Any]:
    """Per tuning-free rival (those run on every task): the fraction of tasks the optimizer is
    below it (beyond `WIN_MARGIN`; a non-finite run is a loss) and the IQM of the ratio to it with
    a bootstrap 95% interval; and the comparison's `profiles`."""
    names = [k for k in (results[0].rivals if results else {}) if all(k in r.rivals for r in results)]
    rivals = {k: {"fraction_below": float(np.mean([_wins(r, r.rivals[k]["test"]["train_loss"]) for r in results])),
                  "iqm_ratio": _interval([r.ratio_to_rivals[k] for r in results]),
                  "nonfinite_runs": int(sum(r.rivals[k]["test"]["nonfinite_runs"] for r in results))}
              for k in names}
    entries = []
    for r in results:
        e = contenders(r, name)
        entries.append({k: v for k, v in e.items() if k not in r.rivals or k in names})
    return {"rivals": rivals, "profiles": profiles(results, entries)}


# A learning rate as the command line takes it: digits, an optional fraction and exponent (no
# sign, underscores, inf or nan), between these bounds (a float32 rate that means something).
_PLAIN_RATE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
RATE_BOUNDS = (1e-30, 1e6)  # written out in `parse_rate`'s error
FIRST_ORDER_EXAMPLES = "adam:1e-3, adamw:1e-3, sgd:0.1, rmsprop:1e-3, lion:1e-4, nadam:1e-3"


def parse_rate(text: str) -> float:
    """A learning rate written plainly (`1e-3`, `0.001`), positive, finite and within
    `RATE_BOUNDS`; else a one-line error naming the value."""
    if not _PLAIN_RATE.fullmatch(text):
        raise ValueError(f"the learning rate {text!r} is not a plain positive number (e.g. 1e-3 or 0.001: digits, "
                         "a point and an exponent; no sign, underscores, inf or nan)")
    value = float(text)
    if not RATE_BOUNDS[0] <= value <= RATE_BOUNDS[1]:
        raise ValueError(f"the learning rate {text} is outside 1e-30 to 1e6 (what a float32 learning rate can mean)")
    return value


def parse_instances(text: str) -> tuple[int, int]:
    """`"16,50"` -> `(16, 50)`: VALIDATION,TEST instances per task, each an integer of at least 2;
    else a one-line error naming the value."""
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 2:
        raise ValueError(f"--instances expects VALIDATION,TEST: two integers of at least 2 (e.g. 16,50), got {text!r}.")
    return int(match[1]), int(match[2])


def _check_first_order(tx: optax.GradientTransformation, what: str, *, strict: bool = True) -> None:
    """Fails at once, naming what is missing, when `tx` cannot update params from the gradients
    and params alone (as the suite calls it): e.g. optax's line searches, which need the loss.
    Traced on two small params (nothing is computed); `strict=False` (a transformation of the
    user's, which may expect params of its own structure) refuses only missing arguments."""
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    try:
        jax.eval_shape(lambda: tx.update(params, tx.init(params), params))
    except Exception as e:  # noqa: BLE001 - an optax spec that fails here would fail inside the first task
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not strict and not (isinstance(e, TypeError) and "missing" in text and "argument" in text):
            return
        needs = text[text.index("missing"):] if "missing" in text else text
        raise ValueError(f"{what} cannot run in the suite: its update needs more than the gradients and params ({needs}). "
                         f"The suite gives an optimizer only those, as optax's first-order optimizers take them: "
                         f"e.g. {FIRST_ORDER_EXAMPLES}, or pass a transformation of your own.") from None


def resolve_optimizer(spec) -> tuple[str, optax.GradientTransformation]:
    """`(name, transformation)` of an optax transformation, a shipped optimizer's name, a run
    folder, or an optax spec `NAME:LEARNING_RATE` (e.g. `adam:1e-3`, any optax optimizer whose
    first argument is the learning rate and whose update needs only the gradients and params; the
    rate written plainly, within `RATE_BOUNDS`). Anything else is a one-line error, before any
    work."""
    if isinstance(spec, optax.GradientTransformation):
        _check_first_order(spec, "This optax transformation", strict=False)
        return "optax transformation", spec
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise ValueError(f"Expected an optax transformation, a shipped optimizer's name, a run folder or NAME:LR, got {spec!r}.")
    text = str(spec)
    name, sep, rate = text.partition(":")
    if sep and not Path(text).exists():
        factory = getattr(optax, name, None) if name.isidentifier() and not name.startswith("_") else None
        if not callable(factory) or isinstance(factory, type):
            raise ValueError(f"{text!r} is not an optax spec NAME:LEARNING_RATE: optax has no optimizer {name!r} "
                             f"(e.g. {FIRST_ORDER_EXAMPLES}).")
        try:
            value = parse_rate(rate)
        except ValueError as e:
            raise ValueError(f"{text!r} is not an optax spec NAME:LEARNING_RATE: {e}.") from None
        try:
            tx = factory(value)
        except TypeError as e:
            raise ValueError(f"optax.{name}({value}) failed: {e}") from None
        if not isinstance(tx, optax.GradientTransformation):
            raise ValueError(f"optax.{name} is not an optimizer (it returned {type(tx).__name__}).")
        _check_first_order(tx, f"optax.{name} ({text!r})")
        return text, tx
    from ..optimizers._optax_face import as_optax
    from ..runs._loading import load_learned_optimizer

    try:  # the face without num_steps: each task's runner fills in its horizon (`fill_horizon`)
        return text, as_optax(load_learned_optimizer(text)[0])
    except FileNotFoundError as e:
        raise ValueError(f"{text!r} is neither a shipped optimizer, a run folder nor an optax spec NAME:LR (e.g. adam:1e-3). {e}") from None


def optimizer_identity(spec) -> str:
    """A learned optimizer's (a shipped name or a run folder) kind and the digest of its exported
    weights; an optax spec's text; "" for an optax transformation given as an object."""
    if isinstance(spec, optax.GradientTransformation):
        return ""
    text = str(spec)
    if ":" in text and not Path(text).exists():
        return text
    from ..runs._loading import load_learned_optimizer

    opt, config, _ = load_learned_optimizer(text)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(eqx.filter(opt, eqx.is_array)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return f"{config.kind}:{digest.hexdigest()[:16]}"


def run(
    optimizer,
    tasks: str | list[str] | None = "heldout",
    *,
    settings: Settings | None = None,
    quick: bool = False,
    cache: str | Path | None = "default",
    progress: bool = True,
    baselines_to_tune: tuple[str, ...] | None = None,
    rivals: tuple[str, ...] | None = None,
) -> SuiteResult:
    """Puts `optimizer` through the suite's `tasks` against per-task tuned baselines.

    Args:
        optimizer: an optax transformation, a shipped optimizer's name ("digits"), a run folder,
            or an optax spec "NAME:LR" ("adam:1e-3").
        tasks: "heldout" (default; also None), "train", "all", or task names (`l2lgd.suite.SUITE`).
        settings: instances per task (default `Settings()`: 16 validation, 50 test).
        quick: a smoke run in seconds: at most three cheap tasks of the selection, and (unless
            `settings` are given, which then hold) `QUICK`: 4 validation and 8 test instances,
            horizons capped at 50 steps.
        cache: the baselines' cache folder ("default": `_baselines.cache_dir()`; None: no cache).
            It must be writable (checked first).
        progress: a progress bar over tasks.
        baselines_to_tune: the baselines to tune (default: all of `BASELINES`; Adam must be among
            them), e.g. ("adam",) for a cheap check at `Settings(horizon_scale=5)`.
        rivals: the tuning-free rivals to run, untuned, on the test instances (default: all of
            `TUNING_FREE`; `()`: none). Cached as the baselines are.

    Returns:
        A `SuiteResult`: per task a `TaskResult`, and the suite's `summary`. A task where the
        optimizer had a non-finite run counts as a loss against every baseline.

    Example:
        >>> result = l2lgd.suite.run("adam:1e-2", ["linreg_cond1e4"], quick=True, cache=None, progress=False)
        >>> result.tasks[0].best_baseline in l2lgd.suite.BASELINES, result.summary["tasks"]
        (True, 1)
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    name, tx = resolve_optimizer(optimizer)
    selected = select(tasks)
    if settings is not None and not isinstance(settings, Settings):
        raise ValueError(f"settings must be an l2lgd.suite.Settings, got {settings!r}.")
    if quick:
        settings = settings or QUICK
        cheap = [t for t in selected if t.name in QUICK_TASKS]
        selected = (cheap or selected)[:3]
    settings = settings or Settings()
    chosen = tuple(baselines_to_tune or baselines.BASELINES)
    unknown = [b for b in chosen if b not in baselines.BASELINES]
    if unknown or "adam" not in chosen:
        raise ValueError(f"baselines_to_tune must name baselines of {', '.join(baselines.BASELINES)} including 'adam', "
                         f"got {chosen!r}.")
    rivals = check_rivals(rivals)
    cache_path = baselines.cache_dir() if cache == "default" else (None if cache is None else Path(cache))
    if cache_path is not None:
        baselines.check_writable(cache_path)
    results, baseline_seconds, identities = [], 0.0, {}
    for task in tqdm(selected, desc=f"suite {name}", unit="task", disable=not progress):
        identities[task.name] = identity = task_identity(task)  # (not the baselines' time: they may be cached)
        t0 = time.perf_counter()
        here = settings.for_task(task)
        tuned = {b: tune_baseline(task, b, here, cache=cache_path, identity=identity) for b in chosen}
        others = {k: run_rival(task, k, here, cache=cache_path, identity=identity) for k in rivals}
        baseline_seconds += time.perf_counter() - t0
        horizon = here.steps_for(task)
        losses, metrics = _runner(task.family, horizon, lambda _: tx)(0.0, _instances(task, "test", here.test_instances))
        results.append(judge(task, horizon, summarize_run(losses, metrics), tuned, others))
    rate = suite_wide_rate(results)
    if rate is not None:
        t0 = time.perf_counter()
        for task, result in zip(selected, results):
            shared = tune_baseline(task, "adam", settings.for_task(task), cache=cache_path, lr=rate,
                                   identity=identities[task.name])
            result.suite_adam = {"lr": rate, "train_loss": shared["test"]["train_loss"]}
            result.ratio_to_suite_adam = (math.inf if _failed(result.optimizer) else
                                          _ratio(result.optimizer["train_loss"]["mean"], shared["test"]["train_loss"]["mean"]))
        baseline_seconds += time.perf_counter() - t0
    summary = summarize_suite(results, name)
    for i, r in enumerate(results):
        r.target = summary["profiles"]["targets"][i]
        r.steps_to_target = {k: v["steps_to_target"][i] for k, v in summary["profiles"]["optimizers"].items()}
    return SuiteResult(name, dataclasses.asdict(settings), results, summary, time.perf_counter() - start, baseline_seconds,
                       optimizer_identity(optimizer))


def check_rivals(rivals) -> tuple[str, ...]:
    """The rivals to run: all of `TUNING_FREE` for None, else the names given (each one of it);
    else a one-line error listing the known ones."""
    if rivals is None:
        return tuple(TUNING_FREE)
    if isinstance(rivals, str):
        rivals = (rivals,)
    chosen = tuple(dict.fromkeys(rivals))
    unknown = [k for k in chosen if k not in TUNING_FREE]
    if unknown:
        raise ValueError(f"Unknown tuning-free rival(s) {', '.join(map(repr, unknown))}; the known ones: "
                         f"{', '.join(TUNING_FREE)} (or none).")
    return chosen
