"""Running optimizers on held-out tasks, and the statistics the reference notebook reports."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax

from ._config import Config
from ._unroll import run_steps
from .optimizers._optax_face import fill_horizon
from .tasks import TaskFamily, draw_task, task_family

# Task sets that training never draws from: training uses key(config.seed) split in two.
VALIDATION_SEED = 1_000_003
TEST_SEED = 2_000_003


def task_keys(seed: int, num_tasks: int) -> jax.Array:
    """The keys of a fixed task set.

    Args:
        seed: `VALIDATION_SEED` for model selection and tuning, `TEST_SEED` for held-out
            figures (training never draws from either).
        num_tasks: how many keys; the first n of a larger set are the set of n.

    Returns:
        `[num_tasks]` typed PRNG keys, one per task (`family.sample(key)`).
    """
    return jax.random.split(jax.random.key(seed), num_tasks)


def unroll_losses(
    tx: optax.GradientTransformation,
    config: Config,
    keys: jax.Array,
    *,
    num_steps: int | None = None,
    family: TaskFamily | None = None,
) -> jax.Array:
    """`[num_tasks, num_steps]` losses of `tx` on the tasks of `family` (default: the
    config's) drawn with `keys` (default `num_steps`: the config's whole horizon)."""
    family = family if family is not None else task_family(config)
    num_steps = num_steps or config.steps_per_task
    return jax.vmap(lambda key: _run_task(tx, family, key, num_steps)[2])(keys)


def _run_task(tx, family: TaskFamily, key, num_steps: int):
    """`(loss_fn, params after the last step, losses)` of `tx` on the task drawn with `key`; a
    learned optimizer that uses the horizon and was not given one gets `num_steps`."""
    loss_fn, x0, minibatch_key = draw_task(family, key)
    (params, _), losses = run_steps(
        tx, loss_fn, x0, fill_horizon(tx.init(x0), num_steps), num_steps=num_steps, key=minibatch_key
    )
    return loss_fn, params, losses


def unroll_with_metrics(
    tx: optax.GradientTransformation,
    config: Config,
    keys: jax.Array,
    *,
    family: TaskFamily | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The losses of `unroll_losses` and, per task, the family's `metrics` of the params after
    the last step (e.g. test-split loss and accuracy; empty for families without metrics)."""
    family = family if family is not None else task_family(config)

    def one(key):
        loss_fn, params, losses = _run_task(tx, family, key, config.steps_per_task)
        return losses, family.metrics(loss_fn, params)

    return jax.vmap(one)(keys)


def host_log10(losses: Any) -> np.ndarray:
    """log10(loss + 1e-38) in float64 on the host, for statistics: exact (no float32 rounding),
    and -38 where a loss is 0. (`log10_loss` is the same measure in float32, inside jit.)"""
    return np.log10(np.asarray(losses, dtype=np.float64) + 1e-38)


# A task whose final loss is not finite (the optimizer diverged) scores as the largest float32
# loss: the worst an optimizer can do, never left out (which would favour one that diverges on a
# task over one that is merely slow there). Model selection and ablation tables score this way.
NON_FINITE_LOG10 = float(np.log10(np.finfo(np.float32).max))


def scored_log10(final_losses: Any) -> tuple[float, int]:
    """`(score, non_finite)`: the mean of log10(f + 1e-38) over `final_losses`, a non-finite one
    counting as `NON_FINITE_LOG10`, and how many were not finite."""
    with np.errstate(invalid="ignore"):
        logs = host_log10(final_losses)
    finite = np.isfinite(logs)
    return float(np.where(finite, logs, NON_FINITE_LOG10).mean()), int((~finite).sum())


def ci95_half_width(values: Any) -> float:
    """The half-width of the 95% confidence interval of the mean of `values` (normal
    approximation: 1.96 standard errors, with the sample standard deviation); NaN for fewer
    than two values."""
    values = np.asarray(values, dtype=np.float64)
    return float(1.96 * values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")


def summarize(final_losses: Any) -> dict[str, float]:
    """Statistics of log10(f + 1e-38) over tasks: mean, median, 5th/95th percentiles, the 95%
    confidence interval of the mean (normal approximation), and the fraction of exact zeros;
    and of f itself: its mean over the finite values with a 95% CI half-width, and the fraction
    that diverged (inf or NaN).

    Returns:
        A dict of floats: "mean", "median", "p5", "p95", "ci95_low", "ci95_high", "frac_zero"
        (of log10(f + 1e-38)), "loss_mean", "loss_ci95", "frac_diverged", "num_tasks".
    """
    final_losses = np.asarray(final_losses, dtype=np.float64)
    logs = host_log10(final_losses)
    n = logs.size
    half = ci95_half_width(logs)
    finite = final_losses[np.isfinite(final_losses)]
    return {
        "loss_mean": float(finite.mean()) if finite.size else float("nan"),
        "loss_ci95": ci95_half_width(finite),
        "frac_diverged": float(1 - finite.size / max(n, 1)),
        "mean": float(logs.mean()),
        "median": float(np.median(logs)),
        "p5": float(np.percentile(logs, 5)),
        "p95": float(np.percentile(logs, 95)),
        "ci95_low": float(logs.mean() - half),
        "ci95_high": float(logs.mean() + half),
        "frac_zero": float(np.mean(final_losses == 0.0)),
        "num_tasks": int(n),
    }


def per_step_log10(losses: Any) -> dict[str, list[float]]:
    """Mean, 5th and 95th percentile of log10(loss + 1e-38) at every step."""
    logs = host_log10(losses)
    return {
        "mean": logs.mean(axis=0).tolist(),
        "p5": np.percentile(logs, 5, axis=0).tolist(),
        "p95": np.percentile(logs, 95, axis=0).tolist(),
    }


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean and 95% CI half-width over tasks of each metric."""
    out = {}
    for name, values in metrics.items():
        values = np.asarray(values, dtype=np.float64)
        out[name] = {"mean": float(values.mean()), "ci95": ci95_half_width(values)}
    return out


def run_optimizer(
    tx: optax.GradientTransformation,
    config: Config,
    keys: jax.Array,
    *,
    num_steps: int | None = None,
    family: TaskFamily | None = None,
) -> np.ndarray:
    """Runs `tx` on each task of `keys` and returns its losses, compiled once per call.

    Args:
        tx: any optax transformation (a learned optimizer's `as_optax`, or a baseline); a
            learned optimizer that uses the horizon and was given none runs with `num_steps`.
        config: gives the task family (`config.task`) and, unless `num_steps` does, the
            number of steps (`config.steps_per_task`).
        keys: one key per task (`task_keys`).
        num_steps: steps per task, overriding the config's.
        family: the `TaskFamily` to draw from, instead of the one `config.task` names.

    Returns:
        `[num_tasks, num_steps]` float losses f(x_0) ... f(x_{T-1}), each before its update.

    Example:
        >>> config = l2lgd.Config()  # the reference's 2-D quadratics, 20 steps
        >>> l2lgd.run_optimizer(optax.sgd(0.1), config, l2lgd.task_keys(l2lgd.TEST_SEED, 8)).shape
        (8, 20)
    """
    return np.asarray(jax.jit(lambda k: unroll_losses(tx, config, k, num_steps=num_steps, family=family))(keys))


def tune_learning_rate(
    make_tx: Callable[[float], optax.GradientTransformation],
    grid: Any,
    config: Config,
    keys: jax.Array,
    *,
    max_seconds: float = 600.0,
    progress: bool = True,
    desc: str = "grid",
    family: TaskFamily | None = None,
    score: str = "log10",
) -> tuple[float, dict[float, float]]:
    """The learning rate of `grid` with the lowest mean log10 final loss on the tasks `keys`
    (`score="loss"`: the lowest mean final loss).

    Args:
        make_tx: learning rate -> optax transformation (e.g. `optax.adam`).
        grid: the learning rates to try.
        config, keys, family: the tasks, as for `run_optimizer`.
        max_seconds: refuse a grid estimated to take longer (from its first point).
        progress, desc: a progress bar and its label.
        score: "log10" (mean log10 final loss) or "loss" (mean final loss).

    Returns:
        `(best learning rate, {learning rate: score})`.

    The learning rate is a traced argument, so the whole grid compiles once. A grid whose
    estimated time (from its first point) exceeds `max_seconds` is refused before it runs.
    """
    scores = learning_rate_scores(make_tx, grid, config, keys, max_seconds=max_seconds, progress=progress, desc=desc,
                                  family=family, score=score)
    finite = {lr: s for lr, s in scores.items() if np.isfinite(s)}
    best = min(finite, key=finite.get)
    return best, scores


def learning_rate_scores(
    make_tx: Callable[[float], optax.GradientTransformation],
    grid: Any,
    config: Config,
    keys: jax.Array,
    *,
    max_seconds: float = 600.0,
    progress: bool = True,
    desc: str = "grid",
    family: TaskFamily | None = None,
    score: str = "log10",
) -> dict[float, float]:
    """`{learning rate: score}` of each rate of `grid` on the tasks `keys` (the arguments of
    `tune_learning_rate`, which picks the best of them); inf or NaN where a rate diverged."""
    import time

    from tqdm.auto import tqdm

    if score not in ("log10", "loss"):
        raise ValueError(f"score must be 'log10' or 'loss', got {score!r}.")
    measure = (lambda losses: float(host_log10(losses).mean())) if score == "log10" else (lambda losses: float(np.mean(losses)))
    grid = [float(lr) for lr in grid]
    if not grid:
        raise ValueError("The learning-rate grid is empty.")
    # Compiled once, for these keys (compiling for a smaller warm-up batch compiled twice).
    losses_at = jax.jit(lambda lr, k: unroll_losses(make_tx(lr), config, k, family=family)[:, -1]).lower(
        grid[0], keys).compile()
    start = time.perf_counter()
    scores = {grid[0]: measure(losses_at(grid[0], keys))}
    estimate = (time.perf_counter() - start) * len(grid)
    if estimate > max_seconds:
        raise ValueError(
            f"The grid of {len(grid)} learning rates on {len(keys)} tasks would take about "
            f"{estimate:.0f} s, over the limit of {max_seconds:.0f} s; use fewer rates or tasks."
        )
    for lr in tqdm(grid[1:], desc=desc, disable=not progress, leave=False):
        scores[lr] = measure(losses_at(lr, keys))
    return scores
