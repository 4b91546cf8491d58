"""The benchmark suite: its families, its baseline cache and its runner (tiny shapes)."""

import dataclasses
import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd.runs._loading import resolve_optimizer_path
from l2lgd import suite
from l2lgd.suite import _baselines
from l2lgd.suite._run import FAST_COMPILE
from l2lgd import LinearRegression, RosenbrockFunctions
from l2lgd.tasks import draw_task


def test_the_suite_has_enough_families_kinds_and_held_out_ones():
    tasks = list(suite.SUITE.values())
    assert len(tasks) >= 20
    assert sum(t.split == "heldout" for t in tasks) >= 15
    validation = [t for t in tasks if t.split == "validation"]
    assert len(validation) >= 8 and len({t.kind for t in validation}) >= 5
    assert len({t.kind for t in tasks}) >= 5
    for split in suite.SPLITS:  # a transformer language model in every split
        assert any(isinstance(t.family, l2lgd.tasks.TransformerLM) for t in tasks if t.split == split), split
    sizes = {t.name: sum(x.size for x in jax.tree.leaves(jax.eval_shape(lambda f=t.family: draw_task(f, jax.random.key(0))[1])))
             for t in tasks if t.split == "heldout"}
    assert sum(n >= 100_000 for n in sizes.values()) >= 3, sizes  # a transformer among them
    names = {t.name for t in tasks}
    assert names.isdisjoint(suite.SPLITS)
    assert all(a.family not in {b.family for b in tasks if b.split != a.split} for a in tasks)  # no family in two splits
    horizons = [t.horizon for t in tasks]
    assert min(horizons) >= 100 and max(horizons) <= 2000 and max(horizons) >= 1000
    minibatches = [t.family.minibatch for t in tasks if hasattr(t.family, "minibatch")]
    assert min(minibatches) <= 16 and max(minibatches) >= 256


def _probe(family):
    """Everything the family test looks at, in one compiled call."""

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def probe(key, other):
        loss_fn, params, minibatch = draw_task(family, key)
        mkey = jax.random.wrap_key_data(minibatch) if family.stochastic else None
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, mkey) if mkey is not None else loss_fn(p))(params)
        return params, draw_task(family, key)[1], draw_task(family, other)[1], loss, grads, family.metrics(loss_fn, params)

    return probe(jax.random.key(3), jax.random.key(4))


@pytest.mark.parametrize("name", sorted(suite.SUITE))
def test_each_family_samples_finite_deterministic_tasks(name):
    family = suite.SUITE[name].family
    l2lgd.tasks.check_family(family)
    params, params_again, other_params, loss, grads, metrics = _probe(family)
    leaves = jax.tree.leaves(params)
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(leaves, jax.tree.leaves(params_again)))  # same key, same task
    assert not all(bool(jnp.array_equal(a, b)) for a, b in zip(leaves, jax.tree.leaves(other_params)))  # another, another
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert loss.shape == () and loss.dtype == jnp.float32 and jnp.isfinite(loss)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert "train_loss" in metrics and all(bool(jnp.isfinite(v)) for v in metrics.values())


class NaNBowls(l2lgd.TaskFamily):
    horizon: int = eqx.field(static=True, default=10)

    def sample(self, key):
        return l2lgd.Quadratic(jnp.full(2, jnp.nan)), jnp.ones(2)

    def metrics(self, loss_fn, params):
        return {"train_loss": loss_fn(params)}


def test_registering_refuses_bad_families_naming_them(monkeypatch):
    monkeypatch.setattr(suite._tasks, "SUITE", dict(suite.SUITE))
    with pytest.raises(ValueError, match="Suite task 'nan_bowls' .* is not finite at initialization: loss"):
        suite.register_suite_task("nan_bowls", "quadratic", "train", NaNBowls())
    with pytest.raises(ValueError, match="already has a task named 'linreg_cond1e4'"):
        suite.register_suite_task("linreg_cond1e4", "linear", "heldout", LinearRegression())
    with pytest.raises(ValueError, match="split must be one of 'train', 'validation', 'heldout'"):
        suite.register_suite_task("x", "linear", "test", LinearRegression())
    with pytest.raises(ValueError, match=r"Unknown suite task\(s\) 'nope'; choose a split \(train, validation, heldout\), all, or names of: "
                       r".*linreg_cond1e4"):
        suite.select("nope,linreg_cond1e4")


def test_bad_optimizer_specs_are_one_line_errors():
    for spec, message in (("adam:fast", "not an optax spec"), ("nosuch:1e-3", "not an optax spec"),
                          ("not_shipped_anywhere", "neither a shipped optimizer, a run folder nor an optax spec")):
        with pytest.raises(ValueError, match=message) as info:
            suite.resolve_optimizer(spec)
        assert "\n" not in str(info.value)
    assert suite.resolve_optimizer("sgd:0.1")[0] == "sgd:0.1"


TINY = suite.Settings(validation_instances=2, test_instances=4, horizon_cap=10)


@pytest.fixture
def tiny_suite(monkeypatch):
    monkeypatch.setattr(suite._tasks, "SUITE", dict(suite.SUITE))
    suite.register_suite_task("tiny_linreg", "linear", "heldout", LinearRegression(3, 10.0, 4, 10, samples=16))
    suite.register_suite_task("tiny_rosenbrock", "function", "heldout", RosenbrockFunctions(2, 10))
    return ["tiny_linreg", "tiny_rosenbrock"]


def cached_result(steps: int = 10, metrics=("train_loss", "test_loss")) -> dict:
    """A result of the schema `tune_baseline` returns (and the cache keeps)."""
    stats = {"mean": 0.5, "ci95": 0.1, "nonfinite": 0}
    curve = [1.0] * steps
    return {"lr": 0.1, "grid_edge": False, "validation": {"0.1": 0.5, "1": float("inf")}, "seconds": 1.0,
            "test": {**{m: dict(stats) for m in metrics}, "curve": {"mean": curve, "p10": curve, "p90": curve},
                     "nonfinite_runs": 0}}


def test_the_cache_is_keyed_by_family_and_baseline_and_survives_no_damage(tiny_suite, tmp_path, monkeypatch):
    task = suite._tasks.SUITE["tiny_linreg"]
    settings = {"n": 1}
    first = _baselines.definition(task, "adam", settings)
    _baselines.store(tmp_path, first, cached_result())
    assert _baselines.load_cached(tmp_path, first) == json.loads(json.dumps(cached_result()))
    # Another field of the family, or another definition of the baseline: not the cached result.
    changed = task._replace(family=LinearRegression(3, 100.0, 4, 10, samples=16))
    assert _baselines.load_cached(tmp_path, _baselines.definition(changed, "adam", settings)) is None
    monkeypatch.setitem(_baselines.BASELINES, "adam", lambda lr, horizon: optax.adam(lr, b1=0.5))
    assert _baselines.load_cached(tmp_path, _baselines.definition(task, "adam", settings)) is None
    # A damaged file is not trusted.
    (path,) = tmp_path.glob("tiny_linreg-adam-*.json")
    path.write_text('{"definition": ')
    with pytest.warns(UserWarning, match="is damaged"):
        assert _baselines.load_cached(tmp_path, first) is None


def test_the_runner_end_to_end_on_two_tiny_tasks(tiny_suite, tmp_path, monkeypatch):
    # Two of the six baselines (each compiles a program per task; they all run the same code path).
    monkeypatch.setattr(_baselines, "BASELINES", {k: _baselines.BASELINES[k] for k in ("sgd", "adam")})
    cache = tmp_path / "cache"
    rivals = ("dowg", "schedule_free_adamw")  # two of the tuning-free rivals (one scored at its eval params)
    result = suite.run("adam:1e-2", tiny_suite, settings=TINY, cache=cache, progress=False, rivals=rivals)
    assert [t.name for t in result.tasks] == tiny_suite
    for t in result.tasks:
        assert set(t.baselines) == {"sgd", "adam"}
        best = t.baselines[t.best_baseline]
        assert best["test"]["train_loss"]["mean"] == min(b["test"]["train_loss"]["mean"] for b in t.baselines.values())
        assert t.ratio_to_best == pytest.approx(t.optimizer["train_loss"]["mean"] / best["test"]["train_loss"]["mean"])
        assert len(t.optimizer["curve"]["mean"]) == 10 and t.optimizer["nonfinite_runs"] == 0
        assert 1e-7 <= t.baselines["sgd"]["lr"] <= 1e2 and t.ratio_to_suite_adam is not None
    s = result.summary
    assert s["tasks"] == 2 and s["suite_adam_lr"] > 0 and set(s["per_kind"]) == {"linear", "function"}
    assert 0.0 <= s["fraction_with_lower_mean"]["best"] <= 1.0
    files = sorted(p.name.split("-")[1] for p in cache.glob("tiny_linreg-*.json"))
    tuned = [f for f in files if not f.startswith("rival.")]
    assert tuned.count("adam") == 2 and len(tuned) == 3  # the tuned baselines, and Adam at the suite-wide rate
    assert sorted(set(files) - set(tuned)) == ["rival.dowg", "rival.schedule_free_adamw"]
    # The rivals: each one's figures, the optimizer's ratio to it, and over the suite how often it is below.
    for t in result.tasks:
        assert set(t.rivals) == set(rivals) and set(t.ratio_to_rivals) == set(rivals)
        for k in rivals:
            mine, theirs = t.optimizer["train_loss"]["mean"], t.rivals[k]["test"]["train_loss"]["mean"]
            assert t.ratio_to_rivals[k] == pytest.approx(mine / theirs) and len(t.rivals[k]["test"]["curve"]["mean"]) == 10
            assert t.rivals[k]["test"]["nonfinite_runs"] == 0
    for k in rivals:
        figures = s["rivals"][k]
        assert figures["fraction_below"] == np.mean([r.ratio_to_rivals[k] < 1 - 1e-3 for r in result.tasks])
        iqm = figures["iqm_ratio"]
        assert iqm["low"] <= iqm["value"] <= iqm["high"]
    # Steps to the target (the best tuned baseline's final loss) of every optimizer in the comparison.
    profiles = s["profiles"]
    assert list(profiles["optimizers"]) == ["adam:1e-2", "tuned sgd", "tuned adam", *rivals]
    for i, t in enumerate(result.tasks):
        assert t.target == profiles["targets"][i] == t.baselines[t.best_baseline]["test"]["train_loss"]["mean"]
        assert 1 <= t.steps_to_target[f"tuned {t.best_baseline}"] <= t.horizon + 1
        assert set(t.steps_to_target) == set(profiles["optimizers"])
    for v in profiles["optimizers"].values():
        assert 0.0 <= v["score"] <= 1.0 and len(v["rho"]) == len(profiles["taus"])
        assert v["speedup_over_adam"]["q25"] <= v["speedup_over_adam"]["median"] <= v["speedup_over_adam"]["q75"]
    assert profiles["optimizers"]["tuned adam"]["iqm_ratio_to_adam"]["value"] == 1.0
    assert profiles["optimizers"]["tuned adam"]["speedup_over_adam"]["median"] == 1.0
    again = suite.run("adam:1e-2", tiny_suite, settings=TINY, cache=cache, progress=False, rivals=rivals)
    assert again.baseline_seconds < result.baseline_seconds
    assert again.tasks[0].baselines == json.loads(json.dumps(result.tasks[0].baselines))
    assert again.tasks[0].rivals == json.loads(json.dumps(result.tasks[0].rivals))  # cached: its seconds as stored
    out = suite.write(again, tmp_path / "out")
    data = json.loads((out / "suite.json").read_text())
    assert data["optimizer"] == "adam:1e-2" and len(data["tasks"]) == 2
    assert set(data["summary"]["rivals"]) == set(rivals) and "profiles" in data["summary"]
    assert (out / "figures" / "tiny_linreg.png").is_file() and (out / "figures" / "summary.png").is_file()
    assert (out / "figures" / "profiles.png").is_file()
    text = (out / "suite.md").read_text()
    assert "| dowg | " in text and "profile score" in text and "best tuned baseline's mean final training loss" in text
    # Several optimizers in one table and one figure: this run, a rival (cached) and a spec run afresh.
    compared = suite.compare([again, "dowg", "sgd:0.1"], cache=cache, progress=False, runs_root=tmp_path / "runs")
    assert compared.optimizers == ["adam:1e-2", "dowg", "sgd:0.1", "tuned adam"] and compared.tasks == tiny_suite
    assert compared.sources["sgd:0.1"] == f"run, kept in {tmp_path / 'runs' / 'sgd_0.1'}"
    reused = suite.compare([again, "sgd:0.1"], cache=cache, progress=False, runs_root=tmp_path / "runs")
    assert reused.sources["sgd:0.1"].startswith("cached") and reused.losses["sgd:0.1"] == compared.losses["sgd:0.1"]
    kept = json.loads((tmp_path / "runs" / "sgd_0.1" / "suite.json").read_text())
    assert kept["optimizer_id"] == "sgd:0.1"
    kept["optimizer_id"] = "sgd:another"  # as if another optimizer had been run under this name
    (tmp_path / "runs" / "sgd_0.1" / "suite.json").write_text(json.dumps(kept))
    rerun = suite.compare([again, "sgd:0.1"], cache=cache, progress=False, runs_root=tmp_path / "runs")
    assert rerun.sources["sgd:0.1"] == f"run, kept in {tmp_path / 'runs' / 'sgd_0.1-2'}"
    # A learned optimizer is named by its weights: its shipped name and its folder are one optimizer.
    assert suite._run.optimizer_identity("general") == suite._run.optimizer_identity(resolve_optimizer_path("general"))
    assert suite._run.optimizer_identity("general") != suite._run.optimizer_identity("digits")
    assert compared.losses["dowg"] == [t.rivals["dowg"]["test"]["train_loss"]["mean"] for t in again.tasks]
    assert compared.profiles["optimizers"]["tuned adam"]["iqm_ratio_to_adam"]["value"] == 1.0
    where = suite._compare.write(compared, tmp_path / "compare")
    assert sorted(p.name for p in where.rglob("*") if p.is_file()) == ["compare.json", "compare.md", "profiles.png"]
    table = (where / "compare.md").read_text()
    assert table.count("| task | target |") == 1 and "profile score" in table and "| `tiny_rosenbrock` |" in table
    other = dataclasses.replace(again, settings={**again.settings, "test_instances": 5})
    with pytest.raises(ValueError, match="test_instances 4 vs 5"):
        suite.compare([again, other], cache=cache, runs_root=None)
    assert suite.load(out).tasks[1].ratio_to_best == again.tasks[1].ratio_to_best
    report = suite.write_section(tmp_path / "SUITE.md", again)
    suite.write_section(report, again)  # replaced, not appended twice
    text = report.read_text()
    # Two tiny tasks at TINY settings: a partial run, in a section of its own and in no summary row
    # (a full run's section: tests/test_suite_reliability.py).
    assert text.count("<!-- suite:adam_1e-2.partial:start -->") == 1 and "| `tiny_rosenbrock` |" in text
    assert "| `adam:1e-2` |" not in text and "(partial run)" in text
    # A learned optimizer goes through the same runner.
    learned = l2lgd.as_optax(l2lgd.make_optimizer(l2lgd.Config(hidden_size=4), key=jax.random.key(0)))
    mine = suite.run(learned, ["tiny_rosenbrock"], settings=TINY, cache=cache, progress=False)
    assert np.isfinite(mine.tasks[0].ratio_to_best)


def test_unknown_rivals_are_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="Unknown tuning-free rival\\(s\\) 'nope'; the known ones: prodigy, .*adam:1e-3") as info:
        suite.run("adam:1e-3", ["linreg_cond1e4"], quick=True, cache=None, progress=False, rivals=("dowg", "nope"))
    assert "\n" not in str(info.value)
    assert suite._run.check_rivals(None) == tuple(suite.TUNING_FREE) and suite._run.check_rivals(()) == ()


def test_the_command_line_refuses_bad_input_in_one_line():
    import subprocess
    import sys

    for argv, message in ((["adam:1e-3", "--tasks", "nope"], "Unknown suite task(s) 'nope'; choose a split (train, validation, heldout)"),
                          (["adam:soon"], "is not an optax spec NAME:LEARNING_RATE"),
                          (["adam:1e-3", "--rivals", "dowg,nope"], "Unknown tuning-free rival(s) 'nope'; the known ones: prodigy"),
                          (["adam:1e-3", "sgd:0.1"], "suite takes one optimizer"),
                          (["compare", "adam:1e-3", "nope:1"], "optax has no optimizer 'nope'")):
        done = subprocess.run([sys.executable, "-m", "l2lgd", "suite", *argv], capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
