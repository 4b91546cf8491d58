"""The reference's plots, redrawn: sample unrolls, meta-training convergence, loss per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def rolling_log_average(log10_values: np.ndarray, window: int) -> np.ndarray:
    """10 ** (mean of the last `window` log10 values) at every index: the reference's
    `rolling_log_average`, in O(n)."""
    x = np.asarray(log10_values, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    start = np.maximum(idx - window, 0)
    return 10 ** ((csum[idx] - csum[start]) / (idx - start))


def sample_unrolls(path: Path, curves: dict[str, np.ndarray], title: str = "Losses on 3 sample tasks") -> Path:
    """`curves[name]` is `[3, T]`: one semilogy panel per task, as the reference's `graph_optimizers`."""
    n = next(iter(curves.values())).shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), sharey=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        for name, losses in curves.items():
            ax.semilogy(np.arange(losses.shape[1]), np.asarray(losses[i], np.float64) + 1e-38, label=name, marker=".")
        ax.set_xlabel("optimizee step t")
        ax.set_title(f"task {i + 1}")
        ax.grid(True, which="major", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("loss f(x_t) + 1e-38")
    np.atleast_1d(axes)[0].legend()
    fig.suptitle(title)
    return _save(fig, path)


def convergence(
    path: Path,
    records: dict[str, np.ndarray],
    baselines: dict[str, float] | None = None,
    window: int = 500,
    title: str = "End result of the optimizer during meta-training",
) -> Path:
    """Every meta-step's final loss (transparent) with its rolling log-average (solid), and the
    baselines' mean log10 final loss as horizontal lines: the reference's `draw_convergence`."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, record in records.items():
        steps = np.arange(1, record.size + 1)
        (line,) = ax.semilogy(steps, 10 ** np.asarray(record, np.float64), alpha=0.15, linewidth=0.5)
        ax.semilogy(steps, rolling_log_average(record, window), color=line.get_color(), label=f"{name} ({window}-step log average)")
    styles = iter(["--", ":", "-.", (0, (5, 1))])
    for name, value in (baselines or {}).items():
        ax.axhline(10**value, color="black", linestyle=next(styles, "--"), linewidth=1, label=f"{name} (mean log10 = {value:.1f})")
    ax.set_xlabel("meta-step")
    ax.set_ylabel("final loss f(x_T-1)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def per_step(path: Path, stats: dict[str, dict[str, Sequence[float]]], title: str = "Mean log10 loss per step") -> Path:
    """`stats[name]` has `mean`, `p5`, `p95` per step: the mean with a 5-95% band."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, s in stats.items():
        t = np.arange(len(s["mean"]))
        (line,) = ax.plot(t, s["mean"], label=name, marker=".")
        ax.fill_between(t, s["p5"], s["p95"], color=line.get_color(), alpha=0.06, linewidth=0)
    ax.set_xlabel("optimizee step t")
    ax.set_ylabel("log10(f(x_t) + 1e-38): mean, 5-95% band")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_run_figures(run_dir: str | Path, out_dir: str | Path | None = None, family=None) -> list[Path]:
    """The three figures of a trained run (needs `<run_dir>/eval.json` from `make eval`)."""
    from ..optimizers._baselines import reference_rmsprop, reference_sgd
    from ..runs._loading import load_learned_optimizer
    from ..runs._record import RECORD, load_record
    from .._evaluate import TEST_SEED, task_keys, run_optimizer
    from ..optimizers._optax_face import as_optax
    from .compare import load_eval

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "figures"
    opt, config, _ = load_learned_optimizer(run_dir)
    keys = task_keys(TEST_SEED, 3)
    curves = {
        "SGD": run_optimizer(reference_sgd(), config, keys, family=family),
        "RMS": run_optimizer(reference_rmsprop(), config, keys, family=family),
        "RNN": run_optimizer(as_optax(opt), config, keys, family=family),
    }
    paths = [sample_unrolls(out_dir / "sample_tasks.png", curves, title=f"{config.name}: losses on 3 test tasks")]
    result = load_eval(run_dir)
    if (run_dir / RECORD).exists():
        baselines = None
        if result:
            baselines = {k: v["final"]["mean"] for k, v in result["optimizers"].items() if k.startswith("reference")}
        paths.append(convergence(out_dir / "convergence.png", {config.name: load_record(run_dir)}, baselines,
                                 title=f"{config.name}: final loss during meta-training"))
    if result:
        stats = {k: v["per_step"] for k, v in result["optimizers"].items()}
        paths.append(per_step(out_dir / "per_step.png", stats, title=f"{config.name}: mean log10 loss per step, {result['num_tasks']:,} test tasks"))
    return paths
