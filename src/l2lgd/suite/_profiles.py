"""The field's aggregates over a set of tasks, as pure functions of arrays: steps to a target,
performance profiles and their AlgoPerf score, the interquartile mean with a bootstrap interval,
and speed-ups.

- **Steps to target** (`steps_to_target`): the first optimizee step at which an optimizer's mean
  training-loss curve over a task's test instances reaches the target; `inf` if it never does, or
  if any of its runs went non-finite (a failure, never dropped).
- **Performance profile** (Dolan and More 2002; AlgoPerf, mlcommons/algorithmic-efficiency):
  for each optimizer, rho(tau) = the fraction of tasks whose steps to target are within a factor
  tau of the fastest optimizer's on that task. The AlgoPerf-style score is the area under
  rho(tau) for tau in [1, 4], divided by 3 (1: fastest on every task; 0: never within 4x).
- **IQM** (Agarwal et al. 2021, rliable): the mean of the middle half of the values (25% trimmed
  from each end), with a percentile-bootstrap 95% interval over tasks.
- **Speed-up** over a reference (VeLO's figure): the reference's steps to its own final loss
  divided by the optimizer's steps to that same loss (>1: faster; 0 when it never gets there).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

TAU_MAX = 4.0  # AlgoPerf's largest ratio to the fastest


def steps_to_target(losses: np.ndarray, target: float) -> float:
    """The loss evaluations until the mean over instances of `losses` [instances, steps] (column
    k: f(x_k), before step k) is at most `target`: k + 1 for the first such k, so always at least
    1; inf if never, or if any run is non-finite anywhere."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.size == 0:
        raise ValueError(f"losses must be [instances, steps] with at least one of each, got shape {losses.shape}.")
    if not np.isfinite(target):
        raise ValueError(f"the target must be a finite loss, got {target!r}.")
    if not np.all(np.isfinite(losses)):
        return float("inf")
    reached = np.nonzero(losses.mean(axis=0) <= target)[0]
    return float(reached[0] + 1) if reached.size else float("inf")


def performance_ratios(steps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each optimizer's steps to target over the fastest optimizer's, task by task (`steps`:
    name -> [tasks]). A task no optimizer finishes gives inf to all."""
    names = list(steps)
    table = np.stack([np.asarray(steps[n], dtype=np.float64) for n in names])
    if np.any(table <= 0) or np.any(np.isnan(table)):
        raise ValueError("steps to target must be positive (inf for a failure), never NaN.")
    best = table.min(axis=0)
    with np.errstate(invalid="ignore"):
        ratios = np.where(np.isfinite(best), table / best, np.inf)
    return {n: ratios[i] for i, n in enumerate(names)}


def profile(ratios: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rho(tau): the fraction of tasks whose ratio is at most tau, for each tau."""
    ratios = np.asarray(ratios, dtype=np.float64)
    return np.array([np.mean(ratios <= tau) for tau in np.asarray(taus, dtype=np.float64)])


def profile_score(ratios: np.ndarray, tau_max: float = TAU_MAX, points: int = 3001) -> float:
    """The area under rho(tau) over [1, tau_max], divided by tau_max - 1 (AlgoPerf's score)."""
    taus = np.linspace(1.0, tau_max, points)
    rho = profile(ratios, taus)
    return float(np.sum((rho[1:] + rho[:-1]) / 2 * np.diff(taus)) / (tau_max - 1.0))


class Interval(NamedTuple):
    """A statistic with its bootstrap 95% interval."""

    value: float
    low: float
    high: float


def iqm(values: np.ndarray) -> float:
    """The interquartile mean: the mean of the values left after trimming 25% from each end
    (fractionally, as `scipy.stats.trim_mean(values, 0.25)` does at whole counts). inf values
    (failures) sort last and count."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size == 0 or np.any(np.isnan(x)):
        raise ValueError("iqm needs at least one value and no NaN (a failure is inf).")
    cut = int(np.floor(0.25 * x.size))
    middle = x[cut: x.size - cut]
    return float(np.mean(middle))


def iqm_interval(values: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> Interval:
    """`iqm(values)` and a percentile-bootstrap 95% interval, resampling the tasks."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = np.array([iqm(x[rng.integers(0, x.size, x.size)]) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5]) if np.all(np.isfinite(draws)) else (
        np.quantile(draws, 0.025, method="lower"), np.quantile(draws, 0.975, method="higher"))
    return Interval(iqm(x), float(low), float(high))


def speedup(reference: np.ndarray, other: np.ndarray) -> float:
    """The reference's steps to its own final mean loss over `other`'s steps to that loss
    (`reference`, `other`: [instances, steps] losses of one task). 0 when `other` never gets there
    (or went non-finite); NaN when the reference itself is non-finite."""
    reference = np.asarray(reference, dtype=np.float64)
    if not np.all(np.isfinite(reference)):
        return float("nan")
    target = float(reference.mean(axis=0)[-1])
    mine = steps_to_target(reference, target)
    theirs = steps_to_target(other, target)
    return 0.0 if not np.isfinite(theirs) else mine / theirs
