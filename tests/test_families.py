"""User-defined task families through `l2lgd.train`, shipped optimizers by name, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2lgd
from l2lgd.tasks import _base as _tasks

REPO = Path(__file__).resolve().parents[1]
OPTIONS = l2lgd.RunOptions(checkpoint_every=5, progress=False, validation_tasks=4)


class Bowl(eqx.Module):
    a: jax.Array

    def __call__(self, params, key=None):
        return jnp.sum(self.a * params["x"] ** 2) + jnp.sum(params["y"] ** 2)


class Bowls(l2lgd.TaskFamily):
    """A user's family, never registered: a pytree of params, deterministic."""

    def sample(self, key):
        a = jax.random.uniform(key, (3,), minval=0.5, maxval=1.5)
        return Bowl(a), {"x": jnp.ones(3), "y": jnp.full((2,), 0.5)}


CONFIG = l2lgd.Config(name="bowls", num_steps=4, hidden_size=4, batch_size=2, preprocessing="moments", objective="sum_log", meta_steps=10)


def _load_in_fresh_process(path):
    """The exported optimizer's weights, loaded where the family's code does not exist."""
    code = (
        "import sys, jax, numpy as np, l2lgd\n"
        "opt, config, _ = l2lgd.load_learned_optimizer(sys.argv[1])\n"
        "print(config.task, float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(opt))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    task, total = proc.stdout.split()
    return task, float(total)


def test_a_user_family_trains_exports_and_loads_without_its_code(tmp_path):
    result = l2lgd.train(CONFIG, tmp_path / "run", OPTIONS, family=Bowls())
    assert result.config.task == "Bowls" and int(result.state.step) == 10
    opt, config, _ = l2lgd.load_learned_optimizer(tmp_path / "run")
    task, total = _load_in_fresh_process(tmp_path / "run")
    assert task == "Bowls"
    np.testing.assert_allclose(total, sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(eqx.filter(opt, eqx.is_array))), rtol=1e-6)
    # It lowers the family's loss on held-out tasks.
    losses = l2lgd.run_optimizer(l2lgd.load_optimizer(tmp_path / "run"), config, l2lgd.task_keys(l2lgd.TEST_SEED, 8), family=Bowls())
    assert losses.shape == (8, 4) and np.all(losses[:, -1] < losses[:, 0])


def test_a_user_family_with_truncated_unrolls_resumes_like_an_uninterrupted_run(tmp_path):
    config = CONFIG.replace(horizon=8, meta_steps=10)
    l2lgd.train(config.replace(meta_steps=5), tmp_path / "resumed", OPTIONS, family=Bowls())
    resumed = l2lgd.train(config, tmp_path / "resumed", OPTIONS, family=Bowls())
    straight = l2lgd.train(config, tmp_path / "straight", OPTIONS, family=Bowls())
    chex.assert_trees_all_equal(resumed.state.theta, straight.state.theta)
    chex.assert_trees_all_equal(resumed.state.inner.params, straight.state.inner.params)
    # The carried tasks are the user's, not a built-in family's.
    assert set(resumed.state.inner.params) == {"x", "y"}


def test_an_experiment_file_anywhere_defines_its_own_family(tmp_path):
    exp = tmp_path / "elsewhere" / "my_bowls.py"
    exp.parent.mkdir()
    exp.write_text(
        "import equinox as eqx, jax, jax.numpy as jnp, l2lgd\n"
        "class Loss(eqx.Module):\n"
        "    s: jax.Array\n"
        "    def __call__(self, x, key=None):\n"
        "        return jnp.sum((self.s * x) ** 2)\n"
        "class Lines(l2lgd.TaskFamily):\n"
        "    def sample(self, key):\n"
        "        return Loss(jax.random.uniform(key, (4,), minval=0.5, maxval=2.0)), jnp.ones(4)\n"
        "FAMILY = Lines()\n"
        "CONFIG = l2lgd.Config(name='my_bowls', num_steps=3, hidden_size=4, meta_steps=4)\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "l2lgd", "train", str(exp), "--out", str(out), "--checkpoint-every", "2", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["task"] == "Lines"
    assert _load_in_fresh_process(out)[0] == "Lines"


class IntParams(l2lgd.TaskFamily):
    def sample(self, key):
        return Bowl(jnp.ones(3)), {"x": jnp.ones(3, jnp.int32), "y": jnp.ones(2)}


class Squares(eqx.Module):
    def __call__(self, p, key=None):
        return p**2


class VectorLoss(l2lgd.TaskFamily):
    def sample(self, key):
        return Squares(), jnp.ones(3)


class LambdaLoss(l2lgd.TaskFamily):
    def sample(self, key):
        return (lambda p, key=None: jnp.sum(p**2)), jnp.ones(3)


def test_bad_families_fail_before_training_naming_the_problem(tmp_path):
    with pytest.raises(TypeError, match=r"IntParams.sample returns params0 whose leaf \['x'\] has dtype int32; expected floating"):
        l2lgd.train(CONFIG, tmp_path / "a", OPTIONS, family=IntParams())
    with pytest.raises(ValueError, match=r"VectorLoss's loss_fn\(params, key\) returns float32\[3\]; expected a floating scalar"):
        l2lgd.train(CONFIG, tmp_path / "b", OPTIONS, family=VectorLoss())
    with pytest.raises(TypeError, match="returns a loss_fn of type function; expected an eqx.Module"):
        l2lgd.train(CONFIG, tmp_path / "d", OPTIONS, family=LambdaLoss())
    with pytest.raises(TypeError, match="Expected an l2lgd.TaskFamily"):
        l2lgd.train(CONFIG, tmp_path / "c", OPTIONS, family=lambda key: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"Config.task='bowls' is not one of 'quadratic', 'paper_quadratic', 'digits'"):
        l2lgd.Config(task="bowls")


def test_a_registered_family_is_named_in_a_config():
    @l2lgd.register_task_family("test_bowls")
    class Registered(Bowls):
        pass

    try:
        config = l2lgd.Config(task="test_bowls")
        assert isinstance(_tasks.task_family(config), Registered)
    finally:
        del _tasks.TASK_FAMILIES["test_bowls"]
    with pytest.raises(TypeError, match="expects a TaskFamily subclass"):
        l2lgd.register_task_family("x")(int)


def test_shipped_optimizers_by_name():
    names = [o.name for o in l2lgd.list_optimizers()]
    shipped = sorted(p.name for p in (REPO / "checkpoints").iterdir() if (p / "optimizer").is_dir())
    assert names == shipped and "log30" in names
    assert all(o.summary.startswith("Trained on") for o in l2lgd.list_optimizers())
    by_name = l2lgd.load_learned_optimizer("log30")[0]
    by_path = l2lgd.load_learned_optimizer(REPO / "checkpoints" / "log30")[0]
    chex.assert_trees_all_equal(eqx.filter(by_name, eqx.is_array), eqx.filter(by_path, eqx.is_array))
    with pytest.raises(FileNotFoundError, match=r"no shipped optimizer named 'log31'\. Shipped optimizers: .*log30"):
        l2lgd.load_optimizer("log31")


def test_a_wheel_installed_elsewhere_finds_the_shipped_optimizers_and_experiments(tmp_path):
    """A non-editable install (the wheel, into its own folder) used from an empty folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("l2lgd-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        check=True, capture_output=True,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    code = (
        "import sys, jax, numpy as np, l2lgd\n"
        "assert l2lgd.__file__.startswith(sys.argv[1]), l2lgd.__file__\n"
        "print(','.join(o.name for o in l2lgd.list_optimizers()))\n"
        "opt = l2lgd.load_learned_optimizer('log30')[0]\n"
        "print(float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(opt))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], env=env, cwd=empty, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names, total = proc.stdout.split()
    assert names.split(",") == [o.name for o in l2lgd.list_optimizers()]
    here = l2lgd.load_learned_optimizer("log30")[0]
    assert float(total) == pytest.approx(sum(float(np.abs(np.asarray(x)).sum()) for x in jax.tree.leaves(eqx.filter(here, eqx.is_array))), rel=1e-6)
    listing = subprocess.run([sys.executable, "-m", "l2lgd", "list"], env=env, cwd=empty, capture_output=True, text=True)
    assert listing.returncode == 0 and "log30" in listing.stdout and "Trained on" in listing.stdout
    train = subprocess.run(
        [sys.executable, "-m", "l2lgd", "train", "sum", "--out", "run", "--steps", "4", "--checkpoint-every", "2",
         "--set", "num_steps=3", "--no-progress"],
        env=env, cwd=empty, capture_output=True, text=True,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert (empty / "run" / "optimizer").is_dir()


@pytest.mark.parametrize("script", ["custom_task.py", "use_pretrained.py"])
def test_examples_run_in_quick_mode(script, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), "--quick"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if script == "custom_task.py":
        assert "learned: mean final loss" in proc.stdout and "adam (lr" in proc.stdout
    else:
        assert "loss on all 1797 images after 10 steps" in proc.stdout
