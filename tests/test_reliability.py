"""Runs that cannot corrupt each other or what is shipped, damage detected, clean stops, inputs."""

import hashlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd import cli
from l2lgd import load_record
from l2lgd.runs._snapshots import RunCheckpoints
from l2lgd.runs import _driver
from l2lgd.runs._ship import ship

REPO = Path(__file__).resolve().parents[1]
TINY = "from l2lgd import Config\nCONFIG = Config(name='tiny', num_steps=4, hidden_size=4, meta_steps={steps})\nVALIDATION_PROBLEMS = 8\n"


def _experiments(tmp_path, steps):
    folder = tmp_path / "exps"
    folder.mkdir(exist_ok=True)
    (folder / "tiny.py").write_text(TINY.format(steps=steps))
    return dict(os.environ, L2LGD_EXPERIMENTS=str(folder), PYTHONUNBUFFERED="1")


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "l2lgd", "train", "tiny", "--out", str(out), "--no-progress", *extra]


def _theta(run_dir, step):
    checkpoints = RunCheckpoints(run_dir)
    try:
        return checkpoints.restore(step)[0].theta
    finally:
        checkpoints.close()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _flip_bytes(folder: Path) -> Path:
    """Overwrites 16 bytes in the middle of the largest array data file under `folder`."""
    data = max((p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 16] = bytes((b ^ 0x5A) for b in raw[middle : middle + 16])
    data.write_bytes(bytes(raw))
    return data


def test_a_second_writer_is_refused_and_the_record_stays_whole(tmp_path):
    # The first run compiles (no compilation cache), so it holds the lock for seconds.
    env = dict(_experiments(tmp_path, 3_000), L2LGD_COMPILATION_CACHE="off")
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out, "--checkpoint-every", "1000"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ((out / ".lock").exists() and (out / ".lock").read_text()) and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(_train_cmd(out, "--checkpoint-every", "1000"), env=env, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"{out} is being written by process {first.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert load_record(out).size == 3_000
    assert (out / ".lock").read_text() == ""  # released cleanly: the next run takes it silently


def test_training_never_touches_what_is_shipped(tmp_path):
    shipped = REPO / "checkpoints" / "sum"
    before = _tree_digest(shipped)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "l2lgd", "train", "sum", "--steps", "6", "--checkpoint-every", "3", "--set", "num_steps=3", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "differs from the shipped optimizer" in proc.stdout and "pass --ship" in proc.stdout
    assert (tmp_path / "runs" / "sum" / "optimizer").is_dir()
    refused = subprocess.run(
        [sys.executable, "-m", "l2lgd", "train", "sum", "--steps", "6", "--out", str(shipped)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "is a shipped optimizer's folder" in refused.stderr
    assert _tree_digest(shipped) == before


def test_a_bit_identical_retrain_leaves_the_shipped_files_untouched(tmp_path):
    import shutil

    shipped = REPO / "checkpoints" / "sum"
    run = tmp_path / "run"
    shutil.copytree(shipped / "optimizer", run / "optimizer")
    shutil.copy(shipped / "config.json", run / "config.json")
    stamps = {p: p.stat().st_mtime_ns for p in shipped.rglob("*")}
    assert "bit for bit" in ship(run, "sum")
    assert {p: p.stat().st_mtime_ns for p in shipped.rglob("*")} == stamps


def test_eval_of_a_shipped_optimizer_writes_elsewhere_when_it_differs(tmp_path):
    shipped = REPO / "checkpoints" / "log30" / "eval.json"
    before = shipped.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "l2lgd", "eval", "log30", "--tasks", "20", "--validation-tasks", "8"],
        cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, L2LGD_EXPERIMENTS=str(REPO / "experiments")),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stays as shipped" in proc.stdout
    assert (tmp_path / "runs" / "log30" / "eval.json").is_file()
    assert shipped.read_bytes() == before


def test_damaged_data_is_an_error_naming_the_file_and_resume_falls_back(tmp_path):
    # hidden_size 20: arrays large enough that OCDBT keeps them in a data file of their own
    # (small ones are inlined in its b-tree nodes, which carry a CRC of their own).
    config = l2lgd.Config(name="tiny", num_steps=4, meta_steps=10)
    options = l2lgd.RunOptions(checkpoint_every=5, progress=False, validation_tasks=8)
    l2lgd.train(config, tmp_path / "run", options)
    export = tmp_path / "run" / "optimizer"
    damaged = _flip_bytes(export)
    with pytest.raises(ValueError, match=r"optimizer/10/weights is (corrupt|truncated)"):
        l2lgd.load_optimizer(tmp_path / "run")
    assert damaged.is_file()
    _flip_bytes(tmp_path / "run" / "snapshots" / "10")
    with pytest.raises(ValueError, match=r"snapshots/10/state is (corrupt|truncated)"):
        _theta(tmp_path / "run", 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = l2lgd.train(config.replace(meta_steps=15), tmp_path / "run", options)
    assert any("snapshots/10" in str(w.message) and "older one" in str(w.message) for w in caught)
    assert (tmp_path / "run" / "damaged" / "10").is_dir()
    straight = l2lgd.train(config.replace(meta_steps=15), tmp_path / "straight", options)
    chex.assert_trees_all_equal(resumed.state.theta, straight.state.theta)
    l2lgd.load_optimizer(tmp_path / "run")  # the new export is intact


def test_a_short_record_no_longer_blocks_resuming(tmp_path):
    config = l2lgd.Config(name="tiny", num_steps=4, hidden_size=4, meta_steps=10)
    options = l2lgd.RunOptions(checkpoint_every=5, progress=False, validation_tasks=8)
    l2lgd.train(config, tmp_path / "run", options)
    (tmp_path / "run" / "final_log10.f32").write_bytes(b"\0" * 6)
    with pytest.warns(UserWarning, match="recorded as NaN"):
        l2lgd.train(config.replace(meta_steps=12), tmp_path / "run", options)
    record = load_record(tmp_path / "run")
    assert record.size == 12 and np.isnan(record[1:10]).all() and np.isfinite(record[10:]).all()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_chunk_boundary_and_the_resume_is_bit_identical(tmp_path, sig, code):
    env = _experiments(tmp_path, 200_000)
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, "--checkpoint-every", "1000"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "final_log10.f32").exists() and time.time() < deadline:  # the first chunk is done
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("l2lgd:")]
    assert len(lines) == 1 and "stopped at meta-step" in lines[0] and "resume with" in lines[0], err[-2000:]
    assert "Traceback" not in err
    if sig == signal.SIGINT:
        steps = load_record(out).size
        assert 0 < steps < 200_000 and steps % 1_000 == 0
        step = max(RunCheckpoints(out).steps() or [0])
        (tmp_path / "exps" / "tiny.py").write_text(TINY.format(steps=steps + 1_000))
        resumed = subprocess.run(_train_cmd(out, "--checkpoint-every", "1000"), env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        straight = subprocess.run(_train_cmd(tmp_path / "straight", "--checkpoint-every", "1000"), env=env, capture_output=True, text=True)
        assert straight.returncode == 0
        final = RunCheckpoints(out).latest_step()
        chex.assert_trees_all_equal(_theta(out, final), _theta(tmp_path / "straight", final))
        assert step <= final


class NaNBowls(l2lgd.TaskFamily):
    def sample(self, key):
        return NaNLoss(), jnp.ones(3)


class NaNLoss(eqx.Module):
    def __call__(self, x, key=None):
        return jnp.sum(x**2) * jnp.nan


def test_the_skip_limit_stops_within_the_chunk_and_says_what_is_on_disk(tmp_path):
    config = l2lgd.Config(name="nan", num_steps=3, hidden_size=4, meta_steps=500)
    options = l2lgd.RunOptions(checkpoint_every=500, progress=False, validation_tasks=4, max_consecutive_skips=7)
    with pytest.raises(l2lgd.NonFiniteError, match=r"7 consecutive meta-steps up to meta-step 7 .*no snapshot was written"):
        l2lgd.train(config, tmp_path / "run", options, family=NaNBowls())
    assert load_record(tmp_path / "run").size == 7
    assert not RunCheckpoints(tmp_path / "run").steps()


def test_injected_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    real = _driver.make_train_chunk

    def poisoned(*args, **kwargs):
        chunk = real(*args, **kwargs)

        def run(state, n):
            state, rec = chunk(state, n)
            if int(state.step) > 5:  # the second chunk's weights: one NaN
                theta = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.theta)
                state = state._replace(theta=theta)
            return state, rec

        return run

    monkeypatch.setattr(_driver, "make_train_chunk", poisoned)
    config = l2lgd.Config(name="tiny", num_steps=3, hidden_size=4, meta_steps=20)
    options = l2lgd.RunOptions(checkpoint_every=5, progress=False, validation_tasks=4)
    with pytest.raises(l2lgd.NonFiniteError, match=r"became non-finite during meta-steps 6-10; nothing of them is saved; .*meta-step 5"):
        l2lgd.train(config, tmp_path / "run", options)
    checkpoints = RunCheckpoints(tmp_path / "run")
    assert checkpoints.steps() == [5]
    chex.assert_tree_all_finite(checkpoints.restore(5)[0].theta)
    assert load_record(tmp_path / "run").size == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "log30", "--checkpoint-every", "0"], "expected a positive integer, got 0"),
        (["train", "log30", "--seeds", "0"], "expected a positive integer, got 0"),
        (["eval", "log30", "--tasks", "-3"], "expected a positive integer, got -3"),
        (["eval", "log30", "--validation-tasks", "0"], "expected a positive integer, got 0"),
    ],
)
def test_zero_and_negative_counts_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_seeds_that_would_alias_are_refused():
    with pytest.raises(SystemExit, match=r"seed must be an integer in \[0, 2\*\*32\), got 4294967296"):
        cli.main(["train", "log30", "--seed", str(2**32)])


def test_load_checks_the_step_and_accepts_an_export_step_folder():
    with pytest.raises(TypeError, match=r"step must be an integer meta-step or None, got '5000'"):
        l2lgd.load_optimizer("log30", step="5000")
    with pytest.raises(TypeError, match=r"got 5000.0"):
        l2lgd.load_optimizer("log30", step=5000.0)
    step_dir = next((REPO / "checkpoints" / "log30" / "optimizer").iterdir())
    a = l2lgd.load_learned_optimizer(step_dir)[0]
    b = l2lgd.load_learned_optimizer("log30")[0]
    chex.assert_trees_all_equal(eqx.filter(a, eqx.is_array), eqx.filter(b, eqx.is_array))


def test_resuming_with_fewer_steps_than_done_is_refused(tmp_path):
    config = l2lgd.Config(name="tiny", num_steps=4, hidden_size=4, meta_steps=10)
    options = l2lgd.RunOptions(checkpoint_every=5, progress=False, validation_tasks=4)
    l2lgd.train(config, tmp_path, options)
    with pytest.raises(ValueError, match=r"holds a run at meta-step 10, beyond the 5 asked for"):
        l2lgd.train(config.replace(meta_steps=5), tmp_path, options)


def test_the_optax_face_names_a_gradient_that_does_not_match_init():
    tx = l2lgd.load_optimizer("log30")
    state = tx.init({"w": jnp.ones((5, 20)), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"leaf \['w'\] of shape \(3, 20\), but init\(\) saw shape \(5, 20\)"):
        tx.update({"w": jnp.ones((3, 20)), "b": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match=r"got gradients with structure .*'w'.*but init\(\) was given params with structure .*'b'"):
        tx.update({"w": jnp.ones((5, 20))}, state)


def test_apply_if_finite_keeps_a_nan_gradient_out_of_the_learned_state():
    tx = optax.apply_if_finite(l2lgd.load_optimizer("log30"), max_consecutive_errors=3)
    params = jnp.array([0.8, -0.3])
    state = tx.init(params)
    updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, params)
    np.testing.assert_array_equal(updates, 0.0)
    updates, state = tx.update(2 * params, state, params)
    chex.assert_tree_all_finite((updates, state))


def test_the_printed_resume_command_does_not_discard_the_snapshots(tmp_path, monkeypatch):
    """The hint after a stop repeats the command that was stopped, less `--fresh` (which would
    throw away the snapshots it tells you to resume from: `ablate` starts its children with it)."""
    monkeypatch.setattr(sys, "argv", ["l2lgd", "train", "general", "--out", "runs/x", "--fresh", "--set=seed=2"])
    message = _driver._stopped_message(tmp_path, 1_200, None)
    assert message.endswith("-m l2lgd train general --out runs/x --set=seed=2"), message
