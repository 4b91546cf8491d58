"""`make eval`: a trained optimizer against the reference's and optax's baselines on held-out tasks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from ..optimizers._baselines import BASELINES, LearningRateGrid
from ..runs._exports import EXPORT
from ..runs._loading import load_learned_optimizer
from .._evaluate import (
    TEST_SEED,
    VALIDATION_SEED,
    learning_rate_scores,
    per_step_log10,
    task_keys,
    summarize,
    summarize_metrics,
    unroll_with_metrics,
)
from ..optimizers._optax_face import as_optax

# Eight rates a decade from 1e-3 to 10; `widen` extends it a decade at a time, down to 1e-6 and up to 1e3.
GRID = LearningRateGrid(low=-3.0, high=1.0, per_decade=8, floor=-6.0, ceiling=3.0)
LEARNING_RATES = tuple(GRID.rates())

# Baselines whose learning rate is tuned on the validation tasks (as the paper did): the name
# `make eval` and the paper's tables show -> its name in the registry `BASELINES`.
TUNED = {
    "optax sgd": "sgd",
    "optax momentum 0.9": "momentum",
    "optax nesterov 0.9": "nesterov",
    "optax rmsprop": "rmsprop",
    "optax adam": "adam",
}


def at_grid_edge(entry: dict[str, Any]) -> bool:
    """Whether a tuned baseline's chosen rate sits at an edge of the grid it was tuned on."""
    lr = entry.get("learning_rate")
    if lr is None or "grid" not in entry:
        return False
    return entry.get("grid_edge", lr in (min(LEARNING_RATES), max(LEARNING_RATES)))


def require_trained(run_dir: Path, experiment: str) -> None:
    if not (run_dir / EXPORT).is_dir():
        raise FileNotFoundError(
            f"{run_dir} holds no trained optimizer: train it first with `make train EXP={experiment}"
            + (f" OUT={run_dir}" if run_dir.parts[:1] != ("runs",) or len(run_dir.parts) != 2 else "")
            + "`."
        )


def evaluate_tx(tx: optax.GradientTransformation, config, keys, family=None, **extra) -> dict[str, Any]:
    """One optimizer on the tasks `keys`: summary of the final losses, log10 loss per step, and
    the family's metrics of the trained params (mean and 95% CI), if it has any."""
    losses, metrics = jax.jit(lambda k: unroll_with_metrics(tx, config, k, family=family))(keys)
    losses = np.asarray(losses)
    out = {"final": summarize(losses[:, -1]), "per_step": per_step_log10(losses), **extra}
    if metrics:
        out["metrics"] = summarize_metrics(metrics)
    return out


def tuned_baselines(config, val_keys, test_keys, *, progress: bool = True, widen: bool = False, family=None) -> dict[str, dict[str, Any]]:
    """Each baseline of TUNED with its learning rate tuned on `val_keys` (on `GRID`), run on `test_keys`.

    With `widen`, a grid whose best rate sits at an edge is extended by a decade on that side
    (same spacing), up to 1e-6 and 1e3, so that the chosen rate is inside the grid."""
    grid = GRID if widen else dataclasses.replace(GRID, floor=GRID.low, ceiling=GRID.high)
    out = {}
    for name, baseline in TUNED.items():
        def make(lr, baseline=BASELINES[baseline]):
            return baseline(lr, config.steps_per_task)

        lr, scores, edge = grid.search(lambda rates: learning_rate_scores(
            make, rates, config, val_keys, progress=progress, desc=name, family=family))
        entry = evaluate_tx(make(lr), config, test_keys, family, learning_rate=lr, grid={f"{k:.4g}": v for k, v in scores.items()})
        entry["grid_edge"] = edge
        out[name] = entry
    return out


def evaluate_run(
    run_dir: str | Path,
    *,
    num_tasks: int = 10_000,
    validation_tasks: int = 1_000,
    progress: bool = True,
    write: bool = True,
    family=None,
) -> dict[str, Any]:
    """Evaluates `<run_dir>/optimizer` and the baselines on `num_tasks` test tasks of `family`
    (the family the run was trained on: its experiment's `family`, else the one its config names).

    Returns (and writes to `<run_dir>/eval.json`) for each optimizer: its summary statistics of
    log10 f(x_T-1), the mean log10 loss at every step and, for tuned baselines, the grid.
    """
    run_dir = Path(run_dir)
    opt, config, metrics = load_learned_optimizer(run_dir)
    test_keys = task_keys(TEST_SEED, num_tasks)
    val_keys = task_keys(VALIDATION_SEED, validation_tasks)
    entries: dict[str, Any] = {
        f"learned ({config.name})": evaluate_tx(as_optax(opt), config, test_keys, family, step=metrics["step"]),
        "reference sgd (lr 0.1)": evaluate_tx(BASELINES["reference_sgd"](0.1, config.steps_per_task), config, test_keys,
                                              family, learning_rate=0.1),
        "reference rmsprop (lr 0.1)": evaluate_tx(BASELINES["reference_rmsprop"](0.1, config.steps_per_task), config,
                                                  test_keys, family, learning_rate=0.1),
    }
    for name, entry in tuned_baselines(config, val_keys, test_keys, progress=progress, family=family).items():
        entries[f"{name} (tuned)"] = entry
    result = {
        "experiment": config.name,
        "config": config.to_dict(),
        "num_tasks": num_tasks,
        "validation_tasks": validation_tasks,
        "test_seed": TEST_SEED,
        "validation_seed": VALIDATION_SEED,
        "optimizers": entries,
    }
    if write:
        (run_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def load_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """`<run_dir>/eval.json`, or None; one written before l2lgd 0.3 is read in today's words
    ("num_tasks" for "num_problems", "reference sgd" for "seed sgd", ...)."""
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    for old, new in (("num_problems", "num_tasks"), ("validation_problems", "validation_tasks")):
        if old in result:
            result[new] = result.pop(old)
    result["optimizers"] = {
        ("reference " + k[len("seed "):] if k.startswith("seed ") else k): v for k, v in result["optimizers"].items()
    }
    return result


def format_table(result: dict[str, Any]) -> str:
    """The evaluation as a Markdown table."""
    steps = result["config"].get("horizon") or result["config"]["num_steps"]
    lines = [
        f"log10(f(x_{steps - 1}) + 1e-38) over {result['num_tasks']:,} test tasks (mean, CI, median, "
        "percentiles), and f itself (mean loss)",
        "",
        "| optimizer | lr | mean | 95% CI | median | p5 | p95 | exactly 0 | mean loss ± 95% CI | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["optimizers"].items():
        f = entry["final"]
        lr = entry.get("learning_rate")
        lr_text = ("" if lr is None else f"{lr:.3g}") + (" (grid edge)" if at_grid_edge(entry) else "")
        lines.append(
            f"| {name} | {lr_text} | {f['mean']:.2f} | "
            f"[{f['ci95_low']:.2f}, {f['ci95_high']:.2f}] | {f['median']:.2f} | {f['p5']:.2f} | "
            f"{f['p95']:.2f} | {100 * f['frac_zero']:.1f}% | {f['loss_mean']:.3g} ± {f['loss_ci95']:.2g} | "
            f"{100 * f['frac_diverged']:.1f}% |"
        )
    with_metrics = {k: v["metrics"] for k, v in result["optimizers"].items() if "metrics" in v}
    if with_metrics:
        names = list(next(iter(with_metrics.values())))
        lines += ["", "Trained params after the last step, mean ± 95% CI over the test tasks:", "",
                  "| optimizer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k, m in with_metrics.items():
            lines.append(f"| {k} | " + " | ".join(f"{m[n]['mean']:.4g} ± {m[n]['ci95']:.2g}" for n in names) + " |")
    return "\n".join(lines)
