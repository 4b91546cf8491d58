"""The meta-training driver: chunks of jitted meta-steps, progress, checkpoints, model selection.

Everything numerical happens in `make_train_chunk`; this file holds the side effects (progress
bar, record file, snapshots, export), outside of jit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from .._config import Config, stored_configs
from .._objectives import SOLVED
from .._unroll import run_steps
from .._errors import Mismatch, NonFiniteError, Stopped
from .._evaluate import VALIDATION_SEED, scored_log10, task_keys, unroll_losses
from ..estimators._named import estimator_for
from ..optimizers._optax_face import as_optax
from ..tasks import TaskFamily, draw_task, family_name, task_family, training_family
from ..tasks._mixture import FamilyMixture, check_members, members_of
from ..training._state import TrainState, init_state
from ..training._step import make_train_chunk
from ._control import run_lock, stop_signals
from ._exports import export_optimizer
from ._record import RECORD, append_record, truncate_record
from ._selection import select_best
from ._shipped import is_shipped
from ._snapshots import SNAPSHOTS, RunCheckpoints


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is driven; none of it changes the trained weights."""

    checkpoint_every: int = 5_000
    chunk_size: int = 1_000
    max_consecutive_skips: int = 100
    validation_tasks: int = 1_000
    fresh: bool = False
    progress: bool = True
    # Snapshot and score the starting optimizer (meta-step 0) too, so that model selection keeps
    # the start when no trained snapshot beats it on validation (for a kind that starts as a
    # hand-designed rule, as `ProdigyController` starts as Prodigy).
    score_start: bool = False

    def __post_init__(self):
        for field in ("checkpoint_every", "chunk_size", "max_consecutive_skips", "validation_tasks"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"RunOptions.{field} must be a positive integer, got {value!r}.")
        for field in ("fresh", "progress", "score_start"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"RunOptions.{field} must be True or False, got {getattr(self, field)!r}.")


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    config: Config
    best_step: int
    best_validation: float
    wall_time: float
    train_time: float


def validation_summary(theta: Any, static: Any, config: Config, keys: jax.Array, family: TaskFamily | None = None) -> tuple[float, int]:
    """`(score, non_finite)`: the model-selection score, the mean log10(f(x_T-1) + 1e-38) over the
    validation tasks, a non-finite final loss counting as `NON_FINITE_LOG10` (`scored_log10`), and how many were
    not finite. For a `FamilyMixture`, the mean over its members, each at the horizon its
    estimator trains at and floored at log10(SOLVED) (so that no member that can be solved to
    1e-20 outweighs the others)."""
    if isinstance(family, FamilyMixture):
        floor = math.log10(SOLVED)
        parts = [validation_summary(theta, static, config, keys, m) for m in family.members]
        return float(np.mean([max(score, floor) for score, _ in parts])), sum(bad for _, bad in parts)
    num_steps = estimator_for(config).validation_steps(config, family)
    losses = _validation_losses(theta, static, config, keys, family, num_steps)
    return scored_log10(losses[:, -1])


def _check_trainable(config: Config, family: TaskFamily) -> None:
    """Before anything is written: float32 params with at least one coordinate (meta-training
    runs in float32), and a training state that fits in this machine's memory."""
    for name, member in members_of(family):
        _, params = eqx.filter_eval_shape(member.sample, jax.random.key(0))
        leaves = jax.tree.leaves(params)
        dtypes = sorted({str(x.dtype) for x in leaves if x.dtype != np.float32})
        if dtypes:
            raise TypeError(f"Task family {name!r} samples params of dtype {', '.join(dtypes)}; l2lgd meta-trains on "
                            "float32 params (trained optimizers run on any floating dtype through the optax face).")
        if sum(x.size for x in leaves) == 0:
            raise ValueError(f"Task family {name!r} samples params with no coordinates (every leaf is empty): nothing to optimize.")
    abstract = jax.eval_shape(lambda: init_state(config, family)[0])
    need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    have = _memory_bytes()
    if have and 4 * need > have:  # the state, its update and the unroll's working set
        raise ValueError(f"Config {', '.join(f'{k}={getattr(config, k)!r}' for k in ('hidden_size', 'num_layers', 'batch_size'))}"
                           f" with the estimator {estimator_for(config)!r} needs a training state of {need / 2**30:.1f} GiB "
                           f"(and a few times that while training); this machine has {have / 2**30:.1f} GiB. Use a smaller "
                           "network, batch, task or estimator (e.g. fewer perturbations).")


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_losses(family: TaskFamily, tasks: int = 4, steps: int = 100) -> None:
    """Refuses, naming the member and the value, a family whose loss goes negative: l2lgd's
    records, log objectives and model selection take log10 of the loss. Probed by Adam(1e-2) for
    `steps` steps on `tasks` tasks of each member, before anything is written. NaN losses are
    allowed: their meta-steps are skipped and counted, their validation tasks counted and left out."""
    identity = family_identity(family)
    if identity in _PROBED:
        return
    for name, member in members_of(family):
        losses = np.asarray(_probe_losses(member, jax.random.split(jax.random.key(VALIDATION_SEED), tasks), steps))
        if np.any(losses < 0):
            raise ValueError(
                f"Task family {name!r} has negative losses (down to {np.nanmin(losses):.4g} under Adam(1e-2) in "
                f"{steps} steps); l2lgd records log10 of the loss and selects models by it, so a loss must be >= 0: "
                "add a constant to it."
            )
    _PROBED.add(identity)


_PROBED: set[str] = set()  # families whose losses were probed in this process


@eqx.filter_jit
def _probe_losses(family, keys, steps):
    tx = optax.adam(1e-2)

    def one(key):
        loss_fn, x0, minibatch = draw_task(family, key)
        _, losses = run_steps(tx, loss_fn, x0, tx.init(x0), num_steps=steps, key=minibatch)
        return losses

    return jax.vmap(one)(keys)


@eqx.filter_jit
def _validation_losses(theta, static, config, keys, family, num_steps):
    return unroll_losses(as_optax(eqx.combine(theta, static)), config, keys, family=family, num_steps=num_steps)


def _prepare_run_dir(run_dir: Path, config: Config, options: RunOptions, family: TaskFamily) -> None:
    if options.fresh:  # the export stays until a new one replaces it (atomically)
        for name in (SNAPSHOTS, RECORD, "config.json", FAMILY):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json() + "\n")
    (run_dir / FAMILY).write_text(family_identity(family) + "\n")


def _resolve_family(config: Config, family: TaskFamily | None,
                    validation_family: TaskFamily | None = None) -> tuple[Config, TaskFamily, TaskFamily]:
    """The run's config (naming `family`), the family it trains on and the one it validates on
    (`validation_family` if given; else the same, unless `config.train_task` names another),
    checked before anything is written."""
    if family is None:
        validation = task_family(config)
        family = training_family(config) if config.train_task else validation
    else:
        config = config_of_family(config, family)
        validation = family
    if validation_family is not None:
        if not isinstance(validation_family, TaskFamily):
            raise TypeError(f"validation_family must be an l2lgd TaskFamily or None, got {type(validation_family).__name__}.")
        validation = validation_family
    check_members(family)
    check_losses(family)
    if validation is not family:
        check_members(validation)
        check_losses(validation)
    return config, family, validation


FAMILY = "family.txt"
RESUME_HINT = ("Resume with the config and family the run was trained with, pass --fresh (fresh=True) to start "
               "afresh, or choose another output folder.")
# What a run folder may hold besides its own files (a lock, the export, evaluation, figures).
RUN_ENTRIES = {"config.json", FAMILY, SNAPSHOTS, RECORD, ".lock", "optimizer", "damaged", "eval.json", "figures",
               "MODEL_CARD.md"}


def _check_run_folder(run_dir: Path) -> None:
    """Refuses an existing non-empty folder that is not a run (nothing in it is touched): one
    whose `config.json` is not an l2lgd config, or holding files a run does not write, and no
    snapshots or export."""
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ValueError(f"--out {run_dir} is a file, not a folder.")
        return
    entries = {p.name for p in run_dir.iterdir()}
    if not entries or (run_dir / SNAPSHOTS).is_dir() or (run_dir / "optimizer").is_dir():
        return
    config_ok = False
    if (run_dir / "config.json").is_file():
        try:
            run_config(run_dir)
            config_ok = True
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            config_ok = False
    foreign = sorted(entries - RUN_ENTRIES)
    if not config_ok or foreign:
        shown = ", ".join(sorted(entries)[:6]) + (", ..." if len(entries) > 6 else "")
        raise ValueError(f"{run_dir} is a non-empty folder that is not an l2lgd run (it holds {shown}); nothing "
                         "in it was changed: choose a new or empty folder.")


def family_identity(family: TaskFamily) -> str:
    """What a run stores of its family: the class (with its module) and every field, static ones
    included, arrays by dtype, shape and a digest of their values."""
    return f"{type(family).__module__}.{type(family).__qualname__}: {_describe(family)}"


def _describe(value: Any) -> str:
    if isinstance(value, eqx.Module):
        fields = ", ".join(f"{f.name}={_describe(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{type(value).__name__}({fields})"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return f"({inner},)" if isinstance(value, tuple) and len(value) == 1 else f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, (jax.Array, np.ndarray)):
        array = np.ascontiguousarray(np.asarray(value))
        return f"{array.dtype}{list(array.shape)}#{hashlib.sha256(array.tobytes()).hexdigest()[:12]}"
    return repr(value)


def _scored_on(checkpoints: RunCheckpoints, step: int) -> int | None:
    """How many validation tasks snapshot `step` was scored on (None: not recorded, or unreadable)."""
    try:
        return checkpoints.metrics(step).get("validation_tasks")
    except ValueError:
        return None


def scored_on(run_dir: Path) -> int | None:
    """How many validation tasks the latest snapshot in `run_dir` was scored on (None: no
    snapshot, or not recorded): a resume must score its snapshots on as many, since model
    selection compares every snapshot's score."""
    if not (run_dir / SNAPSHOTS).is_dir():
        return None
    checkpoints = RunCheckpoints(run_dir)
    try:
        latest = checkpoints.latest_step()
        return None if latest is None else _scored_on(checkpoints, latest)
    finally:
        checkpoints.close()


def _check_resumable(run_dir: Path, config: Config, options: RunOptions, family: TaskFamily) -> RunCheckpoints | None:
    """The run's snapshots when resuming, after checking that they hold the same config and were
    trained on the same family (nothing is moved or written when they do not)."""
    if options.fresh or not (run_dir / SNAPSHOTS).is_dir():
        return None
    stored_family = run_dir / FAMILY
    if stored_family.is_file():
        before = stored_family.read_text(errors="replace").strip()
        if before != family_identity(family).strip():
            raise Mismatch(
                f"{run_dir} holds a run trained on another task family ({before}), not {family_identity(family)}. "
                "Resume with the family it was trained on, pass --fresh (fresh=True) to start afresh, or choose "
                "another output folder."
            )
    checkpoints = RunCheckpoints(run_dir)
    latest = checkpoints.latest_step()
    if latest is not None:
        try:
            stored = checkpoints.config(latest)
        except ValueError:
            return checkpoints  # a damaged snapshot: `_initial_state` falls back past it
        details = config_changes(stored, config)
        message = None
        if details:
            message = (f"{run_dir} holds a run with a different config ({details}). Resume with the same "
                       "config, pass --fresh to start afresh, or choose another output folder.")
        elif config.meta_steps < latest:
            message = (f"{run_dir} holds a run at meta-step {latest:,}, beyond the {config.meta_steps:,} asked for; "
                       f"ask for at least {latest:,} meta-steps (or --fresh to start afresh).")
        elif (scored := _scored_on(checkpoints, latest)) not in (None, options.validation_tasks):
            # Model selection compares every snapshot's score: all must be on the same tasks.
            message = (f"{run_dir} holds snapshots scored on {scored} validation tasks, not the "
                       f"{options.validation_tasks} asked for (validation_tasks); resume with validation_tasks="
                       f"{scored}, pass --fresh to start afresh, or choose another output folder.")
        if message:
            checkpoints.close()
            raise ValueError(message)
        try:
            checkpoints.check(latest, family)
        except Mismatch as e:
            checkpoints.close()
            raise Mismatch(f"{e} {RESUME_HINT}") from None
        except ValueError:
            pass  # damaged: `_initial_state` sets it aside and falls back past it
    return checkpoints


def _initial_state(run_dir: Path, config: Config, family: TaskFamily, checkpoints: RunCheckpoints | None):
    """The state to start from (the latest snapshot's, else a fresh one), the optimizer's static
    part, and the last 1,000 final losses of the record (for the progress bar and metrics).
    Without `checkpoints` (a process that does not write the run): a fresh state."""
    state, static = init_state(config, family)
    if checkpoints is None:
        return state, static, deque(maxlen=1000)
    latest = None
    for step in reversed(checkpoints.steps()):  # the newest intact snapshot
        try:
            state, _ = checkpoints.restore(step, family)
        except Mismatch as e:  # intact, but not this run's: refused, nothing moved
            raise Mismatch(f"{e} {RESUME_HINT}") from None
        except ValueError as e:
            warnings.warn(f"{e} Setting snapshot {step} aside (to {run_dir / 'damaged'}) and trying an older one.", stacklevel=2)
            checkpoints.set_aside(step)
            continue
        latest = step
        break
    if latest is not None:
        truncate_record(run_dir, latest)
    elif (run_dir / RECORD).exists():
        (run_dir / RECORD).unlink()
    record = np.fromfile(run_dir / RECORD, dtype="<f4")[-1000:] if (run_dir / RECORD).exists() else []
    return state, static, deque(record, maxlen=1000)


def train(
    config: Config,
    out_dir: str | Path,
    options: RunOptions | None = None,
    *,
    family: TaskFamily | None = None,
    validation_family: TaskFamily | None = None,
) -> TrainResult:
    """Meta-trains a learned optimizer, resuming from the latest snapshot in `out_dir` if any.

    Args:
        config: the experiment (optimizer, meta-objective, meta-training).
        out_dir: the run folder: `snapshots/` every `options.checkpoint_every` meta-steps and at
            the end, each scored on validation tasks of the family; the best is exported to
            `out_dir/optimizer/`, which `l2lgd.load_optimizer(out_dir)` loads (without the
            family's code).
        options: how the run is driven (`RunOptions`); none of it changes the weights.
        family: the `TaskFamily` to meta-train and validate on (default: the one `config.task`
            names; `config.train_task`, if set, names another family to meta-train on). Its
            registered name (else its class name) is stored as the config's `task`.
        validation_family: the `TaskFamily` snapshots are scored on (default: the family, or the
            one `config.task` names when `config.train_task` is set); e.g. the suite's
            `validation` split, so that no training family chooses the exported snapshot.

    Returns:
        A `TrainResult`: the final state, the exported snapshot's step and validation score,
        and the wall and training times.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()  # the run folder
        >>> config = l2lgd.Config(name="demo", hidden_size=4, meta_steps=20)
        >>> result = l2lgd.train(config, run, l2lgd.RunOptions(validation_tasks=8, progress=False))
        >>> result.best_step
        20
        >>> tx = l2lgd.load_optimizer(run)  # an optax transformation
    """
    start = time.perf_counter()
    options = options or RunOptions()
    run_dir = Path(out_dir)
    if is_shipped(run_dir):
        raise ValueError(f"{run_dir} is a shipped optimizer's folder: train into another folder, then ship it "
                         "(`make train EXP=... ARGS=--ship` from a checkout).")
    _check_run_folder(run_dir)
    if jax.config.jax_enable_x64:
        raise ValueError("l2lgd meta-trains in float32, but jax_enable_x64 is on (JAX_ENABLE_X64): train without it "
                         "(trained optimizers load and run under x64).")
    config, family, validation = _resolve_family(config, family, validation_family)
    _check_trainable(config, family)
    # Under several JAX processes (`jax.distributed`), every process runs the meta-steps (each on
    # its share of the batch) and process 0 alone writes the run folder.
    primary = jax.process_index() == 0
    with run_lock(run_dir) if primary else contextlib.nullcontext():
        checkpoints = None
        if primary:
            checkpoints = _check_resumable(run_dir, config, options, family)
            _prepare_run_dir(run_dir, config, options, family)
            checkpoints = checkpoints or RunCheckpoints(run_dir)
        try:
            state, static, recent = _initial_state(run_dir, config, family, checkpoints)
            if jax.process_count() > 1:  # process 0's (possibly resumed) state, everywhere
                from jax.experimental import multihost_utils

                state = multihost_utils.broadcast_one_to_all(state)
            run = Run(run_dir, config, family, validation, options, checkpoints, static)
            state, train_time = _run_chunks(run, state, recent)
            best_step, best_score = _export_best(run_dir, checkpoints, family) if primary else (-1, math.nan)
        finally:
            if checkpoints is not None:
                checkpoints.close()
    return TrainResult(
        run_dir=run_dir,
        state=state,
        config=config,
        best_step=best_step,
        best_validation=best_score,
        wall_time=time.perf_counter() - start,
        train_time=train_time,
    )


class Run(NamedTuple):
    """What every chunk of one run shares: where it writes, what it trains and validates on."""

    run_dir: Path
    config: Config
    family: TaskFamily  # meta-training draws from it
    validation: TaskFamily  # snapshots are scored on it
    options: RunOptions
    checkpoints: RunCheckpoints | None  # None in a process that does not write the run
    static: Any  # the optimizer's static part


def _run_chunks(run: Run, state: TrainState, recent: deque) -> tuple[TrainState, float]:
    """Meta-steps in compiled chunks up to `config.meta_steps` on tasks of `run.family`, with the
    record and snapshots scored on tasks of `run.validation`."""
    config, options, checkpoints = run.config, run.options, run.checkpoints
    val_keys = task_keys(VALIDATION_SEED, options.validation_tasks)

    def score(theta) -> tuple[float, int]:
        return validation_summary(theta, run.static, config, val_keys, run.validation)

    train_chunk = make_train_chunk(config, run.static, run.family)
    usable: deque = deque(maxlen=1000)  # the fraction of each meta-step's tasks (particles) that stayed finite
    chunk = min(options.chunk_size, options.checkpoint_every)
    step = int(state.step)
    train_time = 0.0
    # The training seconds of the run so far (the snapshot resumed from records them), so that a
    # resumed run's snapshots give the whole run's training time.
    earlier = float(checkpoints.metrics(step).get("train_seconds", math.nan)) if checkpoints is not None and step else 0.0
    bar = tqdm(total=config.meta_steps, initial=step, desc=f"{config.name} seed {config.seed}", unit="meta-step",
               disable=not options.progress, dynamic_ncols=True)
    with stop_signals() as received, contextlib.closing(bar):
        if checkpoints is not None and options.score_start and step == 0 and 0 not in checkpoints.steps():
            _save_snapshot(run, state, recent, score, usable, 0.0)
        while step < config.meta_steps:
            next_checkpoint = (step // options.checkpoint_every + 1) * options.checkpoint_every
            n = min(chunk, config.meta_steps - step, next_checkpoint - step)
            t0 = time.perf_counter()
            before = state
            state, rec = train_chunk(state, n)
            finals = np.asarray(rec.final_log10)
            train_time += time.perf_counter() - t0
            _check_chunk(run, before, state, np.asarray(rec.skipped), finals)
            step = int(state.step)
            at_snapshot = step % options.checkpoint_every == 0 or step == config.meta_steps
            if received and not at_snapshot:  # this chunk is thrown away: it shows nowhere
                raise Stopped(received[0], _stopped_message(run.run_dir, int(before.step), checkpoints))
            recent.extend(finals.tolist())
            usable.extend(np.asarray(rec.usable).tolist())
            if checkpoints is not None:
                append_record(run.run_dir, finals)
            bar.update(n)
            postfix = {"log10_final": f"{np.nanmean(recent) if recent else float('nan'):.2f}", "skipped": int(state.skipped)}
            if min(usable, default=1.0) < 1.0:  # evolution strategies: some particles went non-finite
                postfix["usable"] = f"{np.mean(usable):.3f}"
            bar.set_postfix(postfix, refresh=False)
            if checkpoints is not None and at_snapshot:
                _save_snapshot(run, state, recent, score, usable, earlier + train_time)
                if received and step < config.meta_steps:
                    raise Stopped(received[0], _stopped_message(run.run_dir, step, checkpoints))
    return state, train_time


def _check_chunk(run: Run, before: TrainState, state: TrainState, skipped: np.ndarray, finals: np.ndarray) -> None:
    """Raises `NonFiniteError` (after recording the steps up to it) when the chunk run from
    `before` reached the limit of consecutive skipped meta-steps, or left non-finite weights."""
    step, n = int(before.step), len(finals)
    limit = _skip_limit_reached(before, skipped, run.options.max_consecutive_skips)
    if limit is not None:  # stop where the limit was reached, as if the chunk had ended there
        if run.checkpoints is not None:
            append_record(run.run_dir, finals[: limit - step])
        raise NonFiniteError(
            f"{run.options.max_consecutive_skips} consecutive meta-steps up to meta-step {limit:,} had a "
            f"non-finite meta-loss or meta-gradient (skipped, never applied); stopping: "
            f"{_last_snapshot(run.run_dir, run.checkpoints)}."
        )
    if not _all_finite((state.theta, state.opt_state)):
        raise NonFiniteError(
            f"the weights or Adam state became non-finite during meta-steps {step + 1:,}-{step + n:,}; "
            f"nothing of them is saved; stopping: {_last_snapshot(run.run_dir, run.checkpoints)}."
        )


def _save_snapshot(run: Run, state: TrainState, recent: deque, score, usable: deque = (),
                   train_seconds: float = math.nan) -> None:
    """Saves `state` with its metrics: the rolling training figure and `score(theta)`, the
    validation figure, the seconds of training up to it (compiled chunks, over every resume; NaN
    when a snapshot resumed from did not record them) and, when some meta-step's tasks went
    non-finite, the rolling usable fraction."""
    # Several processes or devices: the state as host arrays, scored on one device and saved by
    # this process alone (a `train --devices 2` run of `general` hung scoring its first trained
    # snapshot with the state replicated over the devices; not reproduced at a tiny scale).
    saved = jax.tree.map(np.asarray, state) if jax.process_count() > 1 or jax.device_count() > 1 else state
    value, non_finite = score(saved.theta)
    metrics = {
        "step": int(state.step),
        "skipped": int(state.skipped),
        "rolling_log10_final": float(np.nanmean(np.asarray(recent, dtype=np.float64))) if recent else float("nan"),
        "validation_log10_final": value,
        "validation_tasks": run.options.validation_tasks,
        "train_seconds": train_seconds,
    }
    if non_finite:
        metrics["validation_non_finite"] = non_finite
    if min(usable, default=1.0) < 1.0:
        metrics["rolling_usable_fraction"] = float(np.mean(usable))
    run.checkpoints.save(saved, run.config, metrics)


def _skip_limit_reached(before: TrainState, skipped: np.ndarray, limit: int) -> int | None:
    """The meta-step at which `limit` consecutive skips were reached within a chunk that started
    from `before` and skipped the steps flagged in `skipped`; None if it was not reached."""
    run = int(before.consecutive_skips)
    for i, skip in enumerate(skipped):
        run = run + 1 if skip else 0
        if run >= limit:
            return int(before.step) + i + 1
    return None


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree) if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _last_snapshot(run_dir: Path, checkpoints: RunCheckpoints | None) -> str:
    if checkpoints is None:
        return "process 0 writes the snapshots"
    snapshots = checkpoints.steps()
    if not snapshots:
        return "no snapshot was written before it"
    return f"the last snapshot, meta-step {snapshots[-1]:,}, is in {run_dir / SNAPSHOTS}"


def run_config(run_dir: Path) -> Config:
    """The config a run folder's `config.json` records (written when its training starts)."""
    with stored_configs():
        return Config.from_dict(json.loads((run_dir / "config.json").read_text()))


def config_of_family(config: Config, family: TaskFamily) -> Config:
    """The config a run on `family` (an experiment's own, e.g. a mixture) stores: the family names the task."""
    with stored_configs():
        return config.replace(task=family_name(family), train_task="")


def config_changes(stored: Config, wanted: Config) -> str:
    """What a resume with `wanted` would change in a run of `stored` ("field: old -> new, ..."), the
    fields a resume may change (`meta_steps`) aside; empty when it may resume."""
    return ", ".join(f"{k}: {getattr(stored, k)!r} -> {getattr(wanted, k)!r}" for k in wanted.changed_fields(stored))


def _stopped_message(run_dir: Path, step: int, checkpoints: RunCheckpoints | None) -> str:
    snapshots = checkpoints.steps() if checkpoints is not None else []
    last = f"last snapshot at meta-step {snapshots[-1]:,}" if snapshots else "no snapshot yet"
    arguments = [a for a in sys.argv[2:] if a != "--fresh"]  # the command again, less what would discard the snapshots
    return (f"stopped at meta-step {step:,} ({last}); resume with: {python_command()} -m l2lgd train "
            f"{' '.join(arguments) if arguments else '... --out ' + str(run_dir)}")


def python_command() -> str:
    """This interpreter as a user would type it here (`.venv/bin/python` in a checkout), so that a
    printed command works without an activated virtual environment."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def _export_best(run_dir: Path, checkpoints: RunCheckpoints, family: TaskFamily) -> tuple[int, float]:
    """Model selection: the snapshot with the best validation score, exported. A damaged
    snapshot is skipped with a warning."""
    damaged: list[int] = []
    while True:
        best_step, best_score = select_best(checkpoints, skip=damaged)
        try:
            best_state, config = checkpoints.restore(best_step, family)
            break
        except ValueError as e:
            warnings.warn(f"{e} Model selection skips it.", stacklevel=2)
            damaged.append(best_step)
    metrics = dict(checkpoints.metrics(best_step), selected_from=checkpoints.steps())
    export_optimizer(run_dir, best_state.theta, config, metrics)
    return best_step, best_score
