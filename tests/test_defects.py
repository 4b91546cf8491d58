"""The adversarial pass of issue 24: what a run stores and checks of its family, x64, bad losses,
shared lock files, honest logs, one key convention, the face's shape checks and huge gradients,
and registry clashes."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2lgd
from l2lgd._errors import Mismatch
from l2lgd.runs._driver import FAMILY, validation_summary

REPO = Path(__file__).resolve().parents[1]
# A truncated config (2 truncations of 4 steps per task), tiny enough to train in seconds.
CT = l2lgd.Config(name="ct", hidden_size=2, num_layers=1, num_steps=4, horizon=8, meta_steps=6)
OPTIONS = l2lgd.RunOptions(checkpoint_every=3, validation_tasks=4, progress=False)


class BowlLoss(eqx.Module):
    scale: jax.Array
    offset: float = eqx.field(static=True)

    def __call__(self, params, key=None):
        return jnp.sum((self.scale * params) ** 2) + self.offset


class Bowls(l2lgd.TaskFamily):
    dim: int = eqx.field(static=True, default=3)
    offset: float = eqx.field(static=True, default=0.0)

    def sample(self, key):
        s_key, x_key = jax.random.split(key)
        return BowlLoss(jax.random.uniform(s_key, (self.dim,), minval=0.5, maxval=1.5), self.offset), jax.random.normal(x_key, (self.dim,))


def _digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("config", [CT, CT.replace(horizon=0)], ids=["truncated", "untruncated"])
def test_resume_with_another_family_is_refused_and_nothing_moves(tmp_path, config):
    l2lgd.train(config, tmp_path, OPTIONS, family=Bowls(dim=3))
    before = _digest(tmp_path)
    with pytest.raises(Mismatch, match="another task family"):
        l2lgd.train(config.replace(meta_steps=9), tmp_path, OPTIONS, family=Bowls(dim=5))
    assert _digest(tmp_path) == before and not (tmp_path / "damaged").exists()
    assert "Bowls(dim=3" in (tmp_path / FAMILY).read_text()


def test_snapshots_of_other_shapes_are_refused_not_set_aside(tmp_path):
    """A run folder whose family record is gone still refuses snapshots of other shapes."""
    l2lgd.train(CT, tmp_path, OPTIONS, family=Bowls(dim=3))
    (tmp_path / FAMILY).unlink()
    before = _digest(tmp_path)
    with pytest.raises(Mismatch, match="does not match"):
        l2lgd.train(CT.replace(meta_steps=9), tmp_path, OPTIONS, family=Bowls(dim=5))
    assert _digest(tmp_path) == before and not (tmp_path / "damaged").exists()


def _python(code: str, env_extra: dict, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def test_x64_loads_shipped_optimizers_and_refuses_training(tmp_path):
    code = (
        "import jax, jax.numpy as jnp, l2lgd\n"
        "tx = l2lgd.load_optimizer('log30')\n"
        "u, _ = tx.update({'w': jnp.ones(3)}, tx.init({'w': jnp.zeros(3)}))\n"
        "print(u['w'].dtype, bool(jnp.all(jnp.isfinite(u['w']))))\n"
        f"l2lgd.train(l2lgd.Config(hidden_size=2, meta_steps=2), {str(tmp_path / 'run')!r})\n"
    )
    result = _python(code, {"JAX_ENABLE_X64": "1"})
    assert "float64 True" in result.stdout, result.stderr[-2000:]
    assert "jax_enable_x64 is on" in result.stderr
    assert not (tmp_path / "run").exists()


def test_negative_losses_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="negative losses"):
        l2lgd.train(CT, tmp_path / "run", OPTIONS, family=Bowls(offset=-1.0))
    assert not (tmp_path / "run").exists()


def test_nan_validation_tasks_are_counted_and_score_as_the_worst_loss():
    class SometimesNaN(eqx.Module):
        bad: jax.Array

        def __call__(self, params, key=None):
            return jnp.where(self.bad, jnp.nan, jnp.sum(params**2))

    class Flaky(l2lgd.TaskFamily):
        def sample(self, key):
            return SometimesNaN(jax.random.uniform(key) < 0.3), jnp.ones(2)

    state, static = l2lgd.init_state(CT)
    keys = jax.random.split(jax.random.key(0), 20)
    score, bad = validation_summary(state.theta, static, CT, keys, Flaky())
    assert 0 < bad < 20 and np.isfinite(score)
    # A diverged task is the worst outcome, never left out: the score is the mean with it at float32's largest loss.
    good = validation_summary(state.theta, static, CT, keys, Bowls(dim=2))[0]
    assert score > good + bad / 20 * 30
    # A mixture one of whose members diverges on every task still has a finite score to select by.
    class AlwaysNaN(l2lgd.TaskFamily):
        horizon = 20

        def sample(self, key):
            return SometimesNaN(jnp.array(True)), jnp.ones(2)

    class TimedBowls(Bowls):
        horizon = 20

    mixture = l2lgd.FamilyMixture((TimedBowls(dim=2), AlwaysNaN()), ("bowls", "nan"))
    mixed, bad = validation_summary(state.theta, static, CT, keys, mixture)
    assert bad == 20 and np.isfinite(mixed) and mixed > 15


def test_ablation_tables_score_a_diverged_task_as_model_selection_does():
    # The ablation table of a mixture experiment left a non-finite task out (np.nanmean), so a
    # variant that diverged on half its tasks could outscore one that was merely slow.
    from l2lgd._evaluate import NON_FINITE_LOG10, scored_log10

    diverged, bad = scored_log10(np.array([1e-6, np.inf, np.nan, 1e-6], np.float32))
    slow, none = scored_log10(np.array([1e-1, 1e-1, 1e-1, 1e-1], np.float32))
    assert (bad, none) == (2, 0) and diverged == pytest.approx((2 * -6 + 2 * NON_FINITE_LOG10) / 4) and diverged > slow


def test_log10_loss_keeps_nan_and_negative_as_nan():
    out = np.asarray(l2lgd.log10_loss(jnp.array([0.0, 1e-3, jnp.nan, -1.0])))
    assert out[0] == -38.0 and out[1] == pytest.approx(-3.0) and np.isnan(out[2]) and np.isnan(out[3])


def test_a_core_lock_that_cannot_be_opened_is_not_an_error(tmp_path, monkeypatch):
    """A core's shared lock file that this user cannot open (here: a folder in its place, as a file
    of another user's would be) falls back to this user's own lock for that core."""
    from l2lgd import _process

    (tmp_path / "l2lgd-core-0.lock").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(_process, "_CORE_CLAIM", [])
    assert _process.free_core() == 0
    assert (tmp_path / f"l2lgd-core-0-{os.getuid()}.lock").is_file()
    for handle in _process._CORE_CLAIM:
        handle.close()


def test_another_users_core_lock_is_skipped(tmp_path):
    """As another user (runuser): a core lock file created by root (0644) does not block."""
    if os.geteuid() != 0 or not Path("/usr/sbin/runuser").exists():
        pytest.skip("needs root (to act as another user) and runuser")
    folder = Path(tempfile.mkdtemp(prefix="l2lgd-users-", dir="/tmp"))
    folder.chmod(0o1777)
    lock = folder / "l2lgd-core-0.lock"
    lock.write_text("")
    lock.chmod(0o644)  # root's, as another user would find it
    code = f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); from l2lgd._process import free_core; print('core', free_core())"
    python = "/usr/bin/python3"
    check = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", "import os"], capture_output=True, timeout=60)
    if check.returncode:
        pytest.skip("no interpreter that another user may run")
    result = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, TMPDIR=str(folder)), timeout=120, cwd=folder)
    if "ModuleNotFoundError" in result.stderr or "Permission denied" in result.stderr:
        pytest.skip(f"the checkout is not readable by another user: {result.stderr.strip().splitlines()[-1]}")
    assert "core 0" in result.stdout, result.stderr[-2000:]


def test_a_deterministic_family_gets_a_key_everywhere(tmp_path):
    """A family with stochastic=False whose loss uses its key trains and validates."""

    class KeyedLoss(eqx.Module):
        def __call__(self, params, key):
            return jnp.sum(params**2) * (1.0 + 0.01 * jax.random.uniform(key))

    class Keyed(l2lgd.TaskFamily):
        def sample(self, key):
            return KeyedLoss(), jax.random.normal(key, (2,))

    result = l2lgd.train(CT, tmp_path, OPTIONS, family=Keyed())
    assert np.isfinite(result.best_validation)


def test_the_face_checks_shapes_not_sizes():
    tx = l2lgd.load_optimizer("log30")
    state = tx.init({"w": jnp.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        tx.update({"w": jnp.zeros((3, 2))}, state)


@pytest.mark.parametrize("name", ["digits", "log30"])
def test_huge_gradients_never_move_uphill(name):
    tx = l2lgd.load_optimizer(name)
    g = jnp.array([1e30, -1e30, 3e38, -3e38, 1e-30, -1e-30])
    updates, _ = jax.jit(tx.update)({"w": g}, tx.init({"w": jnp.zeros(6)}))
    u = np.asarray(updates["w"])
    assert np.all(np.isfinite(u))
    assert np.all(np.sign(u[:4]) * np.sign(np.asarray(g[:4])) <= 0), u


def test_a_builtin_family_name_cannot_be_taken_and_replacing_warns():
    class Mine(l2lgd.TaskFamily):
        def sample(self, key):
            return BowlLoss(jnp.ones(2), 0.0), jnp.ones(2)

    with pytest.raises(ValueError, match="built-in"):
        l2lgd.register_task_family("quadratic")(Mine)
    assert l2lgd.tasks.TASK_FAMILIES["quadratic"] is l2lgd.Quadratics
    l2lgd.register_task_family("defects_mine")(Mine)
    with pytest.warns(UserWarning, match="replaces"):
        l2lgd.register_task_family("defects_mine")(Bowls)


def test_half_precision_empty_and_huge_are_refused_before_writing(tmp_path):
    class Half(l2lgd.TaskFamily):
        def sample(self, key):
            return BowlLoss(jnp.ones(2, jnp.bfloat16), 0.0), jnp.ones(2, jnp.bfloat16)

    class Empty(l2lgd.TaskFamily):
        def sample(self, key):
            return BowlLoss(jnp.ones(0), 0.0), jnp.ones(0)

    with pytest.raises(TypeError, match="bfloat16"):
        l2lgd.train(CT, tmp_path / "half", OPTIONS, family=Half())
    with pytest.raises(ValueError, match="no coordinates"):
        l2lgd.train(CT, tmp_path / "empty", OPTIONS, family=Empty())
    with pytest.raises(ValueError, match="GiB"):
        l2lgd.train(CT.replace(hidden_size=100_000), tmp_path / "huge", OPTIONS, family=Bowls())
    assert not any((tmp_path / name).exists() for name in ("half", "empty", "huge"))


def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path):
    (tmp_path / "config.json").write_text("my own notes\n")
    (tmp_path / "final_log10.f32").write_bytes(b"1234")
    before = _digest(tmp_path)
    with pytest.raises(ValueError, match="not an l2lgd run"):
        l2lgd.train(CT, tmp_path, OPTIONS, family=Bowls())
    assert _digest(tmp_path) == before


def test_the_api_refuses_to_train_into_a_shipped_folder():
    from l2lgd.runs._shipped import shipped_folder

    with pytest.raises(ValueError, match="shipped optimizer's folder"):
        l2lgd.train(l2lgd.Config(name="sum", hidden_size=2, meta_steps=2), shipped_folder("sum"), OPTIONS)


def test_ship_refuses_an_installed_copy(monkeypatch, tmp_path):
    from l2lgd.runs import _ship

    monkeypatch.setattr(_ship, "checkout_dir", lambda kind: None)
    with pytest.raises(FileNotFoundError, match="installed copy"):
        _ship.ship(tmp_path, "sum")


def test_a_damaged_model_card_hides_nothing(tmp_path, monkeypatch):
    from l2lgd.runs import _shipped

    root = tmp_path / "checkpoints"
    for name in ("good", "bad"):
        (root / name / "optimizer").mkdir(parents=True)
    (root / "good" / "MODEL_CARD.md").write_text("# good\nA fine optimizer.\n")
    (root / "bad" / "MODEL_CARD.md").write_bytes(b"# bad\n\xff\xfe not utf-8\n")
    monkeypatch.setattr(_shipped, "shipped_dir", lambda kind: root)
    summaries = {o.name: o.summary for o in _shipped.list_optimizers()}
    assert summaries["good"] == "A fine optimizer." and "not utf-8" in summaries["bad"]


def test_a_local_file_does_not_hide_a_shipped_optimizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "floor").write_text("not a checkpoint")
    with pytest.warns(UserWarning, match="shipped optimizer 'floor'"):
        tx = l2lgd.load_optimizer("floor")
    assert callable(tx.update)
    with pytest.raises(FileNotFoundError, match="empty path"):
        l2lgd.load_optimizer("")


def test_a_local_experiments_folder_falls_back_to_the_shipped_ones(tmp_path, monkeypatch, capsys):
    from l2lgd.runs._experiments import load_experiment

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("L2LGD_EXPERIMENTS", raising=False)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "notes.py").write_text("from l2lgd import Config\nCONFIG = Config(name='notes')\n")
    assert load_experiment("log30").config.name == "log30"
    assert "using the shipped experiment" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shipped experiments in"):
        load_experiment("nonesuch")


def test_experiment_file_errors_name_the_file_and_line(tmp_path):
    from l2lgd.runs._experiments import load_experiment

    path = tmp_path / "bad.py"
    path.write_text("from l2lgd import Config\n\nCONFIG = Config(hidden_size=-1)\n")
    with pytest.raises(ValueError, match=r"bad.py, line 3: Config.hidden_size"):
        load_experiment(str(path))
    path.write_text("from l2lgd import Config, Experiment, Quadratics\nEXPERIMENT = Experiment(config=Config(), family=Quadratics)\n")
    with pytest.raises(TypeError, match="write Quadratics"):
        load_experiment(str(path))


def test_shipped_optimizers_have_no_snapshots_to_load():
    with pytest.raises(ValueError, match="only its exported optimizer"):
        l2lgd.load_optimizer("log30", step=90_000)


def test_sigterm_to_the_seeds_parent_stops_every_child(tmp_path):
    """`--seeds 2`: SIGTERM to the parent stops both training children (no orphans)."""
    import signal
    import time

    folder = tmp_path / "exps"
    folder.mkdir()
    (folder / "slow.py").write_text("from l2lgd import Config, Experiment\nEXPERIMENT = Experiment(config=Config(name='slow', "
                                    "num_steps=4, hidden_size=2, meta_steps=10_000_000), validation_tasks=2, checkpoint_every=10_000_000)\n")
    env = dict(os.environ, L2LGD_EXPERIMENTS=str(folder), PYTHONUNBUFFERED="1")
    parent = subprocess.Popen([sys.executable, "-m", "l2lgd", "train", "slow", "--seeds", "2", "--out", str(tmp_path / "r"),
                               "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, children = time.time() + 240, []
        while time.time() < deadline:  # both children started and writing their runs
            children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
            if len(children) == 2 and len(list((tmp_path / "r").glob("seed*/config.json"))) == 2:
                break
            time.sleep(0.5)
        assert len(children) == 2
        time.sleep(1)
    finally:  # also when the assertion fails: no training left running after the test
        parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=300)
    assert parent.returncode == 128 + signal.SIGTERM, out
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid


def test_snapshots_are_scored_on_the_validation_family_when_one_is_given(tmp_path):
    """`validation_family` (the suite's validation split for `general`) chooses the snapshot: the
    recorded score is that family's, not the training family's."""
    from l2lgd._evaluate import VALIDATION_SEED, task_keys
    from l2lgd.runs._loading import load_learned_optimizer

    other = Bowls(dim=5, offset=0.25)
    result = l2lgd.train(CT, tmp_path / "run", OPTIONS, family=Bowls(dim=3), validation_family=other)
    opt, config, metrics = load_learned_optimizer(tmp_path / "run")
    theta, static = eqx.partition(opt, eqx.is_inexact_array)
    expected, _ = validation_summary(theta, static, config, task_keys(VALIDATION_SEED, OPTIONS.validation_tasks), other)
    own, _ = validation_summary(theta, static, config, task_keys(VALIDATION_SEED, OPTIONS.validation_tasks), Bowls(dim=3))
    assert result.best_validation == pytest.approx(expected, rel=1e-5) and metrics["validation_log10_final"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(own, rel=1e-3)
    with pytest.raises(TypeError, match="validation_family must be an l2lgd TaskFamily"):
        l2lgd.train(CT, tmp_path / "other", OPTIONS, family=Bowls(dim=3), validation_family="validation")
