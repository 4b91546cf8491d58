"""`make paper`: the paper's tasks at their training horizon and its generalization questions
(arXiv 1606.04474, Figure 5): longer horizons, wider and deeper networks, ReLU.

Each setting runs a trained optimizer (by default the shipped `paper_quadratic` and
`paper_digits` in `checkpoints/`; `checkpoints=` names another folder of runs) and optax's SGD,
momentum, Nesterov, RMSProp and Adam, whose learning rates are tuned on validation tasks *of
that setting*, on held-out test tasks. The section it writes goes into `experiments/REPORT.md`
between markers that `make reproduce` keeps. It holds measurements only: what they mean is
written by hand in the report's own sections (`<!-- paper_notes:start -->`), which both keep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..runs._loading import load_learned_optimizer
from .compare import LEARNING_RATES, TUNED, at_grid_edge, evaluate_tx, tuned_baselines
from .._evaluate import TEST_SEED, VALIDATION_SEED, task_keys
from .figures import _save
from ..optimizers._optax_face import as_optax

START, END = "<!-- paper:start -->", "<!-- paper:end -->"
SECTION = re.compile(r"<!-- (\w+):start -->.*?<!-- \1:end -->", re.S)

# (name, the trained run (a folder of `checkpoints`), changes to the training config)
SETTINGS = (
    ("quadratic, 100 steps (training horizon)", "paper_quadratic", {}),
    ("quadratic, 200 steps", "paper_quadratic", {"horizon": 200}),
    ("digits MLP, 100 steps (training horizon)", "paper_digits", {}),
    ("digits MLP, 200 steps", "paper_digits", {"horizon": 200}),
    ("digits MLP, 40 hidden units", "paper_digits", {"mlp_hidden_units": (40,)}),
    ("digits MLP, 2 hidden layers", "paper_digits", {"mlp_hidden_units": (20, 20)}),
    ("digits MLP, ReLU", "paper_digits", {"mlp_activation": "relu"}),
)

# The `digits` experiment: the same questions, and data sets it never saw.
DIGITS_SETTINGS = (
    ("digits MLP, 100 steps (training horizon)", "digits", {}),
    ("digits MLP, 200 steps", "digits", {"horizon": 200}),
    ("digits MLP, 40 hidden units", "digits", {"mlp_hidden_units": (40,)}),
    ("digits MLP, 2 hidden layers", "digits", {"mlp_hidden_units": (20, 20)}),
    ("digits MLP, ReLU", "digits", {"mlp_activation": "relu"}),
    ("wine data set (never seen), 13-20-3 MLP", "digits", {"dataset": "wine"}),
    ("breast-cancer data set (never seen), 30-20-2 MLP", "digits", {"dataset": "breast_cancer"}),
)


def kept_sections(text: str) -> list[str]:
    """The generated sections (`<!-- NAME:start --> ... <!-- NAME:end -->`) of a report."""
    return [m.group(0) for m in SECTION.finditer(text)]


def write_section(report: Path, name: str, section: str) -> None:
    """Replaces the section `name` of `report` (or appends it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = report.read_text() if report.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    report.write_text(text)


def run_setting(
    run_dir: str, changes: dict[str, Any], test_tasks: int, validation_tasks: int, *, widen: bool = False
) -> dict[str, Any]:
    """The trained optimizer of `run_dir` and the tuned baselines on the setting `changes`
    (`widen`: see `tuned_baselines`)."""
    opt, config, _ = load_learned_optimizer(run_dir)
    config = config.replace(**changes)
    test, val = task_keys(TEST_SEED, test_tasks), task_keys(VALIDATION_SEED, validation_tasks)
    return {"learned": evaluate_tx(as_optax(opt), config, test), **tuned_baselines(config, val, test, progress=False, widen=widen)}


def figure(path: Path, title: str, results: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        t = np.arange(len(r["per_step"]["mean"]))
        (line,) = ax.plot(t, r["per_step"]["mean"], label=name, linewidth=2 if name == "learned" else 1)
        ax.fill_between(t, r["per_step"]["p5"], r["per_step"]["p95"], color=line.get_color(), alpha=0.07, linewidth=0)
    ax.set_xlabel("optimizee step")
    ax.set_ylabel("log10 loss: mean over test tasks, 5-95% band")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def settings_table(settings, tasks_for, figures: Path, *, checkpoints: str | Path = "checkpoints",
                   metric: str | None = None, widen: bool = False):
    """Runs each `(name, run, changes)` setting (held-out tasks, tuned baselines) with the
    optimizer trained in `checkpoints/run`, draws its figure into `figures`, and returns the
    table's rows, one verdict per setting and the results.

    `tasks_for(run) -> (test_tasks, validation_tasks)`; `metric`: a family metric (e.g.
    "test_accuracy") to add, for the learned optimizer and the best baseline, to each verdict."""
    from tqdm.auto import tqdm

    rows, verdicts, everything = [], [], {}
    for name, run, changes in tqdm(settings, desc="settings"):
        test, val = tasks_for(run)
        results = run_setting(str(Path(checkpoints) / run), changes, test, val, widen=widen)
        means = {k: v["final"]["loss_mean"] for k, v in results.items()}
        best = min(means, key=lambda k: means[k] if np.isfinite(means[k]) else np.inf)
        cells = []
        for k, v in results.items():
            f = v["final"]
            text = f"{f['loss_mean']:.3g} ± {f['loss_ci95']:.2g} ({f['mean']:.2f})"
            if "learning_rate" in v:
                text += f", lr {v['learning_rate']:.2g}"
                if at_grid_edge(v):
                    text += " (grid edge)"
            cells.append(f"**{text}**" if k == best else text)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        figure(figures / f"{_slug(name)}.png", name, results)
        learned = results["learned"]["final"]
        others = {k: v["final"] for k, v in results.items() if k != "learned"}
        beaten = [k for k, f in others.items() if learned["loss_mean"] + learned["loss_ci95"] < f["loss_mean"] - f["loss_ci95"]]
        best_other = min(others, key=lambda k: others[k]["loss_mean"] if np.isfinite(others[k]["loss_mean"]) else np.inf)
        ratio = learned["loss_mean"] / others[best_other]["loss_mean"]
        verdict = (
            f"- {name}: the learned optimizer's mean final loss beats {len(beaten)} of {len(others)} tuned baselines "
            "with non-overlapping 95% CIs" + (f" ({', '.join(beaten)})" if beaten else "")
            + f"; it is {ratio:.2f}x the best baseline's ({best_other}, {others[best_other]['loss_mean']:.3g})."
        )
        if metric and "metrics" in results["learned"]:
            ours, theirs = results["learned"]["metrics"][metric], results[best_other]["metrics"][metric]
            verdict += f" {metric}: {ours['mean']:.4f} ± {ours['ci95']:.2g} vs {theirs['mean']:.4f} ± {theirs['ci95']:.2g}."
        verdicts.append(verdict)
        everything[name] = {
            k: {"final": v["final"], "learning_rate": v.get("learning_rate"), **({"metrics": v["metrics"]} if "metrics" in v else {})}
            for k, v in results.items()
        }
    return rows, verdicts, everything


def _header(title: str, command: str) -> list[str]:
    return [
        f"## {title}",
        "",
        f"Generated by {command}. Each row: held-out test tasks; the",
        "baselines' learning rates tuned on validation tasks of the same setting (grid of",
        f"{len(LEARNING_RATES)} rates from 1e-3 to 10). Final loss: mean ± 95% CI over tasks, then the",
        "mean log10. **Bold**: the lowest mean final loss.",
        "",
        "| setting | learned | " + " | ".join(TUNED) + " |",
        "|---|---|" + "---|" * len(TUNED),
    ]


def paper_report(
    report: str | Path = "experiments/REPORT.md",
    *,
    checkpoints: str | Path = "checkpoints",
    quadratic_tasks: tuple[int, int] = (2_000, 256),
    digits_tasks: tuple[int, int] = (200, 32),
    settings=SETTINGS,
) -> Path:
    """Runs every setting on the runs in `checkpoints`, draws one figure each, writes the section
    into `report` (and `paper.json` beside it)."""
    report = Path(report)
    figures = report.parent / "figures" / "paper"
    rows, verdicts, everything = settings_table(
        settings, lambda run: quadratic_tasks if "quadratic" in run else digits_tasks, figures, checkpoints=checkpoints
    )
    lines = [START, *_header("The paper's tasks and generalization", "`make paper` (`python -m l2lgd paper`)"), *rows]
    lines += ["", *verdicts, ""]
    lines += [f"![{name}](figures/paper/{_slug(name)}.png)" for name, _, _ in settings]
    lines.append(END)
    write_section(report, "paper", "\n".join(lines))
    import json

    (report.parent / "paper.json").write_text(json.dumps(everything, indent=1) + "\n")
    return report


def digits_report(
    report: str | Path = "experiments/REPORT.md",
    *,
    checkpoints: str | Path = "checkpoints",
    tasks: tuple[int, int] = (200, 64),
    settings=DIGITS_SETTINGS,
) -> Path:
    """The `digits` experiment's generalization table (`python -m l2lgd paper --section digits`)."""
    report = Path(report)
    figures = report.parent / "figures" / "digits"
    rows, verdicts, everything = settings_table(settings, lambda run: tasks, figures, checkpoints=checkpoints,
                                                metric="test_accuracy", widen=True)
    lines = [
        "<!-- digits:start -->",
        *_header("`digits`: a learned optimizer against tuned baselines, and how it generalizes",
                 "`python -m l2lgd paper --section digits`"),
        *rows,
        "",
        "Baseline grids whose best rate sat at an edge were widened by a decade at a time (up to 1e3).",
        "Ratios are the learned optimizer's mean final (minibatch) training loss over the best tuned",
        "baseline's; test_accuracy: accuracy on the data set's held-out split of the MLP after the",
        "last step (learned vs that baseline). The wine and breast-cancer rows use a data set the",
        "optimizer never saw in meta-training (features standardized).",
        "",
        *verdicts,
        "",
        *[f"![{name}](figures/digits/{_slug(name)}.png)" for name, _, _ in settings],
        "<!-- digits:end -->",
    ]
    write_section(report, "digits", "\n".join(lines))
    import json

    (report.parent / "digits.json").write_text(json.dumps(everything, indent=1) + "\n")
    return report
