"""The meta-training driver: chunks of jitted meta-steps, progress, checkpoints, model selection.

Everything numerical happens in `make_train_chunk`; this file holds the side effects (progress
bar, record file, snapshots, export), outside of jit.
"""

from __future__ import annotations

import dataclasses
from collections import deque
import math
import shutil
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

from ._checkpoint import (
    EXPORT,
    RECORD,
    SNAPSHOTS,
    RunCheckpoints,
    append_record,
    export_optimizer,
    truncate_record,
)
from ._config import Config
from ._evaluate import VALIDATION_SEED, log10_losses, problem_keys, unroll_losses
from ._meta import TrainState, init_state, make_train_chunk
from ._optax_face import as_optax


class NonFiniteError(RuntimeError):
    """Too many consecutive meta-steps had a non-finite meta-loss or meta-gradient."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is driven; none of it changes the trained weights."""

    checkpoint_every: int = 5_000
    chunk_size: int = 1_000
    max_consecutive_skips: int = 100
    validation_problems: int = 1_000
    fresh: bool = False
    progress: bool = True

    def __post_init__(self):
        for field in ("checkpoint_every", "chunk_size", "max_consecutive_skips", "validation_problems"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"RunOptions.{field} must be a positive integer, got {value!r}.")


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    config: Config
    best_step: int
    best_validation: float
    wall_time: float
    train_time: float


def validation_score(theta: Any, static: Any, config: Config, keys: jax.Array) -> float:
    """Mean log10(f(x_T-1) + 1e-38) over the validation problems: the model-selection score."""
    losses = _validation_losses(theta, static, config, keys)
    return float(log10_losses(losses[:, -1]).mean())


@eqx.filter_jit
def _validation_losses(theta, static, config, keys):
    return unroll_losses(as_optax(eqx.combine(theta, static)), config, keys)


def _prepare_run_dir(run_dir: Path, config: Config, options: RunOptions) -> None:
    if options.fresh:
        for name in (SNAPSHOTS, EXPORT, RECORD, "config.json"):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json() + "\n")


def train(config: Config, run_dir: str | Path, options: RunOptions = RunOptions()) -> TrainResult:
    """Meta-trains `config` into `run_dir`, resuming from its latest snapshot if there is one.

    Snapshots are written every `options.checkpoint_every` meta-steps and at the end; each is
    scored on a fixed validation set, and the best is exported to `<run_dir>/optimizer/`.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoints = None
    if not options.fresh and (run_dir / SNAPSHOTS).is_dir():
        checkpoints = RunCheckpoints(run_dir)
        latest = checkpoints.latest_step()
        if latest is not None:
            stored = checkpoints.config(latest)
            changed = config.changed_fields(stored)
            if changed:
                details = ", ".join(f"{k}: {getattr(stored, k)!r} -> {getattr(config, k)!r}" for k in changed)
                raise ValueError(
                    f"{run_dir} holds a run with a different config ({details}). Resume with the same "
                    "config, pass --fresh to start afresh, or choose another output folder."
                )
    _prepare_run_dir(run_dir, config, options)
    checkpoints = checkpoints or RunCheckpoints(run_dir)

    state, opt = init_state(config)
    static = eqx.filter(opt, eqx.is_array, inverse=True)
    latest = checkpoints.latest_step()
    if latest is not None:
        state, _ = checkpoints.restore(latest)
        truncate_record(run_dir, latest)
    elif (run_dir / RECORD).exists():
        (run_dir / RECORD).unlink()
    # The last 1,000 final losses, for the progress bar and the snapshots' metrics.
    recent = deque(np.fromfile(run_dir / RECORD, dtype="<f4")[-1000:] if (run_dir / RECORD).exists() else [], maxlen=1000)

    val_keys = problem_keys(VALIDATION_SEED, options.validation_problems)
    train_chunk = make_train_chunk(config, static)
    chunk = min(options.chunk_size, options.checkpoint_every)
    step = int(state.step)
    train_time = 0.0
    bar = tqdm(
        total=config.meta_steps,
        initial=step,
        desc=f"{config.name} seed {config.seed}",
        unit="meta-step",
        disable=not options.progress,
        dynamic_ncols=True,
    )
    try:
        while step < config.meta_steps:
            next_checkpoint = (step // options.checkpoint_every + 1) * options.checkpoint_every
            n = min(chunk, config.meta_steps - step, next_checkpoint - step)
            t0 = time.perf_counter()
            state, rec = train_chunk(state, n)
            finals = np.asarray(rec.final_log10)
            train_time += time.perf_counter() - t0
            step = int(state.step)
            recent.extend(finals.tolist())
            append_record(run_dir, finals)
            bar.update(n)
            bar.set_postfix(
                log10_final=f"{np.mean(recent):.2f}",
                skipped=int(state.skipped),
                refresh=False,
            )
            if int(state.consecutive_skips) >= options.max_consecutive_skips:
                raise NonFiniteError(
                    f"{int(state.consecutive_skips)} consecutive meta-steps up to step {step} had a "
                    "non-finite meta-loss or meta-gradient; stopping. The last good snapshot in "
                    f"{run_dir / SNAPSHOTS} is kept (weights never took a non-finite update)."
                )
            if step % options.checkpoint_every == 0 or step == config.meta_steps:
                metrics = {
                    "step": step,
                    "skipped": int(state.skipped),
                    "rolling_log10_final": float(np.mean(recent, dtype=np.float64)),
                    "validation_log10_final": validation_score(state.theta, static, config, val_keys),
                    "validation_problems": options.validation_problems,
                }
                checkpoints.save(state, config, metrics)
    finally:
        bar.close()

    best_step, best_score = select_best(checkpoints)
    best_state, _ = checkpoints.restore(best_step)
    metrics = dict(checkpoints.metrics(best_step), selected_from=checkpoints.steps())
    export_optimizer(run_dir, best_state.theta, config, metrics)
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


def select_best(checkpoints: RunCheckpoints) -> tuple[int, float]:
    """The snapshot with the lowest validation score (ties: the later one)."""
    best = None
    for step in checkpoints.steps():
        score = checkpoints.metrics(step).get("validation_log10_final", math.inf)
        if not math.isfinite(score):
            continue
        if best is None or score <= best[1]:
            best = (step, score)
    if best is None:
        raise ValueError(f"No snapshot in {checkpoints.directory} has a finite validation score.")
    return best
