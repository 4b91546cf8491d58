"""JAX's own multi-process runtime: `python -m l2lgd train` in 2 processes on localhost (CPU
collectives over gloo) trains a tiny config with the batch split across them (backpropagation) or
each task's antithetic pairs split across them (PES), and gets the single-process result."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import l2lgd

EXPERIMENTS = {
    "fused": (
        "from l2lgd import Config\n"
        "CONFIG = Config(name='tiny', num_steps=5, hidden_size=4, batch_size=8, meta_steps=20,\n"
        "                preprocessing='log_rescale', objective='end_log')\n"
    ),
    # A mixture of two families, as `general` trains: PES with random horizons, each step's loss
    # on another minibatch, rescaled tasks.
    "pes": (
        "import l2lgd\n"
        "from l2lgd import Config, Experiment\n"
        "from l2lgd.tasks._mixture import FamilyMixture\n"
        "EXPERIMENT = Experiment(\n"
        "    config=Config(name='tiny', num_steps=5, hidden_size=2, num_layers=1, estimator='pes', perturbations=2,\n"
        "                  min_horizon=10, max_horizon=20, heldout_minibatch=True, objective='sum_log',\n"
        "                  reparam_scale=10.0, meta_steps=20),\n"
        "    family=FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.LinearRegression(4, 3.0, 8, 20)),\n"
        "                         ('quad', 'linreg')),\n"
        "    validation_tasks=2,\n"
        ")\n"
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(out, env):
    return [sys.executable, "-m", "l2lgd", "train", "tiny", "--out", str(out), "--no-progress", "--checkpoint-every", "10"]


@pytest.mark.parametrize("estimator", list(EXPERIMENTS))
def test_two_processes_train_like_one(tmp_path, estimator):
    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tiny.py").write_text(EXPERIMENTS[estimator])
    env = dict(os.environ, JAX_PLATFORMS="cpu", L2LGD_EXPERIMENTS=str(tmp_path / "exps"))
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compiles in half the time (see conftest)
    port = str(_free_port())
    workers = [
        subprocess.Popen(_train(tmp_path / "two", env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(env, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", L2LGD_NUM_PROCESSES="2", L2LGD_PROCESS_ID=str(i)))
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "process 1 of 2 ran 20 meta-steps" in outputs[1][0]
    one = subprocess.run(_train(tmp_path / "one", env), env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    split, single = l2lgd.load_learned_optimizer(tmp_path / "two"), l2lgd.load_learned_optimizer(tmp_path / "one")
    assert split[2]["step"] == single[2]["step"] and split[2]["selected_from"] == [10, 20]
    # Equal to float32 rounding: the all-reduce sums the two halves' meta-gradients in another
    # order than one process's mean over the whole batch.
    for a, b in zip(jax.tree.leaves(split[0]), jax.tree.leaves(single[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(split[2]["validation_log10_final"], single[2]["validation_log10_final"], rtol=1e-4)
    records = [np.fromfile(tmp_path / name / "final_log10.f32", dtype="<f4") for name in ("two", "one")]
    np.testing.assert_allclose(records[0], records[1], rtol=1e-4, atol=1e-5)
