"""Runs, the command line and their messages: what an adversarial pass found misleading or crashing
(refused resumes printing Orbax tracebacks, experiment files given by path, horizons and memory
checks, messages that point nowhere)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

import l2lgd
from l2lgd.runs._driver import _check_trainable, python_command

REPO = Path(__file__).resolve().parents[1]
TINY = "from l2lgd import Config\nCONFIG = Config(name='tinyfile', num_steps=4, hidden_size=2, num_layers=1, meta_steps=4)\n"


def _l2lgd(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "l2lgd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """An experiment given by its path, trained by `train PATH` into its default folder."""
    root = tmp_path_factory.mktemp("file_run")
    path = root / "elsewhere" / "quad.py"
    path.parent.mkdir()
    path.write_text(TINY)
    done = _l2lgd("train", str(path), "--no-progress", "--checkpoint-every", "4", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root, path


def test_a_refused_resume_prints_its_line_and_no_orbax_traceback(trained_file):
    root, path = trained_file
    for _ in range(3):  # the traceback came from a thread racing interpreter shutdown: most runs showed it
        refused = _l2lgd("train", str(path), "--no-progress", "--set", "meta_lr=0.001", cwd=root)
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr and "Event loop is closed" not in refused.stderr, refused.stderr[-2000:]
        lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
        assert len(lines) == 1 and "different config (meta_lr" in lines[0], lines


def test_eval_finds_the_run_train_wrote_for_an_experiment_file(trained_file):
    root, path = trained_file
    assert (root / "runs" / "tinyfile" / "optimizer").is_dir()
    evaluated = _l2lgd("eval", str(path), "--tasks", "8", "--validation-tasks", "4", cwd=root)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (root / "runs" / "tinyfile" / "eval.json").is_file()


def test_a_run_with_snapshots_but_no_export_says_so_and_names_its_steps(trained_file, tmp_path):
    root, _ = trained_file
    run = tmp_path / "unfinished"
    shutil.copytree(root / "runs" / "tinyfile", run)
    shutil.rmtree(run / "optimizer")
    with pytest.raises(ValueError, match=r"has not exported an optimizer yet.*step=.*\b4\b"):
        l2lgd.load_learned_optimizer(run)
    assert isinstance(l2lgd.load_learned_optimizer(run, step=4)[0], l2lgd.LearnedOptimizer)


def test_ablate_puts_an_experiment_file_under_its_root(tmp_path):
    from l2lgd.lab import report

    path = tmp_path / "elsewhere" / "quad.py"
    path.parent.mkdir()
    path.write_text(TINY)
    jobs, afresh = [], []

    def fake_train_all(given, cores=None, fresh=True):
        jobs.extend(given)
        afresh.append(fresh)
        raise RuntimeError("stop here")  # only where the runs would go, and whether afresh, matter

    original = report.train_all
    report.train_all = fake_train_all
    try:
        for resume in (False, True):
            with pytest.raises(RuntimeError, match="stop here"):
                report.ablate(str(path), root=tmp_path / "abl", report=tmp_path / "A.md", fresh=not resume)
    finally:
        report.train_all = original
    assert [Path(job[2]) for job in jobs] == [tmp_path / "abl" / "tinyfile" / "variant0"] * 2
    assert afresh == [True, False]  # --resume: each variant's run resumed (a finished one only evaluated)


def _training_stopped_at_start(monkeypatch) -> list:
    """`ablate`'s `train_all` replaced by one that records its jobs and raises "training starts"
    before any trains: what ran before training is what a test of `ablate --resume` looks at."""
    from l2lgd.lab import report

    trained = []

    def fake_train_all(jobs, cores=None, fresh=True):
        trained.extend(jobs)
        raise RuntimeError("training starts")

    monkeypatch.setattr(report, "train_all", fake_train_all)
    return trained


def test_ablate_resume_refuses_a_stale_variant_folder_before_training_any(tmp_path, monkeypatch):
    """`ablate --resume` after the experiment's config changed: one error naming the folder and the
    changed field, before any variant trains (it used to fail at that variant, after the others)."""
    from l2lgd.lab import report

    path = tmp_path / "quad.py"
    path.write_text(TINY)
    stale = tmp_path / "abl" / "tinyfile" / "variant0"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text(l2lgd.Config(name="tinyfile", num_steps=5, hidden_size=2, num_layers=1,
                                                    meta_steps=4).to_json())
    trained = _training_stopped_at_start(monkeypatch)
    with pytest.raises(ValueError, match=r"variant0 \(num_steps: 5 -> 4\)"):
        report.ablate(str(path), root=tmp_path / "abl", report=tmp_path / "A.md", fresh=False)
    assert not trained
    (stale / "config.json").write_text(l2lgd.Config(name="tinyfile", num_steps=4, hidden_size=2, num_layers=1,
                                                    meta_steps=8).to_json())  # meta_steps may change on resume
    with pytest.raises(RuntimeError, match="training starts"):
        report.ablate(str(path), root=tmp_path / "abl", report=tmp_path / "A.md", fresh=False)
    assert len(trained) == 1


def test_ablate_resume_refuses_a_variant_scored_on_other_validation_tasks(tmp_path, monkeypatch):
    """`ablate --resume` after the experiment's `validation_tasks` changed (an `Experiment` field,
    not a `Config` one): refused before any variant trains, naming both counts (it used to fail
    only when that variant's own training started)."""
    from l2lgd.lab import report

    path = tmp_path / "quad.py"
    path.write_text(TINY + "VALIDATION_PROBLEMS = 6\n")
    config = l2lgd.Config(name="tinyfile", num_steps=4, hidden_size=2, num_layers=1, meta_steps=4)
    variant = tmp_path / "abl" / "tinyfile" / "variant0"
    l2lgd.train(config, variant, l2lgd.RunOptions(checkpoint_every=4, progress=False, validation_tasks=8))
    trained = _training_stopped_at_start(monkeypatch)
    with pytest.raises(ValueError, match=r"variant0 \(validation_tasks: 8 -> 6\)"):
        report.ablate(str(path), root=tmp_path / "abl", report=tmp_path / "A.md", fresh=False)
    assert not trained
    path.write_text(TINY + "VALIDATION_PROBLEMS = 8\n")
    with pytest.raises(RuntimeError, match="training starts"):
        report.ablate(str(path), root=tmp_path / "abl", report=tmp_path / "A.md", fresh=False)
    assert len(trained) == 1


def test_a_horizon_beyond_float32_whole_numbers_is_refused():
    with pytest.raises(ValueError, match="max_horizon=1000000000000 is beyond"):
        l2lgd.Config(estimator="pes", num_steps=5, min_horizon=20, max_horizon=10**12)
    with pytest.raises(ValueError, match="max_horizon"):
        l2lgd.PES(min_horizon=20, max_horizon=2**25)
    l2lgd.Config(estimator="pes", num_steps=5, min_horizon=20, max_horizon=2**24)  # the largest allowed


def test_the_memory_check_names_the_estimators_pairs():
    config = l2lgd.Config(estimator="pes", num_steps=5, horizon=10, hidden_size=64, perturbations=10**7)
    with pytest.raises(ValueError, match=r"PES\(pairs=10000000.*fewer perturbations"):
        _check_trainable(config, l2lgd.tasks.task_family(config))


def test_the_mixture_refusal_points_to_a_suite_command_that_works():
    from l2lgd.cli import _check_single_family

    mixture = l2lgd.FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.ConditionedQuadratics(3, 10.0, 20)),
                                  ("a", "b"))
    mine = l2lgd.Experiment(config=l2lgd.Config(name="mymix", estimator="pes", num_steps=5), family=mixture)
    with pytest.raises(SystemExit, match=r"make suite OPT=runs/mymix`"):
        _check_single_family(mine, "eval")
    shipped = l2lgd.Experiment(config=l2lgd.Config(name="general", estimator="pes", num_steps=5), family=mixture)
    with pytest.raises(SystemExit, match=r"make suite OPT=general`"):
        _check_single_family(shipped, "eval")


def test_make_suite_without_an_optimizer_refuses_and_says_what_the_first_run_costs():
    if shutil.which("make") is None or not (REPO / ".venv" / ".installed").exists():
        pytest.skip("needs make and the repository's .venv")
    done = subprocess.run(["make", "-s", "-C", str(REPO), "suite", "OPT="], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "usage: make suite OPT=" in done.stderr and "45 minutes" in done.stderr


def test_printed_commands_work_without_an_activated_environment():
    command = python_command()
    assert Path(command).resolve() == Path(sys.executable).resolve()
    assert os.access(command, os.X_OK)


def test_the_readme_lists_every_shipped_optimizer():
    import re

    table = (REPO / "README.md").read_text().split("Each shipped optimizer is a specialist")[1].split("\n\n")[1]
    listed = {name for row in table.splitlines()[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert {o.name for o in l2lgd.list_optimizers()} == listed
