"""The suite's defects found by review, one test each: its cache, its scoring, its command line and
its registry (tiny shapes; the command line runs in this process with the work itself stubbed
out, so a refusal is shown to come before any work)."""

import dataclasses
import json
import math
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd import LinearRegression, cli, suite
from l2lgd.suite import _baselines, _report, _run
from l2lgd.runs._shipped import shipped_dir

TINY = suite.Settings(validation_instances=2, test_instances=4, horizon_cap=10)

# The bowls' loss is read from here when a task is traced: changing it changes what every task
# computes, while the family's class, fields and sources stay the same (what the old cache key saw).
LOSS_SCALE = 1.0


class ScaledBowl(eqx.Module):
    scale: jax.Array

    def __call__(self, x, key=None):
        return sys.modules[__name__].LOSS_SCALE * jnp.sum(jnp.square(self.scale * x))


class Bowls(l2lgd.TaskFamily):
    horizon: int = eqx.field(static=True, default=10)

    def sample(self, key):
        scale_key, x_key = jax.random.split(key)
        return ScaledBowl(jax.random.uniform(scale_key, (3,), minval=0.5, maxval=2.0)), jax.random.normal(x_key, (3,))

    def metrics(self, loss_fn, params):
        return {"train_loss": loss_fn(params)}


def forbid_work(monkeypatch, error=None):
    """Makes any work of `suite.run` (a task's fingerprint, a baseline, the optimizer's run) fail
    the test, or raise `error`."""

    def work(*args, **kwargs):
        if error is not None:
            raise error(args[0].name if args and hasattr(args[0], "name") else "")
        pytest.fail("the suite started working")

    for name in ("task_identity", "tune_baseline", "_runner"):
        monkeypatch.setattr(_run, name, work, raising=False)


@pytest.fixture
def bowls(monkeypatch):
    monkeypatch.setattr(suite._tasks, "SUITE", dict(suite.SUITE))
    suite.register_suite_task("tiny_bowls", "quadratic", "heldout", Bowls())
    return ["tiny_bowls"]


# 1. The cache key holds every class a task runs and the library versions, and an entry is
#    checked against the numbers the task gives now.


def test_the_cache_key_holds_the_loss_class_its_bases_and_the_library_versions():
    task = suite.SUITE["linreg_cond1e4"]
    definition = _baselines.definition(task, "adam", {})
    text = json.dumps(definition)
    # The loss the family returns, and the base class that draws its data, not only the family's own class.
    assert "class RegressionLoss(eqx.Module)" in text and "return 0.5 * jnp.mean" in text
    assert "class _Regression(TaskFamily)" in text and "def conditioned_inputs" not in text  # (functions: the fingerprint)
    assert definition.get("optax") == optax.__version__ and definition.get("jax") == jax.__version__
    assert definition.get("l2lgd") == l2lgd.__version__


def test_a_loss_changed_where_the_key_cannot_see_is_not_served_from_the_cache(bowls, tmp_path, monkeypatch):
    kwargs = dict(settings=TINY, cache=tmp_path, progress=False, baselines_to_tune=("adam",))
    first = suite.run("sgd:0.1", bowls, **kwargs).tasks[0].baselines["adam"]
    monkeypatch.setattr(sys.modules[__name__], "LOSS_SCALE", 50.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = suite.run("sgd:0.1", bowls, **kwargs).tasks[0].baselines["adam"]
    # Recomputed on the new loss (the old cache served the first result): 50 times the loss at
    # initialization, so the validation scores are no longer the first run's; and said so.
    assert again["validation"] != first["validation"]
    assert [w for w in caught if "was computed on other numbers than 'tiny_bowls' gives now" in str(w.message)]
    # and the new numbers are cached in their turn: a third run reads them without a warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third = suite.run("sgd:0.1", bowls, **kwargs).tasks[0].baselines["adam"]
    assert third == json.loads(json.dumps(again)) and not [w for w in caught if "suite cache" in str(w.message)]


# 4. A non-finite run is a loss against every baseline, in every aggregate.


def _zero_or_nan() -> optax.GradientTransformation:
    """Jumps to the bowls' minimum (loss 0, below any tuned baseline) on instances whose first
    coordinate starts at or below 0, and to NaN on the others."""

    def update(grads, state, params):
        first = jax.tree.leaves(params)[0].ravel()[0]
        return jax.tree.map(lambda p: jnp.where(first > 0, jnp.nan, -p), params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def test_an_optimizer_with_non_finite_runs_scores_them_as_losses(bowls):
    settings = suite.Settings(validation_instances=2, test_instances=8)
    result = suite.run(_zero_or_nan(), bowls, settings=settings, cache=None, progress=False, baselines_to_tune=("adam",))
    (task,) = result.tasks
    assert 0 < task.optimizer["nonfinite_runs"] < 8 and task.optimizer["train_loss"]["mean"] == 0.0  # its finite runs: 0
    assert task.ratio_to_best == math.inf and task.ratio_to_adam == math.inf and task.ratio_to_suite_adam == math.inf
    assert task.speedup_over_adam == 0.0
    s = result.summary
    assert s["fraction_with_lower_mean"] == {"adam": 0.0, "best": 0.0}
    assert s["fraction_beating_with_separated_ci"] == {"adam": 0.0} and s["fraction_below_suite_adam"] == 0.0
    assert s["median_ratio_to_best"] == math.inf and s["per_kind"]["quadratic"]["median_ratio"] == math.inf
    assert s["tasks_with_nonfinite_runs"] == 1 and s["nonfinite_runs"] == task.optimizer["nonfinite_runs"]
    assert f"(1 task with non-finite runs, {s['nonfinite_runs']} runs in all" in suite.markdown(result)


# 5. --quick keeps its settings beside an explicit flag, and its folder says what ran.


@pytest.fixture
def command_line(monkeypatch, tmp_path):
    """`python -m l2lgd suite ...` in this process, with the run itself stubbed out: returns
    `(main, calls)`; `calls["run"]` holds what `suite.run` was given (never called when the
    command refuses its input first)."""
    calls = {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_cpu", lambda *a, **k: None)
    monkeypatch.setattr(cli, "free_core", lambda: None)

    def fake_run(optimizer, tasks, **kwargs):
        calls["run"] = kwargs
        return suite.SuiteResult(optimizer, {}, [], {}, 0.0, 0.0)

    monkeypatch.setattr(suite, "run", fake_run)
    monkeypatch.setattr(suite, "write", lambda result, out: calls.setdefault("out", out))
    monkeypatch.setattr(suite, "markdown", lambda result: "")

    def main(*argv):
        calls.clear()
        cli.main(["suite", *argv, "--no-progress"])

    return main, calls


def test_quick_keeps_its_settings_but_what_a_flag_sets(command_line):
    main, calls = command_line
    main("adam:1e-3", "--quick", "--instances", "2,3")
    settings = calls["run"]["settings"]
    assert (settings.validation_instances, settings.test_instances, settings.horizon_cap) == (2, 3, 50)
    assert calls["run"]["quick"] and calls["out"].name == "adam_1e-3-quick-i2-3"
    main("adam:1e-3", "--instances", "8,16")
    assert calls["run"]["settings"] == suite.Settings(8, 16) and calls["out"].name == "adam_1e-3-i8-16"
    with pytest.raises(SystemExit, match="--quick caps every horizon at 50 steps, so --horizon-scale would change nothing"):
        main("adam:1e-3", "--quick", "--horizon-scale", "5")
    assert "run" not in calls


# 6. A cache entry that is JSON but not a result is recomputed, with a warning.


@pytest.mark.parametrize("damage", ["delete test", "number as text"])
def test_a_damaged_cache_entry_is_recomputed(damage, monkeypatch, tmp_path):
    monkeypatch.setattr(suite._tasks, "SUITE", dict(suite.SUITE))
    task = suite.register_suite_task("tiny_linreg", "linear", "heldout", LinearRegression(3, 10.0, 4, 10, samples=16))
    fresh = _run.tune_baseline(task, "adam", TINY, cache=tmp_path)
    (path,) = tmp_path.glob("tiny_linreg-adam-*.json")
    entry = json.loads(path.read_text())
    if damage == "delete test":
        del entry["result"]["test"]
    else:
        entry["result"]["test"]["train_loss"]["mean"] = str(entry["result"]["test"]["train_loss"]["mean"])
    path.write_text(json.dumps(entry))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run.tune_baseline(task, "adam", TINY, cache=tmp_path)
    assert again["test"] == json.loads(json.dumps(fresh["test"]))  # (it was a KeyError: 'test', or a string)
    assert [w for w in caught if f"suite cache: {path} is damaged" in str(w.message)]
    assert json.loads(path.read_text())["result"]["test"] == again["test"]  # and written back whole


# 10. Optax specs that need more than the gradients are refused at once, naming what works.


@pytest.mark.parametrize("spec, needs", [("lbfgs:1e-3", "'value', 'grad', and 'value_fn'"), ("polyak_sgd:1e-3", "'value'")])
def test_optimizers_that_need_the_loss_are_refused_before_any_work(spec, needs, monkeypatch):
    forbid_work(monkeypatch)
    with pytest.raises(ValueError, match="cannot run in the suite") as info:
        suite.run(spec, ["linreg_cond1e4"], quick=True, cache=None, progress=False)
    assert needs in str(info.value) and "adam:1e-3" in str(info.value) and "\n" not in str(info.value)


# 11. A quick or partial run never replaces a full section of the report.


def _stats(mean):
    return {"mean": mean, "ci95": 0.01 * mean, "nonfinite": 0}


def _fake_task(name, mine, best=1.0, kind="mlp"):
    """A `TaskResult` with the optimizer's mean `mine` against two baselines (the best at `best`)."""
    curve = {"mean": [2.0, best], "p10": [2.0, best], "p90": [2.0, best]}
    tuned = {b: {"lr": 0.1, "grid_edge": False, "validation": {"0.1": m}, "seconds": 1.0,
                 "test": {"train_loss": _stats(m), "curve": curve, "nonfinite_runs": 0}}
             for b, m in (("adam", best), ("sgd", 2.0 * best))}
    return _run.TaskResult(name=name, kind=kind, split="heldout", horizon=2,
                           optimizer={"train_loss": _stats(mine), "curve": curve, "nonfinite_runs": 0},
                           baselines=tuned, best_baseline="adam", ratio_to_best=mine / best, ratio_to_adam=mine / best,
                           speedup_over_adam=1.0, suite_adam={"lr": 0.1, "train_loss": _stats(best)},
                           ratio_to_suite_adam=mine / best)


def _fake_result(tasks, settings, baselines=None):
    results = [_fake_task(name, mine) for name, mine in tasks]
    if baselines is not None:
        for r in results:
            r.baselines = {b: r.baselines["adam"] for b in baselines}
    return suite.SuiteResult("adam:1e-3", dataclasses.asdict(settings), results, _run.summarize_suite(results), 1.0, 0.0)


def test_a_quick_or_partial_run_does_not_replace_the_full_section(tmp_path):
    heldout = [t.name for t in suite.select("heldout")]
    full = _fake_result([(name, 0.5) for name in heldout], suite.Settings(), baselines=suite.BASELINES)
    full.summary["profiles"] = _run.profiles(full.tasks, [{"adam:1e-3": r.optimizer, "tuned adam": r.baselines["adam"]["test"]}
                                                          for r in full.tasks])
    report = suite.write_section(tmp_path / "SUITE.md", full)
    before = report.read_text()
    assert "![adam:1e-3: performance profiles on the heldout split](figures/suite/adam_1e-3.png)" in before
    assert (tmp_path / "figures" / "suite" / "adam_1e-3.png").is_file()  # a full run's figure, beside the report
    section = before[before.index("<!-- suite:adam_1e-3:start -->"):before.index("<!-- suite:adam_1e-3:end -->")]
    for partial in (_fake_result([(heldout[0], 0.9)], suite.QUICK),  # --quick
                    _fake_result([(heldout[0], 0.9)], suite.Settings(), baselines=suite.BASELINES)):  # one task
        suite.write_section(report, partial)
        text = report.read_text()
        assert section in text and text.count(f"| `adam:1e-3` | heldout | {len(heldout)} |") == 1  # the full section and its row
        assert text.count("<!-- suite:adam_1e-3.partial:start -->") == 1 and "### `adam:1e-3` (partial run)" in text
        assert "**Partial run** (" in text
    assert sorted(p.name for p in (tmp_path / "figures" / "suite").iterdir()) == ["adam_1e-3.png"]  # none for a partial run
    assert _report.partial_run(full) is None
    assert "quick: horizons capped at 50 steps" in _report.partial_run(_fake_result([(heldout[0], 0.9)], suite.QUICK))


def test_each_split_has_its_own_section_and_row_and_old_rows_keep_theirs(tmp_path):
    report = tmp_path / "SUITE.md"
    report.write_text(_report.HEADER.replace("<!-- suite_summary:start -->\n", "<!-- suite_summary:start -->\n"
                                             "| `digits` | 12 | 15.8 | 45.5 | 0% | 8% | 0% | 42% | 0.219 | 0 |\n"))
    for split, mine in (("heldout", 0.5), ("validation", 0.7)):
        names = [t.name for t in suite.select(split)]
        suite.write_section(report, _fake_result([(n, mine) for n in names], suite.Settings(), baselines=suite.BASELINES))
    text = report.read_text()
    assert text.count("<!-- suite:adam_1e-3:start -->") == 1 and text.count("<!-- suite:adam_1e-3.validation:start -->") == 1
    summary = text[text.index("<!-- suite_summary:start -->"):text.index("<!-- suite_summary:end -->")]
    rows = [line for line in summary.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[:2] for r in rows] == [["| `digits`", "heldout (the first 12)"], ["| `adam:1e-3`", "heldout"],
                                                  ["| `adam:1e-3`", "validation"]]
    assert len({r.count("|") for r in rows}) == 1  # every row in the same columns
    with pytest.raises(ValueError, match="validation, heldout"):
        suite.select("validaton")


# 12. A tie is not a win.


def test_a_copy_of_the_best_baseline_does_not_count_as_below_it():
    tie = _run.summarize_suite([_fake_task("a", 0.99999989), _fake_task("b", 1.0000001)])
    assert tie["fraction_with_lower_mean"] == {"adam": 0.0, "sgd": 1.0, "best": 0.0}
    assert tie["per_kind"]["mlp"]["below_best"] == 0.0 and tie["fraction_below_suite_adam"] == 0.0
    win = _run.summarize_suite([_fake_task("a", 0.99), _fake_task("b", 1.0000001)])
    assert win["fraction_with_lower_mean"]["best"] == 0.5 and win["fraction_below_suite_adam"] == 0.5


# 13. The cache, --out and --report are checked before any work.


def test_an_unwritable_cache_is_refused_before_any_work(tmp_path, monkeypatch):
    forbid_work(monkeypatch)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"baseline cache .*file/cache is not writable .*--no-cache"):
        suite.run("adam:1e-2", ["linreg_cond1e4"], quick=True, cache=tmp_path / "file" / "cache", progress=False)


def test_out_and_report_are_checked_before_any_work(command_line):
    main, calls = command_line
    shipped = shipped_dir("checkpoints") / "general"
    for argv, message in ((["--out", "/dev/null"], "--out /dev/null is not a folder"),
                          (["--report", "/dev/null"], "--report /dev/null is not a regular file"),
                          (["--out", str(shipped)], "is inside the shipped optimizers' folder"),
                          (["--out", str(shipped / "suite")], "is inside the shipped optimizers' folder"),
                          (["--report", str(shipped / "SUITE.md")], "is inside the shipped optimizers' folder")):
        with pytest.raises(SystemExit, match=message) as info:
            main("adam:1e-3", "--quick", *argv)
        assert "run" not in calls and "\n" not in str(info.value.code), argv


# 14. Bad numbers on the command line: one clear line naming the value.


def test_bad_instances_are_one_line_errors(command_line):
    main, calls = command_line
    for value in ("4", "a,b", "1,8", "4,8,16"):
        with pytest.raises(SystemExit, match=rf"error: --instances expects VALIDATION,TEST: .* got '{value}'") as info:
            main("adam:1e-3", "--instances", value)
        assert "run" not in calls and "\n" not in str(info.value.code)


@pytest.mark.parametrize("spec, message", [
    ("adam:1_0", "the learning rate '1_0' is not a plain positive number"),
    ("sgd:1e99", "the learning rate 1e99 is outside 1e-30 to 1e6"),
    ("adam:inf", "the learning rate 'inf' is not a plain positive number"),
    ("adam:nan", "the learning rate 'nan' is not a plain positive number"),
    ("adam:-1e-3", "the learning rate '-1e-3' is not a plain positive number"),
    ("adam:0", "the learning rate 0 is outside"),
])
def test_learning_rates_are_plain_positive_finite_numbers(spec, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings included
        with pytest.raises(ValueError, match=f"'{spec}' is not an optax spec NAME:LEARNING_RATE: {message}"):
            suite.resolve_optimizer(spec)
    assert suite.resolve_optimizer("adam:3e-4")[0] == "adam:3e-4" and suite.resolve_optimizer("sgd:.5")[0] == "sgd:.5"


# 15. The registry and the settings refuse what they cannot run, and take NumPy integers.


@pytest.mark.filterwarnings("ignore:A JAX array is being set as static")  # Equinox's, of the NumPy horizon
def test_registering_refuses_what_cannot_be_selected_or_summarized(monkeypatch):
    monkeypatch.setattr(suite._tasks, "SUITE", dict(suite.SUITE))
    family = LinearRegression(3, 10.0, 4, 10, samples=16)
    for name in ("heldout", "train", "all"):
        with pytest.raises(ValueError, match=f"may not be named '{name}'"):
            suite.register_suite_task(name, "linear", "heldout", family)
    with pytest.raises(ValueError, match="its kind must be a non-empty string"):
        suite.register_suite_task("kind3", 3, "heldout", family)
    with pytest.raises(ValueError, match="positive integer `horizon`, got True"):
        suite.register_suite_task("bool_horizon", "linear", "heldout", LinearRegression(3, 10.0, 4, True, samples=16))
    task = suite.register_suite_task("numpy_horizon", "linear", "heldout", LinearRegression(3, 10.0, 4, np.int64(30), samples=16))
    assert task.horizon == 30 and type(task.horizon) is int


def test_settings_are_validated_and_take_numpy_integers():
    for field, value in (("horizon_cap", 0), ("horizon_cap", True), ("horizon_cap", 2.5), ("test_instances", 1),
                         ("validation_instances", np.float64(8)), ("horizon_scale", 0)):
        with pytest.raises(ValueError, match=f"Settings.{field} must be an integer of at least"):
            suite.Settings(**{field: value})
    settings = suite.Settings(validation_instances=np.int64(8), test_instances=np.int32(16), horizon_cap=np.int64(50))
    assert dataclasses.asdict(settings) == {"validation_instances": 8, "test_instances": 16, "horizon_cap": 50, "horizon_scale": 1}
    assert all(type(v) is int for v in dataclasses.asdict(settings).values())  # JSON-able, in the cache key


def test_tasks_none_is_the_default_selection(monkeypatch):
    assert suite.select(None) == suite.select("heldout")

    class Started(Exception):
        pass

    forbid_work(monkeypatch, Started)
    with pytest.raises(Started, match=suite.select("heldout")[0].name):
        suite.run("adam:1e-3", None, cache=None, progress=False)
    with pytest.raises(ValueError, match=r"Suite tasks are named by a split \(train, validation, heldout\), all, or a list of task names; got 3"):
        suite.select(3)


def test_a_transformation_of_ones_own_that_needs_the_loss_is_refused_but_not_one_for_other_params(monkeypatch):
    forbid_work(monkeypatch)
    with pytest.raises(ValueError, match=r"This optax transformation cannot run in the suite: .*missing 1 required"):
        suite.run(optax.polyak_sgd(), ["linreg_cond1e4"], quick=True, cache=None, progress=False)
    # One written for params of another structure is not judged on the probe's: it runs.
    masked = optax.masked(optax.adam(1e-3), {"w": True, "b": False, "other": True})
    assert suite.resolve_optimizer(masked)[1] is masked


# The field's figures: a copy of tuned Adam scores as tuned Adam does.


def test_a_copy_of_tuned_adam_scores_its_profile_like_adam():
    tasks = [_fake_task(name, 1.0, best=1.0) for name in "abcd"]
    for r in tasks:
        r.optimizer = r.baselines["adam"]["test"]
        slow = {"mean": [2.0, 2.0], "p10": [2.0, 2.0], "p90": [2.0, 2.0]}
        r.baselines["sgd"] = {**r.baselines["sgd"], "test": {**r.baselines["sgd"]["test"], "curve": slow}}
    s = _run.summarize_suite(tasks, "copy")
    copy, adam = s["profiles"]["optimizers"]["copy"], s["profiles"]["optimizers"]["tuned adam"]
    assert copy["score"] == adam["score"] == 1.0 and copy["rho"] == adam["rho"]
    assert copy["steps_to_target"] == adam["steps_to_target"]
    assert copy["iqm_ratio_to_adam"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert copy["speedup_over_adam"] == {"median": 1.0, "q25": 1.0, "q75": 1.0}
    sgd = s["profiles"]["optimizers"]["tuned sgd"]  # never at the target (the best's final loss): a profile of 0
    assert sgd["score"] == 0.0 and sgd["speedup_over_adam"]["median"] == 0.0 and sgd["iqm_ratio_to_adam"]["value"] == 2.0
    assert s["rivals"] == {}


def test_rivals_and_compare_on_the_command_line(command_line, monkeypatch):
    main, calls = command_line
    main("adam:1e-3", "--quick", "--rivals", "none")
    assert calls["run"]["rivals"] == ()
    main("adam:1e-3", "--quick", "--rivals", "dowg, prodigy")
    assert calls["run"]["rivals"] == ("dowg", "prodigy")
    main("adam:1e-3", "--quick")
    assert calls["run"]["rivals"] is None  # all of them
    with pytest.raises(SystemExit, match=r"Unknown tuning-free rival\(s\) 'nope'; the known ones: prodigy, dadapt_adamw"):
        main("adam:1e-3", "--rivals", "nope")
    compared = {}

    def fake_compare(specs, tasks, **kwargs):
        compared.update(specs=specs, tasks=tasks, **kwargs)
        return "comparison"

    monkeypatch.setattr(suite, "compare", fake_compare)
    monkeypatch.setattr(suite._compare, "write", lambda c, out: compared.setdefault("out", out))
    monkeypatch.setattr(suite._compare, "markdown", lambda c: "")
    main("compare", "adam:1e-3", "prodigy", "--quick")
    assert compared["specs"] == ["adam:1e-3", "prodigy"] and compared["out"].name == "compare-adam_1e-3-prodigy-quick"
    assert compared["settings"] == suite.QUICK and "run" not in calls
    with pytest.raises(SystemExit, match="suite compare needs optimizers"):
        main("compare")
    with pytest.raises(SystemExit, match="--report is for one optimizer's suite run"):
        main("compare", "adam:1e-3", "--report", "x.md")
