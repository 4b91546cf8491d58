"""What a suite run writes: `suite.json`, a markdown table, a figure per task and a summary figure,
and (with a report file) its section of `experiments/SUITE.md`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from ._baselines import BASELINES
from ._run import Settings, SuiteResult, TaskResult
from ._tasks import SPLITS, SUITE, select


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}"


def _pm(stats) -> str:
    ci = stats["ci95"]
    return f"{_fmt(stats['mean'])} ± {_fmt(ci) if math.isfinite(ci) else '—'}"


def _speedup(s) -> str:
    return "> 1" if s is None else f"{s:.2f}"


def _accuracy(r: TaskResult) -> str:
    if "test_accuracy" not in r.optimizer:
        return "—"
    best = r.baselines[r.best_baseline]["test"]["test_accuracy"]["mean"]
    return f"{r.optimizer['test_accuracy']['mean']:.3f} / {best:.3f}"


def _capped(result: SuiteResult) -> str:
    """Which tasks ran on fewer instances than the settings' (`SuiteTask.max_instances`)."""
    capped = sorted({(t.name, SUITE[t.name].max_instances) for t in result.tasks
                     if t.name in SUITE and SUITE[t.name].max_instances is not None
                     and SUITE[t.name].max_instances < result.settings["test_instances"]})
    return "".join(f"; {name}: {n} of each" for name, n in capped)


def markdown(result: SuiteResult, title: str | None = None) -> str:
    """The table of a suite run (one row per task) and its summary."""
    s = result.summary
    partial = partial_run(result)
    lines = [
        f"### `{result.optimizer}`" if title is None else title,
        "",
        *([f"**Partial run** ({partial}): not comparable with a full run's figures.", ""] if partial else []),
        f"{s['tasks']} tasks, {result.settings['test_instances']} test instances each (baselines tuned on "
        f"{result.settings['validation_instances']}{_capped(result)}); {result.seconds:.0f} s ({result.baseline_seconds:.0f} s of it the baselines, "
        "0 when cached). Mean final training loss (full batch, after the last step) ± 95% CI; ratio < 1: the optimizer is lower.",
        "",
        "| task | kind | steps | optimizer | best tuned baseline (lr) | its loss | ratio | vs tuned Adam | vs suite Adam | "
        "speed-up over Adam | test acc (opt / best) | non-finite |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.tasks:
        best = r.baselines[r.best_baseline]
        edge = " (grid edge)" if best.get("grid_edge") else ""
        lines.append(
            f"| `{r.name}` | {r.kind} | {r.horizon:,} | {_pm(r.optimizer['train_loss'])} | {r.best_baseline} "
            f"({best['lr']:.3g}){edge} | {_pm(best['test']['train_loss'])} | {_fmt(r.ratio_to_best)} | {_fmt(r.ratio_to_adam)} | "
            f"{_fmt(r.ratio_to_suite_adam)} | {_speedup(r.speedup_over_adam)} | {_accuracy(r)} | {r.optimizer['nonfinite_runs']} |"
        )
    beats = s["fraction_beating_with_separated_ci"]
    below = s["fraction_with_lower_mean"]
    lines += [
        "",
        f"Median ratio to the best tuned baseline **{_fmt(s['median_ratio_to_best'])}** (geometric mean "
        f"{_fmt(s['geomean_ratio_to_best'])}); below the best on {below['best']:.0%} of tasks{_failures(s)}; median ratio to tuned Adam "
        f"{_fmt(s['median_ratio_to_adam'])}; median speed-up over tuned Adam {_fmt(s['median_speedup_over_adam'])}; "
        f"against Adam at one suite-wide learning rate ({_fmt(s['suite_adam_lr'])}): below on "
        f"{s['fraction_below_suite_adam']:.0%} of tasks, median ratio {_fmt(s['median_ratio_to_suite_adam'])}; "
        f"non-finite runs: {s['nonfinite_runs']}.",
        "",
        "| baseline | " + " | ".join(beats) + " |",
        "|---|" + "---|" * len(beats),
        "| beaten with separated CIs | " + " | ".join(f"{v:.0%}" for v in beats.values()) + " |",
        "| lower mean | " + " | ".join(f"{below[b]:.0%}" for b in beats) + " |",
        "",
        "| kind | tasks | median ratio to best | below best |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v['tasks']} | {_fmt(v['median_ratio'])} | {v['below_best']:.0%} |" for k, v in s["per_kind"].items()]
    lines += rivals_markdown(result)
    lines += profiles_markdown(s.get("profiles"), [r.name for r in result.tasks])
    return "\n".join(lines)


def _iqm(interval) -> str:
    return f"{_fmt(interval['value'])} [{_fmt(interval['low'])}, {_fmt(interval['high'])}]"


def rivals_markdown(result: SuiteResult) -> list[str]:
    """The tuning-free rivals' tables: each one's mean final training loss per task (the
    optimizer's ratio to it), and over the suite how often the optimizer is below it and the IQM
    of the ratio."""
    rivals = result.summary.get("rivals") or {}
    if not rivals:
        return []
    names = list(rivals)
    lines = ["", "Tuning-free rivals at their defaults (untuned; schedule-free scored at its averaged iterate): mean final "
             "training loss on the test instances (the optimizer's ratio to it; non-finite runs).", "",
             "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in result.tasks:
        cells = []
        for k in names:
            figures = r.rivals[k]["test"]
            bad = figures["nonfinite_runs"]
            cells.append(f"{_fmt(figures['train_loss']['mean'])} ({_fmt(r.ratio_to_rivals[k])})" + (f", {bad} non-finite" if bad else ""))
        lines.append(f"| `{r.name}` | " + " | ".join(cells) + " |")
    lines += ["", "| rival | optimizer below it | IQM of the ratio [95% bootstrap] | its non-finite runs |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['fraction_below']:.0%} | {_iqm(v['iqm_ratio'])} | {v['nonfinite_runs']} |" for k, v in rivals.items()]
    return lines


def profiles_markdown(profiles, task_names: list[str]) -> list[str]:
    """The comparison's steps to target per task, and per optimizer its profile score, the IQM of
    its ratio to tuned Adam and its speed-ups over tuned Adam."""
    if not profiles or not profiles.get("optimizers"):
        return []
    optimizers = profiles["optimizers"]
    lines = ["", f"Steps to target. Target: {profiles['target']}. Profile score: the area under the performance profile "
             "rho(tau) (the fraction of tasks within tau times the fastest's steps) for tau in [1, 4], over 3 (1: "
             "fastest everywhere). Ratios are of mean final training loss.", "",
             "| optimizer | profile score | IQM ratio to tuned Adam [95% bootstrap] | speed-up over tuned Adam: median (quartiles) |",
             "|---|---|---|---|"]
    for k, v in optimizers.items():
        q = v["speedup_over_adam"]
        lines.append(f"| {k} | {v['score']:.3f} | {_iqm(v['iqm_ratio_to_adam'])} | "
                     f"{_fmt(q['median'])} ({_fmt(q['q25'])}-{_fmt(q['q75'])}) |")
    names = list(optimizers)
    lines += ["", "| task | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i, task in enumerate(task_names):
        target = profiles["targets"][i]
        lines.append(f"| `{task}` | {_fmt(target)} | " + " | ".join(
            "—" if math.isinf(optimizers[k]["steps_to_target"][i]) else f"{optimizers[k]['steps_to_target'][i]:.0f}"
            for k in names) + " |")
    return lines


def profile_figure(path: Path, profiles, title: str) -> Path:
    """The performance profiles: rho(tau) against tau (log axis, 1 to 4), one line per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    taus = np.asarray(profiles["taus"], dtype=float)
    for k, v in profiles["optimizers"].items():
        ax.step(taus, np.asarray(v["rho"], dtype=float), where="post", label=f"{k} ({v['score']:.2f})",
                linewidth=2.0 if not k.startswith("tuned ") else 1.0)
    ax.set_xscale("log")
    ax.set_xlim(1.0, taus[-1])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (steps to target / the fastest's)")
    ax.set_ylabel("fraction of tasks within tau")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _failures(summary) -> str:
    """How many tasks had a non-finite run (each a loss against every baseline), when any did."""
    failed = summary.get("tasks_with_nonfinite_runs", 0)
    if not failed:
        return ""
    return (f" ({failed} task{'s' if failed != 1 else ''} with non-finite runs, {summary['nonfinite_runs']} runs in all, "
            "each a loss against every baseline)")


def partial_run(result: SuiteResult) -> str | None:
    """None for a full run (every task of one split of the suite, or all of them, at `Settings()`,
    every baseline); else what makes it partial, in words."""
    s = {**dataclasses.asdict(Settings()), "horizon_scale": 1, **result.settings}
    why = []
    if s["horizon_cap"] is not None:
        why.append(f"quick: horizons capped at {s['horizon_cap']} steps")
    if s["horizon_scale"] != 1:
        why.append(f"{s['horizon_scale']}x the horizons")
    full = Settings()
    if (s["validation_instances"], s["test_instances"]) != (full.validation_instances, full.test_instances):
        why.append(f"{s['validation_instances']} validation and {s['test_instances']} test instances")
    names = sorted(t.name for t in result.tasks)
    if whole_split(result) is None:
        why.append(f"{len(names)} task{'s' if len(names) != 1 else ''}: {', '.join(names)}" if len(names) <= 4 else
                   f"{len(names)} tasks, not a whole split")
    tuned = list(result.tasks[0].baselines) if result.tasks else []
    if sorted(tuned) != sorted(BASELINES):
        why.append(f"baselines {', '.join(tuned)} only")
    return "; ".join(why) or None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "optimizer"


def task_figure(path: Path, r: TaskResult, label: str) -> Path:
    """Loss per step (log scale): the optimizer's mean with its 10-90% band against the best baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    best = r.baselines[r.best_baseline]
    for name, curve in ((label, r.optimizer["curve"]), (f"{r.best_baseline} (lr {best['lr']:.3g}, tuned)", best["test"]["curve"])):
        steps = np.arange(len(curve["mean"]))
        (line,) = ax.semilogy(steps, np.asarray(curve["mean"], dtype=float), label=name)
        ax.fill_between(steps, np.asarray(curve["p10"], dtype=float), np.asarray(curve["p90"], dtype=float),
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (minibatch)")
    ax.set_title(f"{r.name} ({r.kind}, {r.split})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def summary_figure(path: Path, result: SuiteResult) -> Path:
    """The ratio to the best tuned baseline per task (log scale; left of 1: the optimizer wins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [min(max(r.ratio_to_best, 1e-6), 1e6) for r in result.tasks]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ratios) + 1.2))
    y = np.arange(len(ratios))
    ax.barh(y, np.log10(ratios), color=["tab:green" if x < 1 else "tab:red" for x in ratios])
    ax.set_yticks(y, [r.name for r in result.tasks], fontsize=7)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("log10(final loss / best tuned baseline's)")
    ax.set_title(f"{result.optimizer}: the suite")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _writable_place(path: Path, flag: str) -> None:
    """Refuses `path` when it is inside the shipped optimizers (`checkpoints/`) or no folder above
    it can be written into."""
    from ..runs._shipped import is_shipped, shipped_dir

    if is_shipped(path):
        raise ValueError(f"{flag} {path} is inside the shipped optimizers' folder {shipped_dir('checkpoints')}: a suite run "
                         "does not write there; choose another path (default runs/suite/OPT).")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {above} is not a folder this process can write into.")


def check_out(out: str | Path) -> Path:
    """`out` if a run's folder can be written there: a folder or nothing yet (not a file or a
    device), writable, and not inside a shipped optimizer's folder; else a one-line error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a folder (a run writes suite.json, suite.md and figures/ into one).")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is a folder this process cannot write into.")
    _writable_place(out, "--out")
    return out


def check_report(report: str | Path) -> Path:
    """`report` if a section can be written into it: a regular text file or nothing yet, in a
    writable folder (its lock file goes beside it), not inside a shipped optimizer's folder;
    else a one-line error."""
    report = Path(report)
    if report.exists() and not report.is_file():
        raise ValueError(f"--report {report} is not a regular file (a report is a markdown file, e.g. experiments/SUITE.md).")
    if report.is_file() and not os.access(report, os.R_OK | os.W_OK):
        raise ValueError(f"--report {report} cannot be read and written by this process.")
    _writable_place(report, "--report")
    return report


def write(result: SuiteResult, out: str | Path, *, figures: bool = True) -> Path:
    """Writes `out/suite.json`, `out/suite.md` and the figures (`out/figures/`) (`out` checked by
    `check_out`)."""
    out = check_out(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(result.to_dict(), indent=1, default=float) + "\n")
    (out / "suite.md").write_text(markdown(result) + "\n")
    if figures:
        for r in result.tasks:
            task_figure(out / "figures" / f"{r.name}.png", r, result.optimizer)
        summary_figure(out / "figures" / "summary.png", result)
        if result.summary.get("profiles", {}).get("optimizers"):
            profile_figure(out / "figures" / "profiles.png", result.summary["profiles"], f"{result.optimizer}: performance profiles")
    return out


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


HEADER = """# The suite: every shipped optimizer on problems it never saw

Written by `make suite OPT=... ARGS="--report experiments/SUITE.md"` (`python -m l2lgd suite OPT --report
experiments/SUITE.md`, `--tasks validation` for the validation split), one section per optimizer
and split (a quick or partial run goes into a section of its own, marked partial, and into no row
of the summary); the held-out families were never used to meta-train, select, tune or design any
optimizer here. Rows marked "heldout (the first 12)" were measured before the held-out split
gained its three large families (and before the rivals' and profiles' columns). Figures of a run are in its `--out` folder
(default `runs/suite/OPT/`). Ratios are of mean final training loss; below 1, the optimizer is
lower.

<!-- suite_summary:start -->
<!-- suite_summary:end -->
"""


SUMMARY_COLUMNS = (
    "| optimizer | split | tasks | median ratio to best tuned | geo-mean ratio | below best | below tuned Adam | "
    "beats tuned Adam (separated CIs) | below suite-wide Adam | below each rival (worst) | IQM ratio to tuned Adam "
    "[95%] | profile score (tuned Adam's) | median speed-up over Adam | non-finite runs |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def whole_split(result: SuiteResult) -> str | None:
    """The split whose tasks a run covered exactly ("heldout", "validation", "train"), "all",
    or None."""
    names = sorted(t.name for t in result.tasks)
    return next((whole for whole in (*SPLITS, "all") if names == sorted(t.name for t in select(whole))), None)


def split_of(result: SuiteResult) -> str:
    """The split a run covered ("heldout", "validation", "train"), "all", or "mixed"."""
    whole = whole_split(result)
    if whole is not None:
        return whole
    splits = {t.split for t in result.tasks}
    return splits.pop() if len(splits) == 1 else "mixed"


def _tested(result: SuiteResult) -> dict:
    """The profile figures of the optimizer under test (its label among the contenders)."""
    found = result.summary.get("profiles", {}).get("optimizers", {})
    for label in (result.optimizer, f"{result.optimizer} (tested)"):
        if label in found:
            return found[label]
    return {}


def summary_row(result: SuiteResult) -> str:
    """One line of the summary table: where `result`'s optimizer stands over its tasks."""
    s = result.summary
    below = s["fraction_with_lower_mean"]
    rivals = s.get("rivals", {})
    worst = min(rivals.items(), key=lambda kv: kv[1]["fraction_below"]) if rivals else None
    worst_cell = f"{worst[1]['fraction_below']:.0%} ({worst[0]})" if worst else "—"
    mine, adam = _tested(result), s.get("profiles", {}).get("optimizers", {}).get("tuned adam", {})
    iqm = mine.get("iqm_ratio_to_adam")
    iqm_cell = f"{_fmt(iqm['value'])} [{_fmt(iqm['low'])}, {_fmt(iqm['high'])}]" if iqm else "—"
    score_cell = f"{mine['score']:.2f} ({adam['score']:.2f})" if mine and adam else "—"
    return (f"| `{result.optimizer}` | {split_of(result)} | {s['tasks']} | {_fmt(s['median_ratio_to_best'])} | "
            f"{_fmt(s['geomean_ratio_to_best'])} | {below['best']:.0%} | {below['adam']:.0%} | "
            f"{s['fraction_beating_with_separated_ci']['adam']:.0%} | {s['fraction_below_suite_adam']:.0%} | {worst_cell} | "
            f"{iqm_cell} | {score_cell} | {_fmt(s['median_speedup_over_adam'])} | {s['nonfinite_runs']} |")


# A summary row written before the splits and the rivals' columns: its run covered the 12
# held-out families of then.
OLD_ROW_CELLS = 10
OLD_SPLIT = "heldout (the first 12)"


def _upgraded(line: str) -> str:
    """A summary row in today's columns: one of the format before splits gets its split (the 12
    held-out families of then) and '—' in the columns it did not have."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != OLD_ROW_CELLS:
        return line
    cells = [cells[0], OLD_SPLIT, *cells[1:8], "—", "—", "—", *cells[8:]]
    return "| " + " | ".join(cells) + " |"


def _replace_block(text: str, start: str, end: str, block: str) -> str:
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    whole = f"{start}\n{block}\n{end}"
    return pattern.sub(lambda _: whole, text) if pattern.search(text) else text.rstrip() + "\n\n" + whole + "\n"


def write_section(report: str | Path, result: SuiteResult) -> Path:
    """Puts `result`'s table into `report` as the section of its optimizer (replacing an older one;
    sections are kept in the order they were first written; a run of a split other than `heldout`
    has a section of its own, `NAME.SPLIT`) and its row into the report's summary table
    (`<!-- suite_summary:start -->`; a row per optimizer and split, replacing one of the format
    before splits). A partial run (`partial_run`: quick, some tasks, other
    settings or baselines) never replaces a full one: it goes into the optimizer's own partial
    section (`<!-- suite:NAME.partial:start -->`), marked so, and adds no row to the summary. A full
    run's profile figure goes to `figures/suite/NAME.png` beside the report, linked from its
    section. Safe for concurrent writers."""
    report = check_report(report)
    split = split_of(result)
    name = _slug(result.optimizer) + ("" if split == "heldout" else f".{split}")
    partial = partial_run(result)
    with _locked(report):
        text = report.read_text() if report.is_file() else HEADER
        if partial:
            section = markdown(result, title=f"### `{result.optimizer}` (partial run)")
            text = _replace_block(text, f"<!-- suite:{name}.partial:start -->", f"<!-- suite:{name}.partial:end -->", section)
            report.write_text(text)
            return report
        summary = re.search(r"<!-- suite_summary:start -->\n(.*?)\n<!-- suite_summary:end -->", text, re.S)
        rows = [line for line in (summary.group(1).splitlines() if summary else []) if line.startswith("| `")]
        mine = f"| `{result.optimizer}` | {split} |"
        rows = [_upgraded(line) for line in rows if not line.startswith(mine)] + [summary_row(result)]
        text = _replace_block(text, "<!-- suite_summary:start -->", "<!-- suite_summary:end -->",
                              SUMMARY_COLUMNS + "\n" + "\n".join(rows))
        section = markdown(result)
        profiles = result.summary.get("profiles", {})
        if profiles.get("optimizers"):  # the profile figure beside the report, linked from the section
            figure = report.parent / "figures" / "suite" / f"{name}.png"
            figure.parent.mkdir(parents=True, exist_ok=True)
            profile_figure(figure, profiles, f"{result.optimizer} ({split}): performance profiles")
            section += f"\n\n![{result.optimizer}: performance profiles on the {split} split](figures/suite/{name}.png)"
        text = _replace_block(text, f"<!-- suite:{name}:start -->", f"<!-- suite:{name}:end -->", section)
        report.write_text(text)
    return report


def load(path: str | Path) -> SuiteResult:
    """The `SuiteResult` a run wrote (`out/suite.json`, or its folder)."""
    path = Path(path)
    path = path / "suite.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
        data["tasks"] = [TaskResult(**t) for t in data["tasks"]]
        return SuiteResult(**data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as e:
        raise ValueError(f"{path} is not a suite result ({e.__class__.__name__}: {e}).") from None
