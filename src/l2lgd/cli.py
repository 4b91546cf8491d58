"""`python -m l2lgd COMMAND ...`: the command line behind the Makefile's targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._process import configure_cpu, free_core, maybe_initialize_distributed

def parse_overrides(items: list[str]) -> dict:
    """`["batch_size=1", "objective='end_log'"]` -> `{"batch_size": 1, "objective": "end_log"}`."""
    import ast

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare word: a string
    return out


def default_out(name: str, seed: int, default_seed: int) -> Path:
    """Where a run goes by default: `runs/NAME` (`runs/NAME/seedN` for another seed). Shipped
    optimizers in `checkpoints/` are replaced only with `--ship`."""
    return Path("runs") / name if seed == default_seed else Path("runs") / name / f"seed{seed}"


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> None:
    from .runs._experiments import load_experiment
    from .runs._shipped import is_shipped

    experiment = load_experiment(args.experiment)
    config = experiment.config
    if args.seeds is not None:
        if args.devices > 1:
            raise ValueError(f"--seeds {args.seeds} trains one seed a core; --devices {args.devices} splits one run over "
                             "cores: pass one of them.")
        return _train_seeds(args, config)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.steps is not None:
        changes["meta_steps"] = args.steps
    changes.update(parse_overrides(args.set or []))
    config = config.replace(**changes)
    out = Path(args.out) if args.out else default_out(config.name, config.seed, experiment.config.seed)
    if is_shipped(out):
        raise ValueError(
            f"{out} is a shipped optimizer's folder: train into another folder (the default is "
            f"{default_out(config.name, config.seed, experiment.config.seed)}), then pass --ship to replace what is shipped."
        )
    if args.devices > 1:  # one CPU device per core, each a thread of this process
        cores = [args.core + i for i in range(args.devices)] if args.core is not None else [free_core() for _ in range(args.devices)]
        if None in cores:
            raise ValueError(f"--devices {args.devices}: fewer than {args.devices} cores are free of other l2lgd processes.")
        configure_cpu(cores)
    else:
        configure_cpu(args.core if args.core is not None else free_core())
    maybe_initialize_distributed()

    from .runs._driver import RunOptions, train

    options = RunOptions(
        checkpoint_every=args.checkpoint_every or experiment.checkpoint_every,
        validation_tasks=experiment.validation_tasks,
        max_consecutive_skips=args.max_skips,
        fresh=args.fresh,
        progress=not args.no_progress,
        score_start=experiment.score_start,
    )
    result = train(config, out, options, family=experiment.family, validation_family=experiment.validation_family)
    import jax

    if jax.process_index() > 0:  # process 0 writes, scores and reports the run
        print(f"{config.name} seed {config.seed}: process {jax.process_index()} of {jax.process_count()} ran "
              f"{int(result.state.step)} meta-steps in {result.wall_time:.1f} s; process 0 wrote {out}")
        return
    print(
        f"{config.name} seed {config.seed}: {int(result.state.step)} meta-steps in {result.wall_time:.1f} s "
        f"(training {result.train_time:.1f} s, incl. compilation); skipped {int(result.state.skipped)}; "
        f"exported step {result.best_step} (validation mean log10 f(x_T-1) {result.best_validation:.2f}) "
        f"to {out / 'optimizer'}"
    )
    _compare_with_shipped(out, config.name, ship=args.ship)


def _compare_with_shipped(run_dir: Path, name: str, *, ship: bool) -> None:
    """Says whether the run reproduced the shipped optimizer of the same name; ships it if asked."""
    from .runs._ship import compare_exports, ship as ship_run
    from .runs._shipped import shipped_folder

    target = shipped_folder(name)
    if ship:
        print(ship_run(run_dir, name))
    elif target is not None and (target / "optimizer").is_dir():
        difference = compare_exports(run_dir, target)
        if difference is None:
            print(f"reproduced the shipped optimizer {target} bit for bit (left untouched).")
        else:
            print(f"differs from the shipped optimizer {target}: {difference}. It stays as shipped; "
                  "pass --ship to replace it.")


def _train_seeds(args: argparse.Namespace, config) -> None:
    """Independent seeds in parallel processes, one per core, then the best one exported."""
    from .runs._selection import export_best_of
    from .lab.report import train_all
    from .runs._shipped import is_shipped

    out = Path(args.out) if args.out else Path("runs") / config.name
    if is_shipped(out):
        raise ValueError(f"{out} is a shipped optimizer's folder: train several seeds into another folder.")
    first = args.seed if args.seed is not None else config.seed
    seeds = range(first, first + args.seeds)
    extra = ["--max-skips", str(args.max_skips)]
    extra += ["--steps", str(args.steps)] if args.steps is not None else []
    extra += ["--checkpoint-every", str(args.checkpoint_every)] if args.checkpoint_every else []
    extra += [f"--set={item}" for item in args.set or []]
    try:
        train_all([(args.experiment, s, out / f"seed{s}", *extra) for s in seeds], fresh=args.fresh)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    best = export_best_of([out / f"seed{s}" for s in seeds], out)
    print(f"best of seeds {list(seeds)}: {best} -> {out / 'optimizer'}")
    if args.ship:
        _compare_with_shipped(best, config.name, ship=True)


def _run_dir(args: argparse.Namespace) -> Path:
    """The run `eval`/`figures` read: `--out`, else the shipped optimizer of that name, else where
    `train` puts the experiment's run by default (`runs/NAME`, also for an experiment file)."""
    from .lab.compare import require_trained
    from .runs._experiments import load_experiment
    from .runs._exports import EXPORT
    from .runs._shipped import shipped_folder

    config = load_experiment(args.experiment).config  # an unknown name fails here, listing the known ones
    if args.out:
        run_dir = Path(args.out)
    else:
        shipped = shipped_folder(config.name)
        trained = default_out(config.name, config.seed, config.seed)
        run_dir = shipped if shipped is not None and (shipped / EXPORT).is_dir() else trained
    require_trained(run_dir, args.experiment)
    return run_dir


def _check_single_family(experiment, command: str) -> None:
    from .tasks._mixture import FamilyMixture

    if isinstance(experiment.family, FamilyMixture):
        from .runs._exports import EXPORT
        from .runs._shipped import shipped_folder

        name = experiment.config.name
        shipped = shipped_folder(name)
        trained = shipped is not None and (shipped / EXPORT).is_dir()
        target = name if trained else default_out(name, experiment.config.seed, experiment.config.seed)
        sys.exit(f"error: {name} trains on a mixture of families ({', '.join(experiment.family.names)}); "
                 f"`{command}` scores one family: judge it with `make suite OPT={target}`.")


def cmd_eval(args: argparse.Namespace) -> None:
    run_dir = _run_dir(args)
    configure_cpu(args.core if args.core is not None else free_core())
    import json

    from .lab.compare import evaluate_run, format_table
    from .runs._experiments import load_experiment
    from .runs._shipped import is_shipped

    experiment = load_experiment(args.experiment)
    _check_single_family(experiment, "eval")
    result = evaluate_run(
        run_dir,
        num_tasks=args.tasks or experiment.eval_tasks,
        validation_tasks=args.validation_tasks or experiment.validation_tasks,
        write=False,
        family=experiment.family,
    )
    print(format_table(result))
    text = json.dumps(result, indent=1) + "\n"
    target = run_dir / "eval.json"
    if is_shipped(run_dir) and not args.ship:
        if target.is_file() and target.read_text() == text:
            print(f"identical to the shipped {target} (left untouched)")
            return
        target = Path("runs") / run_dir.name / "eval.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"differs from the shipped {run_dir / 'eval.json'}, which stays as shipped (pass --ship to replace it)")
    target.write_text(text)
    print(f"written to {target}")


def cmd_figures(args: argparse.Namespace) -> None:
    run_dir = _run_dir(args)
    configure_cpu(args.core)
    from .lab.figures import draw_run_figures
    from .runs._experiments import load_experiment

    experiment = load_experiment(args.experiment)
    _check_single_family(experiment, "figures")
    for path in draw_run_figures(run_dir, family=experiment.family):
        print(path)


def cmd_reproduce(args: argparse.Namespace) -> None:
    configure_cpu()
    from .lab.report import DEFAULT_EXPERIMENTS, reproduce

    experiments = tuple(args.experiments.split(",")) if args.experiments else DEFAULT_EXPERIMENTS
    print(reproduce(args.root, seeds=args.seeds, experiments=experiments, ship=args.ship, num_tasks=args.tasks,
                    report=args.report))


def cmd_ablate(args: argparse.Namespace) -> None:
    configure_cpu()
    from .lab.report import ablate

    cores = [int(c) for c in args.cores.split(",")] if args.cores else None
    print(ablate(args.experiment, root=args.root, num_tasks=args.tasks, report=args.report, cores=cores,
                 fresh=not args.resume))


def cmd_paper(args: argparse.Namespace) -> None:
    configure_cpu()
    from .lab.paper import digits_report, paper_report

    report = digits_report if args.section == "digits" else paper_report
    print(report(args.report, checkpoints=args.checkpoints))


def cmd_bench(args: argparse.Namespace) -> None:
    configure_cpu(args.core, cache=False)
    from .lab.bench import run_bench

    run_bench(args.experiment, out=Path(args.json), steps=args.steps, against=args.against)


def _suite_settings(args: argparse.Namespace):
    """`(settings, baselines to tune, folder tag)` of a suite command's flags, checked before any
    work: --quick keeps its settings but what a flag sets."""
    import dataclasses

    from . import suite

    if args.quick and args.horizon_scale != 1:
        raise ValueError("--quick caps every horizon at 50 steps, so --horizon-scale would change nothing: drop one of them.")
    settings = suite.QUICK if args.quick else suite.Settings()
    instances = suite._run.parse_instances(args.instances) if args.instances else None
    if instances and instances != (settings.validation_instances, settings.test_instances):
        settings = dataclasses.replace(settings, validation_instances=instances[0], test_instances=instances[1])
    else:
        instances = None
    settings = dataclasses.replace(settings, horizon_scale=args.horizon_scale)
    chosen = tuple(b.strip() for b in args.baselines.split(",")) if args.baselines else None
    tag = (("-quick" if args.quick else "") + (f"-i{instances[0]}-{instances[1]}" if instances else "")
           + (f"-x{args.horizon_scale}" if args.horizon_scale != 1 else ""))
    return settings, chosen, tag


def cmd_suite(args: argparse.Namespace) -> None:
    configure_cpu(args.core if args.core is not None else free_core())
    from . import suite

    if args.optimizer == "compare":
        return cmd_compare(args)
    if args.more:
        raise ValueError(f"suite takes one optimizer, got {args.optimizer!r} and {' '.join(args.more)!r} "
                         "(several: `suite compare A B ...`).")
    rivals = _rivals(args.rivals)
    # Every check before any work: settings, where the run and its report go.
    settings, chosen, tag = _suite_settings(args)
    out = suite._report.check_out(Path(args.out) if args.out else Path("runs") / "suite" / (suite._report._slug(args.optimizer) + tag))
    if args.report:
        suite._report.check_report(args.report)
    result = suite.run(args.optimizer, args.tasks, quick=args.quick, cache=None if args.no_cache else "default",
                       progress=not args.no_progress, settings=settings, baselines_to_tune=chosen, rivals=rivals)
    suite.write(result, out)
    print(suite.markdown(result))
    print(f"written to {out} (suite.json, suite.md, figures/)")
    if args.report:
        partial = suite._report.partial_run(result)
        where = suite.write_section(args.report, result)
        print(f"partial run ({partial}): its own section of {where}; a full section and the summary row are kept" if partial
              else f"section {result.optimizer!r} written into {where}")


def _rivals(text: str | None) -> tuple[str, ...] | None:
    """--rivals: None (all), `none`, or comma-separated names (checked: an unknown one lists the known)."""
    from .suite._run import check_rivals

    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return check_rivals(tuple(k.strip() for k in text.split(",") if k.strip()))


def cmd_compare(args: argparse.Namespace) -> None:
    """`suite compare A B ...`: several optimizers on the same tasks, one table and one figure."""
    from . import suite

    specs = list(args.more)
    if not specs:
        raise ValueError("suite compare needs optimizers to compare: `suite compare A B ...` (shipped names, run folders, "
                         "suite result folders, NAME:LR, or tuning-free rivals such as prodigy).")
    if args.report:
        raise ValueError("--report is for one optimizer's suite run, not for suite compare.")
    settings, chosen, tag = _suite_settings(args)
    out = suite._report.check_out(Path(args.out) if args.out else suite._compare.default_out(specs, tag))
    result = suite.compare(specs, args.tasks, quick=args.quick, cache=None if args.no_cache else "default",
                           progress=not args.no_progress, settings=settings, baselines_to_tune=chosen)
    suite._compare.write(result, out)
    print(suite._compare.markdown(result))
    print(f"written to {out} (compare.json, compare.md, figures/profiles.png)")


def cmd_list(args: argparse.Namespace) -> None:
    from .runs._shipped import list_optimizers

    optimizers = list_optimizers()
    if not optimizers:
        sys.exit("error: this l2lgd has no shipped optimizers (neither a checkout's checkpoints/ nor an installed copy).")
    width = max(len(o.name) for o in optimizers)
    for o in optimizers:
        print(f"{o.name:<{width}}  {o.summary}")


def _train_parser(sub) -> None:
    train = sub.add_parser("train", help="meta-train an experiment of experiments/")
    train.add_argument("experiment", nargs="?", default="log30", help="a shipped experiment's name, or path/to/file.py")
    train.add_argument("--seed", type=int, help="the run's seed (default: the experiment's)")
    train.add_argument("--seeds", type=positive_int, help="train this many seeds in parallel processes")
    train.add_argument("--steps", type=int, help="number of meta-steps, Config.meta_steps (default: the experiment's)")
    train.add_argument("--out", help="run folder (default: runs/EXP, or runs/EXP/seedN)")
    train.add_argument("--ship", action="store_true", help="replace the shipped checkpoints/EXP optimizer with this run's (unless bit-identical)")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a Config field (repeatable)")
    train.add_argument("--fresh", action="store_true", help="discard earlier snapshots and start afresh")
    train.add_argument("--checkpoint-every", type=positive_int, help="meta-steps between snapshots (default: the experiment's checkpoint_every)")
    train.add_argument("--max-skips", type=positive_int, default=100, help="consecutive non-finite steps before stopping")
    train.add_argument("--core", type=int, help="CPU core to pin the process to (default: the first core no other l2lgd process holds)")
    train.add_argument("--devices", type=positive_int, default=1,
                       help="CPU devices, one per core, that the run splits its work over (PES and ES: each task's "
                            "antithetic pairs; backpropagation: the batch), e.g. 2 on a 2-core machine")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=cmd_train)


def _tasks_argument(p, default: int | None = None, help: str = "test tasks") -> None:
    # `--problems` (and `--validation-problems`): the spelling before l2lgd 0.3, still accepted.
    p.add_argument("--tasks", "--problems", dest="tasks", type=positive_int, default=default, help=help)


def _run_parsers(sub) -> None:
    """`eval` and `figures`: commands on one trained run."""
    for name, func, text in (("eval", cmd_eval, "evaluate a trained optimizer against baselines"),
                             ("figures", cmd_figures, "draw the reference's figures for a trained run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("experiment", nargs="?", default="log30")
        p.add_argument("--out", help="run folder (default: checkpoints/EXP)")
        p.add_argument("--core", type=int)
        if name == "eval":
            _tasks_argument(p, help="test tasks (default: the experiment's eval_tasks)")
            p.add_argument("--validation-tasks", "--validation-problems", dest="validation_tasks", type=positive_int,
                           help="tasks for tuning baselines (default: the experiment's validation_tasks)")
            p.add_argument("--ship", action="store_true", help="write eval.json into a shipped folder even when it differs")
        p.set_defaults(func=func)


def _lab_parsers(sub) -> None:
    """`reproduce`, `ablate`, `paper` and `bench`: the lab's commands."""
    rep = sub.add_parser("reproduce", help="train, evaluate and report every reference experiment")
    rep.add_argument("--root", default="runs", help="where the runs go")
    rep.add_argument("--seeds", type=positive_int, default=3)
    rep.add_argument("--experiments", help="comma-separated subset (default: the reference's six and floor)")
    rep.add_argument("--ship", action="store_true", help="also replace checkpoints/EXP with seed 0's optimizer")
    _tasks_argument(rep, 10_000)
    rep.add_argument("--report", default="experiments/REPORT.md",
                     help="the report to write (its figures go beside it, in figures/)")
    rep.set_defaults(func=cmd_reproduce)

    abl = sub.add_parser("ablate", help="train and evaluate the variants in an experiment's ablations")
    abl.add_argument("experiment", nargs="?", default="floor")
    abl.add_argument("--root", default="runs/ablations")
    _tasks_argument(abl, help="test tasks (default: 10,000; for an experiment on a mixture of families, its eval_tasks "
                              "per validation family)")
    abl.add_argument("--report", default="experiments/ABLATIONS.md", help="the report to write the table into")
    abl.add_argument("--cores", help="comma-separated cores to train the variants on, one at a time each (default: every core)")
    abl.add_argument("--resume", action="store_true",
                     help="resume each variant's run where it stopped (a finished one is only evaluated) instead of "
                          "training it afresh")
    abl.set_defaults(func=cmd_ablate)

    paper = sub.add_parser("paper", help="the paper's tasks and generalization table -> experiments/REPORT.md")
    paper.add_argument("--section", choices=("paper", "digits"), default="paper",
                       help="paper: the paper_* experiments; digits: the digits experiment's generalization table")
    paper.add_argument("--checkpoints", default="checkpoints", help="the folder of trained runs (default: checkpoints)")
    paper.add_argument("--report", default="experiments/REPORT.md", help="the report to write the section into")
    paper.set_defaults(func=cmd_paper)

    suite = sub.add_parser("suite", help="put an optimizer through the benchmark suite against per-task tuned baselines")
    suite.add_argument("optimizer", help="a shipped optimizer's name, a run folder, or an optax spec NAME:LR (e.g. adam:1e-3); "
                       "`compare A B ...`: several optimizers (those, suite result folders or tuning-free rivals) in one table")
    suite.add_argument("more", nargs="*", help=argparse.SUPPRESS)
    suite.add_argument("--rivals", help="tuning-free rivals to run too: none, or comma-separated names (default: all)")
    suite.add_argument("--tasks", default="heldout", help="a split: heldout (default), validation or train; all; or comma-separated task names")
    suite.add_argument("--quick", action="store_true",
                       help="a smoke run in seconds: three cheap tasks, 4,8 instances (or --instances), 50 steps")
    suite.add_argument("--horizon-scale", type=positive_int, default=1, help="run every task for N times its horizon")
    suite.add_argument("--baselines", help="comma-separated baselines to tune (default: all; adam among them)")
    suite.add_argument("--instances", help="VALIDATION,TEST instances per task (default 16,50)")
    suite.add_argument("--out", help="where suite.json, suite.md and figures/ go (default: runs/suite/OPT)")
    suite.add_argument("--report", help="also write the table as this optimizer's section of a report (e.g. experiments/SUITE.md)")
    suite.add_argument("--no-cache", action="store_true", help="recompute the baselines (default: cached in ~/.cache/l2lgd/suite)")
    suite.add_argument("--core", type=int)
    suite.add_argument("--no-progress", action="store_true")
    suite.set_defaults(func=cmd_suite)

    bench = sub.add_parser("bench", help="meta-training throughput, compile time and memory")
    bench.add_argument("experiment", nargs="?", default="log30")
    bench.add_argument("--steps", type=positive_int, help="meta-steps of the short l2lgd train runs (default: 2,000 on quadratics, 20 otherwise)")
    bench.add_argument("--json", default="bench.json")
    bench.add_argument("--against", help="a commit whose code also runs the experiment's evolution-strategies "
                                         "training, beside this code's (e.g. 1b1b3cd)")
    bench.add_argument("--core", type=int, default=0)
    bench.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2lgd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _run_parsers(sub)
    lst = sub.add_parser("list", help="the shipped optimizers, one line each (load one with l2lgd.load_optimizer(NAME))")
    lst.set_defaults(func=cmd_list)
    _lab_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Runs a command; every expected failure is one line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    from ._errors import NonFiniteError, RunLocked, Stopped

    try:
        args.func(args)
    except Stopped as e:
        print(f"l2lgd: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("l2lgd: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, TypeError, OSError, OverflowError, MemoryError, NonFiniteError, RunLocked) as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - XLA's out-of-memory, as one line
        if "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):
            sys.exit(f"error: out of memory: {str(e).splitlines()[0][:300]}")
        raise
