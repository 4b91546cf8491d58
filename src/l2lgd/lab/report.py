"""`make reproduce`: every reference experiment from scratch, several seeds, evaluated, drawn, reported."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._config import Config
from .._errors import Stopped
from ..runs._driver import config_changes, config_of_family, run_config, scored_on
from ..runs._loading import load_learned_optimizer
from ..runs._record import load_record
from ..runs._selection import export_best_of
from .compare import evaluate_run, evaluate_tx, format_table
from .._evaluate import TEST_SEED, task_keys, run_optimizer
from ..runs._experiments import load_experiment
from ..tasks._mixture import FamilyMixture
from .figures import convergence, draw_run_figures
from ..optimizers._optax_face import as_optax
from ..runs._ship import ship as ship_run
from .paper import write_section

REFERENCE_EXPERIMENTS = ("sum", "end", "end_log", "log15_end", "log15_end_log", "log30")
# What `make reproduce` runs: the reference's six, and `floor`, beyond the reference.
DEFAULT_EXPERIMENTS = (*REFERENCE_EXPERIMENTS, "floor")
# The reference's closing comparison (`draw_convergence('RMS', 'RNN_simple_end_log_res', ...)`).
COMPARISON = ("end_log", "log15_end_log", "log30")


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def training_seconds(run_dir: Path, wall: float) -> str:
    """The training seconds of a run over every resume, as a table cell: its last snapshot's
    record of them, else `wall` (the run's time in this command; NaN for a resumed run, whose
    wall is only its resume's: "?")."""
    from ..runs._snapshots import RunCheckpoints

    checkpoints = RunCheckpoints(run_dir)
    try:
        last = checkpoints.latest_step()
        seconds = checkpoints.metrics(last).get("train_seconds", math.nan) if last is not None else math.nan
    finally:
        checkpoints.close()
    seconds = seconds if math.isfinite(seconds) else wall
    return f"{seconds:.0f}" if math.isfinite(seconds) else "?"


def train_all(jobs: list[tuple], workers: int | None = None, *, fresh: bool = True, cores: list[int] | None = None) -> dict[Path, float]:
    """Runs `python -m l2lgd train EXP --seed S --out OUT [extra...]` for every job
    `(exp, seed, out, *extra)`, `workers` at a time (default: one per core), each pinned to its
    own core (`cores`, default 0 ... workers - 1). Returns each run's wall time."""
    pending, running, walls = list(jobs), {}, {}
    free_cores = list(cores) if cores else list(range(workers or _workers()))
    received: list[int] = []

    def forward(signum, frame):  # stop the children too (each stops at its chunk's end), start no more
        received.append(signum)
        for proc in running:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _run_jobs(pending, running, walls, free_cores, received, fresh)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Stopped(received[0], f"stopped by signal {received[0]}: every training process was told to stop "
                                   "(each at the end of its chunk); rerun the command without --fresh (`ablate`: with --resume) "
                                   "to resume them.")
    return walls


def _check_variants_resumable(config: Config, runs: list[tuple[Path, dict[str, Any]]], validation_tasks: int) -> None:
    """`ablate --resume`: a one-line error naming every variant folder that holds a run of another
    config (e.g. the experiment's config changed since) or snapshots scored on another number of
    validation tasks than the experiment's `validation_tasks`, before any training starts."""
    stale = []
    for run_dir, changes in runs:
        if not (run_dir / "config.json").is_file():
            continue  # nothing there yet: that variant starts afresh
        details = [config_changes(run_config(run_dir), config.replace(**changes))]
        if (scored := scored_on(run_dir)) not in (None, validation_tasks):
            details.append(f"validation_tasks: {scored} -> {validation_tasks}")
        if any(details):
            stale.append(f"{run_dir} ({', '.join(filter(None, details))})")
    if stale:
        raise ValueError(f"--resume: {len(stale)} variant folder(s) hold runs of another config: {'; '.join(stale)}. "
                         "Move them away, or run without --resume to train every variant afresh.")


def _run_jobs(pending, running, walls, free_cores, received, fresh) -> None:
    while pending or running:
        if received:
            pending.clear()
        while pending and free_cores:
            exp, seed, out, *extra = pending.pop(0)
            core = free_cores.pop(0)
            cmd = [sys.executable, "-m", "l2lgd", "train", exp, "--seed", str(seed), "--out", str(out),
                   "--core", str(core), "--no-progress", *(["--fresh"] if fresh else []), *extra]
            print(f"[l2lgd] training {exp} seed {seed} {' '.join(extra)} on core {core}", flush=True)
            running[subprocess.Popen(cmd)] = (out, core, time.perf_counter())
        time.sleep(0.2)
        for proc in [p for p in running if p.poll() is not None]:
            out, core, start = running.pop(proc)
            if proc.returncode and not received:
                for other in running:
                    other.terminate()
                raise RuntimeError(f"training into {out} failed (exit {proc.returncode})")
            walls[Path(out)] = time.perf_counter() - start
            free_cores.append(core)


def _test_mean(run_dir: Path, num_tasks: int) -> float:
    opt, config, _ = load_learned_optimizer(run_dir)
    return evaluate_tx(as_optax(opt), config, task_keys(TEST_SEED, num_tasks))["final"]["mean"]


def reproduce(
    root: str | Path = "runs",
    *,
    seeds: int = 3,
    experiments: tuple[str, ...] = DEFAULT_EXPERIMENTS,
    ship: bool = False,
    num_tasks: int = 10_000,
    report: str | Path = "experiments/REPORT.md",
) -> Path:
    """Trains, evaluates and reports every experiment; returns the report's path.

    The report's figures go to `figures/` beside it; its hand-written and `make paper` sections
    (`<!-- NAME:start -->` ... `<!-- NAME:end -->`) are kept; the rows go to
    `<root>/reproduce.json`."""
    start = time.perf_counter()
    root, report = Path(root), Path(report)
    figures = report.parent / "figures"
    declared = {name: load_experiment(name) for name in experiments}
    walls = train_all([(name, s, root / name / f"seed{s}") for name in experiments for s in range(seeds)])

    rows, tables, comparison = [], [], {}
    for name in experiments:
        runs = [root / name / f"seed{s}" for s in range(seeds)]
        row, result = _evaluate_experiment(name, declared[name], runs, root / name, num_tasks, figures / name)
        rows.append({**row, "wall": [walls[r] for r in runs]})
        tables.append((name, row["best_seed"], format_table(result), result))
        if ship:
            print(ship_run(runs[0], name), flush=True)
        if name in COMPARISON:
            comparison[name] = load_record(runs[0])

    rms = next(v for k, v in tables[0][3]["optimizers"].items() if k.startswith("reference rmsprop"))["final"]["mean"]
    convergence(figures / "comparison.png", comparison, {"reference RMSProp": rms},
                title="Final loss during meta-training (seed 0 of each experiment)")
    text = _markdown(rows, tables, seeds, num_tasks, time.perf_counter() - start) + "\n"
    old = report.read_text() if report.exists() else ""
    from .paper import kept_sections

    for section in kept_sections(old):  # keep the sections that `make paper` wrote
        text += "\n" + section + "\n"
    report.write_text(text)
    (root / "reproduce.json").write_text(json.dumps(rows, indent=1) + "\n")
    return report


def _evaluate_experiment(name, experiment, runs, out, num_tasks, figures) -> tuple[dict[str, Any], dict[str, Any]]:
    """One experiment's report row (its seeds' training and test figures) and the evaluation of
    the best seed's optimizer, exported to `out` and drawn into `figures`."""
    records = [load_record(r) for r in runs]
    window = experiment.rolling_window
    best = export_best_of(runs, out)
    result = evaluate_run(best, num_tasks=num_tasks, progress=False)
    draw_run_figures(best, figures)
    finals = {k: v["final"]["mean"] for k, v in result["optimizers"].items()}
    row = {
        "name": name, "reference_figure": experiment.reference_figure, "window": window,
        "rolling": [float(r[-window:].mean()) for r in records], "tests": [_test_mean(r, num_tasks) for r in runs],
        "meta_steps": experiment.config.meta_steps, "best_seed": best.name,
        "learned": next(v for k, v in finals.items() if k.startswith("learned")),
        "best_baseline": min(((k, v) for k, v in finals.items() if not k.startswith("learned")), key=lambda kv: kv[1]),
    }
    return row, result


def _markdown(rows, tables, seeds, num_tasks, total) -> str:
    out = [
        "# Reproduction report",
        "",
        "Generated by `make reproduce` (`python -m l2lgd reproduce`): every experiment of the reference",
        f"notebook trained from scratch with seeds 0..{seeds - 1}, evaluated on {num_tasks:,} held-out",
        f"test tasks. Total wall time: {total / 60:.1f} min on this machine.",
        "",
        "![comparison](figures/comparison.png)",
        "",
        "## Reference vs. measured",
        "",
        "Training figure: the rolling mean of log10 f(x_T-1) (the final loss; f(x_19) for 20 steps)",
        "over the last meta-steps of training (the reference's `average_log_result`; each",
        "experiment's `rolling_window`: " + ", ".join(f"{r['window']:,} for `{r['name']}`" for r in rows) + "),",
        "mean and standard deviation over seeds. Test figure: mean log10(f(x_T-1)+1e-38) of each",
        "seed's exported optimizer (the best validation snapshot) on the test tasks.",
        "",
        "| experiment | meta-steps | reference | ours (training) | per seed | ours (test) | per seed | wall s per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reference = "—" if r["reference_figure"] is None else f"{r['reference_figure']:.2f}"
        out.append(
            f"| `{r['name']}` | {r['meta_steps']:,} | {reference} | {np.mean(r['rolling']):.2f} ± {np.std(r['rolling']):.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['rolling'])} | {np.mean(r['tests']):.2f} ± {np.std(r['tests']):.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['tests'])} | {', '.join(f'{x:.0f}' for x in r['wall'])} |"
        )
    out += ["", "## Learned optimizer vs. baselines", "",
            "Where the best learned optimizer (best validation score over seeds) stands against the",
            "best baseline, reference-exact or tuned (mean log10 final loss, lower is better):", ""]
    for r in rows:
        name, value = r["best_baseline"]
        verdict = "beats" if r["learned"] < value else "loses to"
        out.append(f"- `{r['name']}`: learned {r['learned']:.2f} {verdict} the best baseline, {name} ({value:.2f}).")
    for name, best, table, _ in tables:
        out += ["", f"### `{name}` (exported optimizer of {best})", "", table, "",
                f"![{name} samples](figures/{name}/sample_tasks.png)",
                f"![{name} convergence](figures/{name}/convergence.png)",
                f"![{name} per step](figures/{name}/per_step.png)"]
    return "\n".join(out)


def ablate(
    experiment: str,
    *,
    root: str | Path = "runs/ablations",
    num_tasks: int | None = None,
    report: str | Path = "experiments/ABLATIONS.md",
    cores: list[int] | None = None,
    fresh: bool = True,
) -> Path:
    """Trains the experiment and each variant in its `Experiment.ablations` (name -> Config
    changes, each applied after `Experiment.ablation_base`), evaluates each exported optimizer on
    the test tasks, writes a table. `fresh=False` resumes each variant's run where it stopped (a
    finished one is only evaluated; the table gives each run's training seconds as its snapshots record them). An experiment on a `FamilyMixture` is scored on test tasks of
    its validation families (`Experiment.validation_family`, e.g. the suite's `validation` split;
    else its own members), never on held-out ones: the ablation informs the design. `num_tasks`
    (default) is 10,000 test tasks, and the experiment's `eval_tasks` per family for a mixture
    (its large members' unrolls of 10,000 tasks at once do not fit in memory)."""
    from .._evaluate import summarize

    declared = load_experiment(experiment)
    base = declared.ablation_base  # changes applied to every variant (e.g. fewer meta-steps)
    shipped = "as shipped" + (f" ({', '.join(f'{k}={v!r}' for k, v in base.items())})" if base else "")
    variants = {shipped: {}, **declared.ablations}
    root = Path(root) / declared.config.name  # an experiment file's path names no folder
    runs = [(root / f"variant{i}", {**base, **changes}) for i, changes in enumerate(variants.values())]
    jobs = [(experiment, declared.config.seed, out, *[f"--set={k}={v!r}" for k, v in overrides.items()])
            for out, overrides in runs]
    if not fresh:  # every folder checked before any variant trains, not one at a time hours in
        trained = declared.config if declared.family is None else config_of_family(declared.config, declared.family)
        _check_variants_resumable(trained, runs, declared.validation_tasks)
    walls = train_all(jobs, cores=cores, fresh=fresh)
    if not fresh:  # a resumed run's wall is its resume's: the table takes its snapshots' record
        walls = dict.fromkeys(walls, math.nan)
    if isinstance(declared.family, FamilyMixture):
        num_tasks = num_tasks or declared.eval_tasks
        return _mixture_ablation(experiment, declared, variants, root, walls, base, num_tasks, Path(report))
    num_tasks = num_tasks or 10_000
    lines = [
        f"## Ablations of `{experiment}`",
        "",
        f"Generated by `python -m l2lgd ablate {experiment}`: each variant trained from scratch with the",
        f"experiment's seed and meta-steps{' with ' + ', '.join(f'{k}={v!r}' for k, v in base.items()) if base else ''}, its exported optimizer evaluated on {num_tasks:,} test",
        "tasks: mean log10(final loss + 1e-38), lower is better; -38 means the loss underflowed to exactly 0.",
        "'first step at 0': the mean over tasks of the first step t with f(x_t) = 0 (the horizon if never).",
        "",
        "| variant | changes | mean | 95% CI | p95 | exactly 0 | first step at 0 | mean final loss ± 95% CI | validation | training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (name, changes) in enumerate(variants.items()):
        run = root / f"variant{i}"
        opt, config, metrics = load_learned_optimizer(run)
        losses = run_optimizer(as_optax(opt), config, task_keys(TEST_SEED, num_tasks))
        s = summarize(losses[:, -1])
        zero = losses == 0
        first_zero = np.where(zero.any(axis=1), zero.argmax(axis=1), losses.shape[1]).mean()
        change = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "-"
        lines.append(
            f"| {name} | {change} | {s['mean']:.2f} | [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] | {s['p95']:.2f} | "
            f"{100 * s['frac_zero']:.1f}% | {first_zero:.1f} | {s['loss_mean']:.3g} ± {s['loss_ci95']:.2g} | "
            f"{metrics['validation_log10_final']:.2f} | {training_seconds(run, walls[run])} |"
        )
    report = Path(report)
    write_section(report, experiment, "\n".join([f"<!-- {experiment}:start -->", *lines, f"<!-- {experiment}:end -->"]))
    return report


def _mixture_ablation(experiment, declared, variants, root, walls, base, num_tasks, report) -> Path:
    """The ablation table of a mixture experiment: each variant's mean log10 final loss on
    `num_tasks` test tasks of every validation member (`Experiment.validation_family`, else the
    training members) at its own horizon (floored at log10 SOLVED, as model selection scores
    them), and per member."""
    from .._evaluate import NON_FINITE_LOG10, scored_log10, unroll_losses
    from .._objectives import SOLVED

    family = declared.validation_family if declared.validation_family is not None else declared.family
    where = ("family of the validation split (never trained on)" if declared.validation_family is not None
             else "training family")
    if not isinstance(family, FamilyMixture):
        family = FamilyMixture((family,), (type(family).__name__,))
    floor = float(np.log10(SOLVED))
    keys = task_keys(TEST_SEED, num_tasks)
    lines = [
        f"## Ablations of `{experiment}`",
        "",
        f"Generated by `python -m l2lgd ablate {experiment}`: each variant trained from scratch with the",
        f"experiment's seed{' and ' + ', '.join(f'{k}={v!r}' for k, v in base.items()) if base else ''}, its exported optimizer run on {num_tasks} test",
        f"tasks of each {where} at the family's horizon (test seeds; no held-out family is used):",
        f"mean over families of the mean log10 final loss, each floored at {floor:.0f}, a task whose final loss is not",
        f"finite counting as {NON_FINITE_LOG10:.1f} (float32's largest loss; as model selection scores it, their count in",
        "brackets); lower is better.",
        "",
        "| variant | changes | mean | " + " | ".join(family.names) + " | validation | training s |",
        "|---|---|---|" + "---|" * len(family.names) + "---|---|",
    ]
    for i, (name, changes) in enumerate(variants.items()):
        run = root / f"variant{i}"
        opt, config, metrics = load_learned_optimizer(run)
        tx = as_optax(opt)
        scores, cells = [], []
        for member in family.members:
            losses = jax.jit(lambda k, m=member: unroll_losses(tx, config, k, num_steps=m.horizon, family=m))(keys)
            score, non_finite = scored_log10(np.asarray(losses)[:, -1])
            scores.append(max(score, floor))
            cells.append(f"{scores[-1]:.2f}" + (f" ({non_finite})" if non_finite else ""))
        change = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "-"
        lines.append(f"| {name} | {change} | {np.mean(scores):.2f} | " + " | ".join(cells)
                     + f" | {metrics['validation_log10_final']:.2f} | {training_seconds(run, walls[run])} |")
    write_section(report, experiment, "\n".join([f"<!-- {experiment}:start -->", *lines, f"<!-- {experiment}:end -->"]))
    return report
