import json
import os
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

import l2lgd
from l2lgd.runs._snapshots import RunCheckpoints
from l2lgd import RunOptions, train

TINY_EXPERIMENT = '''
from l2lgd import Config
CONFIG = Config(name="tiny", num_steps=5, hidden_size=4, meta_steps=60)
'''
# PES over persistent particles: its state (the particles in flight) is the estimator's own.
TINY_PES_EXPERIMENT = '''
from l2lgd import Config
CONFIG = Config(name="tiny", num_steps=5, horizon=10, hidden_size=2, num_layers=1, estimator="pes", perturbations=2,
                meta_steps=200)
'''


def _run(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "l2lgd", "train", "tiny", *args], env=env, **kw)


@pytest.mark.parametrize("experiment, steps", [(TINY_EXPERIMENT, 60), (TINY_PES_EXPERIMENT, 200)], ids=["fused", "pes"])
def test_kill_and_resume_gives_the_uninterrupted_result(tmp_path, experiment, steps):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tiny.py").write_text(experiment)
    env = dict(os.environ, L2LGD_EXPERIMENTS=str(tmp_path / "exps"))
    common = ["--checkpoint-every", "10", "--no-progress"]
    assert _run(["--out", str(tmp_path / "whole"), *common], env).wait() == 0

    killed = tmp_path / "killed"
    proc = _run(["--out", str(killed), *common], env)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "snapshots" / "20").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "optimizer").exists(), "the run finished before it could be killed"
    assert _run(["--out", str(killed), *common], env).wait() == 0

    whole_state, _ = RunCheckpoints(tmp_path / "whole").restore(steps)
    killed_state, _ = RunCheckpoints(killed).restore(steps)
    chex.assert_trees_all_equal(whole_state, killed_state)
    whole_record, killed_record = l2lgd.load_record(tmp_path / "whole"), l2lgd.load_record(killed)
    assert whole_record.shape == killed_record.shape == (steps,)
    np.testing.assert_array_equal(whole_record, killed_record)


def test_resume_refuses_a_changed_config(tmp_path, tiny):
    options = RunOptions(checkpoint_every=10, progress=False, validation_tasks=8)
    train(tiny.replace(meta_steps=10), tmp_path, options)
    # More meta-steps is a resume...
    result = train(tiny.replace(meta_steps=20), tmp_path, options)
    assert int(result.state.step) == 20
    # ...but not with snapshots scored on other tasks: model selection would compare unlike scores.
    with pytest.raises(ValueError, match=r"scored on 8 validation tasks, not the 4 asked for"):
        train(tiny.replace(meta_steps=30), tmp_path, RunOptions(checkpoint_every=10, progress=False, validation_tasks=4))
    # ...anything else is refused, naming the fields.
    with pytest.raises(ValueError, match=r"hidden_size: 4 -> 8.*seed: 0 -> 1"):
        train(tiny.replace(meta_steps=30, hidden_size=8, seed=1), tmp_path, options)
    result = train(tiny.replace(meta_steps=10, seed=1), tmp_path, RunOptions(checkpoint_every=10, progress=False, validation_tasks=8, fresh=True))
    assert int(result.state.step) == 10 and result.config.seed == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = l2lgd.Config(name="tiny", num_steps=5, hidden_size=4, meta_steps=20, preprocessing="log_rescale")
    train(config, run_dir, RunOptions(checkpoint_every=10, progress=False, validation_tasks=16))
    return run_dir


def test_export_holds_the_best_snapshot(trained):
    opt, config, metrics = l2lgd.load_learned_optimizer(trained)
    steps = [10, 20]
    scores = [RunCheckpoints(trained).metrics(s)["validation_log10_final"] for s in steps]
    assert metrics["step"] == steps[int(np.argmin(scores))]
    snapshot, _, _ = l2lgd.load_learned_optimizer(trained, step=metrics["step"])
    chex.assert_trees_all_equal(opt, snapshot)
    assert config.preprocessing == "log_rescale"


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        l2lgd.load_optimizer(tmp_path / "nowhere")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not an l2lgd checkpoint"):
        l2lgd.load_optimizer(tmp_path)


def test_corrupt_config_names_the_file(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    step_dir = next((run / "optimizer").iterdir())
    (step_dir / "config" / "metadata").write_text('{"format_version": 1, "conf')
    with pytest.raises(ValueError, match=r"config/metadata is truncated or corrupt"):
        l2lgd.load_optimizer(run)


def test_corrupt_weights_name_the_item(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    step_dir = next((run / "optimizer").iterdir())
    for f in (step_dir / "weights").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    with pytest.raises(ValueError, match=r"weights is truncated or corrupt"):
        l2lgd.load_optimizer(run)


def test_other_format_version_names_both(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    meta = next((run / "optimizer").iterdir()) / "config" / "metadata"
    data = json.loads(meta.read_text())
    data["format_version"] = 99
    meta.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"format version 99.*format version 1"):
        l2lgd.load_optimizer(run)


def test_config_that_does_not_match_the_weights(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    meta = next((run / "optimizer").iterdir()) / "config" / "metadata"
    data = json.loads(meta.read_text())
    data["config"]["hidden_size"] = 7
    meta.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"does not match the weights.*\(1, 7\).*\(1, 4\)"):
        l2lgd.load_optimizer(run)


def test_a_restored_state_lowers_like_a_fresh_one(trained):
    """Restored arrays are uncommitted, as a fresh state's are: jit lowers a resumed run's
    programs exactly as the uninterrupted run's, so the persistent cache serves the resume."""
    import jax

    state, config = RunCheckpoints(trained).restore(10)
    fresh, _ = l2lgd.init_state(config)
    assert not any(x.committed for x in jax.tree.leaves(state))
    step = lambda s: jax.tree.map(lambda x: x * 2, s)
    assert jax.jit(step).lower(state).as_text() == jax.jit(step).lower(fresh).as_text()
    exported, _, _ = l2lgd.load_learned_optimizer(trained)  # an export loads the same way
    assert not any(x.committed for x in jax.tree.leaves(exported) if isinstance(x, jax.Array))
