"""Several optimizers on the same tasks, in one table and one performance-profile figure
(`python -m l2lgd suite compare A B ...`, `l2lgd.suite.compare`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..optimizers._baselines import TUNING_FREE
from . import _baselines as baselines
from . import _report, _run, _tasks
from ._tasks import select


@dataclasses.dataclass
class Comparison:
    """What `compare` returns: the optimizers' labels, the suite settings and tasks they share,
    per task each one's mean final training loss and non-finite runs (and tuned Adam's and the
    target), where each result came from, and the comparison's `profiles` (`_run.profiles`)."""

    optimizers: list[str]
    settings: dict[str, Any]
    tasks: list[str]
    losses: dict[str, list[float]]
    nonfinite_runs: dict[str, list[int]]
    sources: dict[str, str]
    profiles: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _settings(result: _run.SuiteResult) -> dict[str, Any]:
    return {**dataclasses.asdict(_run.Settings()), **result.settings}


def differences(a: _run.SuiteResult, b: _run.SuiteResult) -> list[str]:
    """What makes two suite results incomparable, in words: their settings, tasks or baselines."""
    why = []
    sa, sb = _settings(a), _settings(b)
    why += [f"{k} {sa.get(k)!r} vs {sb.get(k)!r}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    ta, tb = [t.name for t in a.tasks], [t.name for t in b.tasks]
    if ta != tb:
        why.append(f"tasks {', '.join(ta) or 'none'} vs {', '.join(tb) or 'none'}")
    ba = sorted(a.tasks[0].baselines) if a.tasks else []
    bb = sorted(b.tasks[0].baselines) if b.tasks else []
    if ba != bb:
        why.append(f"baselines {', '.join(ba)} vs {', '.join(bb)}")
    return why


def _given(spec) -> _run.SuiteResult | None:
    """A suite result `spec` names (a `SuiteResult`, a suite.json or a folder holding one), else None."""
    if isinstance(spec, _run.SuiteResult):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_file() and path.suffix == ".json" or (path / "suite.json").is_file():
            return _report.load(path)
    return None


def compare(
    optimizers,
    tasks: str | list[str] | None = "heldout",
    *,
    settings: _run.Settings | None = None,
    quick: bool = False,
    cache: str | Path | None = "default",
    progress: bool = True,
    baselines_to_tune: tuple[str, ...] | None = None,
    runs_root: str | Path | None = Path("runs") / "suite",
) -> Comparison:
    """Several optimizers on the same tasks: each of `optimizers` is a suite result (a
    `SuiteResult`, a suite.json or its folder), a tuning-free rival's name (`TUNING_FREE`), or
    anything `suite.run` takes (a shipped name, a run folder, NAME:LR), run through the suite
    unless `runs_root/NAME/suite.json` (or its --quick, --instances or --horizon-scale folder)
    holds a run at the same settings, tasks and baselines. Suite results given must agree with
    each other (else a one-line error naming the difference); when any is given, its settings and
    tasks are the comparison's (`tasks`, `settings`, `quick` then ignored)."""
    specs = list(optimizers)
    if len(specs) < 1:
        raise ValueError("compare needs at least one optimizer.")
    given = {i: g for i, spec in enumerate(specs) if (g := _given(spec)) is not None}
    rivals = {i: str(s) for i, s in enumerate(specs) if i not in given and isinstance(s, str) and s in TUNING_FREE}
    for i, spec in enumerate(specs):  # every spec checked before any work
        if i not in given and i not in rivals:
            _run.resolve_optimizer(spec)
    results: dict[int, _run.SuiteResult] = dict(given)
    reference = results[min(given)] if given else None
    for i, g in given.items():
        why = differences(reference, g)
        if why:
            raise ValueError(f"{g.optimizer!r} and {reference.optimizer!r} were run at other suite settings "
                             f"({'; '.join(why)}): compare results of one setting (rerun one of them).")
    if reference is not None:
        settings = _run.Settings(**_settings(reference))
        names = [t.name for t in reference.tasks]
        chosen = tuple(reference.tasks[0].baselines) if reference.tasks else None
    else:
        selected = select(tasks)
        if quick:
            settings = settings or _run.QUICK
            selected = ([t for t in selected if t.name in _run.QUICK_TASKS] or selected)[:3]
        settings = settings or _run.Settings()
        names = [t.name for t in selected]
        chosen = baselines_to_tune
    sources = {}
    for i, spec in enumerate(specs):
        if i in results or i in rivals:
            if i in results:
                sources[i] = f"given ({spec})" if isinstance(spec, (str, Path)) else "given"
            continue
        label = _run.resolve_optimizer(spec)[0]
        cached = _cached_run(runs_root, label, settings, names, chosen)
        if cached is not None:
            results[i], sources[i] = _report.load(cached), f"cached {cached}"
            continue
        results[i] = _run.run(spec, names, settings=settings, cache=cache, progress=progress, baselines_to_tune=chosen,
                              rivals=())
        sources[i] = "run"
        if runs_root is not None:  # kept, so that the next comparison at these settings reuses it
            sources[i] = f"run, kept in {_keep(results[i], Path(runs_root), label)}"
        if reference is None:
            reference = results[i]
    if reference is None:  # rivals only: the tuned baselines still set the target and tuned Adam
        reference = _run.run("adam:1e-3", names, settings=settings, cache=cache, progress=progress,
                             baselines_to_tune=chosen, rivals=())
    for i, r in results.items():
        why = differences(reference, r)
        if why:
            raise ValueError(f"{r.optimizer!r} and {reference.optimizer!r} differ ({'; '.join(why)}).")
    cache_path = baselines.cache_dir() if cache == "default" else (None if cache is None else Path(cache))
    rival_figures = {i: [_rival(reference, _tasks.SUITE[n], j, k, settings, cache_path) for j, n in enumerate(names)]
                     for i, k in rivals.items()}
    for i, k in rivals.items():
        sources[i] = "tuning-free rival (cached as the baselines are)"
    labels: dict[int, str] = {}
    for i, spec in enumerate(specs):
        label = results[i].optimizer if i in results else rivals[i]
        while label in labels.values() or label == "tuned adam":
            label += "'"
        labels[i] = label
    entries = []
    for j in range(len(names)):
        e = {labels[i]: (results[i].tasks[j].optimizer if i in results else rival_figures[i][j]) for i in range(len(specs))}
        e["tuned adam"] = reference.tasks[j].baselines["adam"]["test"]
        entries.append(e)
    order = [labels[i] for i in range(len(specs))] + ["tuned adam"]
    return Comparison(
        optimizers=order, settings=dataclasses.asdict(settings), tasks=names,
        losses={k: [e[k]["train_loss"]["mean"] for e in entries] for k in order},
        nonfinite_runs={k: [e[k]["nonfinite_runs"] for e in entries] for k in order},
        sources={labels[i]: sources[i] for i in range(len(specs))},
        profiles=_run.profiles(reference.tasks, entries),
    )


def _rival(reference: _run.SuiteResult, task, j: int, name: str, settings, cache) -> dict[str, Any]:
    have = reference.tasks[j].rivals.get(name)
    return have["test"] if have else _run.run_rival(task, name, settings.for_task(task), cache=cache)["test"]


def _keep(result: _run.SuiteResult, root: Path, label: str) -> Path:
    """`result` written to a new folder `root/NAME` (or `NAME-2`, ...), where `_cached_run` finds it."""
    slug, n = _report._slug(label), 1
    while (folder := root / (slug if n == 1 else f"{slug}-{n}")).exists():
        n += 1
    return _report.write(result, folder, figures=False)


def _cached_run(root, label: str, settings: _run.Settings, names: list[str], chosen) -> Path | None:
    """A suite run of `label` under `root` at these settings, tasks and baselines, if one is there."""
    if root is None:
        return None
    slug = _report._slug(label)
    for folder in sorted(Path(root).glob(f"{slug}*")):
        rest = folder.name[len(slug):]
        if (rest and not rest.startswith("-")) or not (folder / "suite.json").is_file():
            continue
        try:
            result = _report.load(folder)
        except ValueError:
            continue
        if result.optimizer != label or _settings(result) != {**dataclasses.asdict(_run.Settings()), **dataclasses.asdict(settings)}:
            continue
        if result.optimizer_id and result.optimizer_id != _run.optimizer_identity(label):
            continue  # another optimizer under the same name (e.g. a `general` shipped since)
        if [t.name for t in result.tasks] != names or not result.tasks:
            continue
        if sorted(result.tasks[0].baselines) != sorted(chosen or baselines.BASELINES):
            continue
        return folder
    return None


def markdown(c: Comparison) -> str:
    """The comparison's one table: per task each optimizer's mean final training loss (and the
    target), then each one's profile score, IQM of the ratio to tuned Adam and median speed-up."""
    s = c.settings
    opt = c.profiles.get("optimizers", {})
    lines = [f"### Compared: {', '.join(f'`{k}`' for k in c.optimizers)}", "",
             f"{len(c.tasks)} tasks, {s['test_instances']} test instances each (baselines tuned on {s['validation_instances']}"
             f"{'; horizons capped at ' + str(s['horizon_cap']) if s.get('horizon_cap') else ''}"
             f"{'; ' + str(s['horizon_scale']) + 'x the horizons' if s.get('horizon_scale', 1) != 1 else ''}). Mean final "
             f"training loss per task; target: {c.profiles['target']}. Profiles among these optimizers and tuned Adam; "
             "profile score: the area under rho(tau) for tau in [1, 4], over 3.", "",
             "| task | target | " + " | ".join(f"`{k}`" for k in c.optimizers) + " |",
             "|---|---|" + "---|" * len(c.optimizers)]
    for j, task in enumerate(c.tasks):
        cells = [_report._fmt(c.losses[k][j]) + (f" ({c.nonfinite_runs[k][j]} non-finite)" if c.nonfinite_runs[k][j] else "")
                 for k in c.optimizers]
        lines.append(f"| `{task}` | {_report._fmt(c.profiles['targets'][j])} | " + " | ".join(cells) + " |")
    lines.append("| **profile score** | | " + " | ".join(f"**{opt[k]['score']:.3f}**" for k in c.optimizers) + " |")
    lines.append("| **IQM ratio to tuned Adam** [95%] | | " + " | ".join(_report._iqm(opt[k]["iqm_ratio_to_adam"]) for k in c.optimizers) + " |")
    lines.append("| **speed-up over tuned Adam** median (quartiles) | | " + " | ".join(
        f"{_report._fmt(opt[k]['speedup_over_adam']['median'])} ({_report._fmt(opt[k]['speedup_over_adam']['q25'])}-"
        f"{_report._fmt(opt[k]['speedup_over_adam']['q75'])})" for k in c.optimizers) + " |")
    lines += ["", "Sources: " + "; ".join(f"`{k}`: {v}" for k, v in c.sources.items()) + "."]
    return "\n".join(lines)


def write(c: Comparison, out: str | Path) -> Path:
    """Writes `out/compare.json`, `out/compare.md` and `out/figures/profiles.png`."""
    out = _report.check_out(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(c.to_dict(), indent=1, default=float) + "\n")
    (out / "compare.md").write_text(markdown(c) + "\n")
    _report.profile_figure(out / "figures" / "profiles.png", c.profiles, "performance profiles: " + ", ".join(c.optimizers[:-1]))
    return out


def default_out(specs, tag: str = "") -> Path:
    """runs/suite/compare-A-B... (each name as a folder name)."""
    return Path("runs") / "suite" / ("compare-" + "-".join(_report._slug(str(s)) for s in specs) + tag)

