import subprocess
import sys
import time

import pytest

from l2lgd import cli


def test_unknown_experiment_fails_fast_listing_the_known_ones():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "l2lgd", "train", "nope"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Unknown experiment 'nope'" in proc.stderr
    for name in ("log30", "sum", "end_log", "log15_end"):
        assert name in proc.stderr
    assert time.perf_counter() - start < 30  # generous: only imports happen


def test_invalid_step_count_names_the_field():
    with pytest.raises(SystemExit, match="meta_steps must be a positive integer, got -5"):
        cli.main(["train", "log30", "--steps", "-5"])


def test_task_counts_take_the_new_and_the_old_flag():
    parser = cli.build_parser()
    args = parser.parse_args(["eval", "log30", "--tasks", "5", "--validation-problems", "7"])
    assert (args.tasks, args.validation_tasks) == (5, 7)
    assert parser.parse_args(["reproduce", "--problems", "9"]).tasks == 9
    assert parser.parse_args(["ablate"]).tasks is None  # 10,000, or a mixture experiment's eval_tasks


def test_eval_of_an_untrained_run_names_the_train_command(tmp_path):
    with pytest.raises(SystemExit, match=r"make train EXP=log30 OUT="):
        cli.main(["eval", "log30", "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match=r"make train EXP=sum"):
        cli.main(["figures", "sum", "--out", str(tmp_path / "none")])


def test_several_seeds_train_in_parallel_and_the_best_is_exported(tmp_path):
    import json
    import os

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tiny.py").write_text(
        "from l2lgd import Config\nCONFIG = Config(name='tiny', num_steps=5, hidden_size=4, meta_steps=10)\n"
    )
    env = dict(os.environ, L2LGD_EXPERIMENTS=str(tmp_path / "exps"))
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "l2lgd", "train", "tiny", "--seeds", "2", "--out", str(out), "--checkpoint-every", "5"],
        env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = {}
    for seed in (0, 1):
        step_dir = next((out / f"seed{seed}" / "optimizer").iterdir())
        scores[seed] = json.loads((step_dir / "metrics" / "metadata").read_text())["validation_log10_final"]
        assert json.loads((out / f"seed{seed}" / "config.json").read_text())["seed"] == seed
    best = next((out / "optimizer").iterdir())
    assert json.loads((best / "metrics" / "metadata").read_text())["validation_log10_final"] == min(scores.values())


def test_the_compilation_cache_is_configurable_and_gives_bit_identical_weights(tmp_path, monkeypatch):
    import os

    from l2lgd.runs._ship import compare_exports
    from l2lgd._process import CACHE_VARIABLE, compilation_cache_dir

    monkeypatch.setenv(CACHE_VARIABLE, "off")
    assert compilation_cache_dir() is None
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    assert compilation_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache_dir() == tmp_path / "xdg" / "l2lgd" / "jax"

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tiny.py").write_text(
        "from l2lgd import Config\nCONFIG = Config(name='tiny', num_steps=5, hidden_size=4, meta_steps=10)\n"
    )
    runs = {}
    for name, cache in (("cold", tmp_path / "cache"), ("warm", tmp_path / "cache"), ("off", "off")):
        env = dict(os.environ, L2LGD_EXPERIMENTS=str(tmp_path / "exps"), **{CACHE_VARIABLE: str(cache)})
        runs[name] = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "l2lgd", "train", "tiny", "--out", str(runs[name]), "--no-progress"],
            env=env, capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        if name == "cold":
            assert any((tmp_path / "cache").iterdir())  # compiled programs were written
    assert compare_exports(runs["warm"], runs["cold"]) is None
    assert compare_exports(runs["off"], runs["cold"]) is None
    assert (runs["warm"] / "final_log10.f32").read_bytes() == (runs["off"] / "final_log10.f32").read_bytes()


def test_seeds_and_devices_are_refused_together():
    with pytest.raises(SystemExit, match="--seeds 2 trains one seed a core; --devices 2 splits one run"):
        cli.main(["train", "log30", "--seeds", "2", "--devices", "2"])
