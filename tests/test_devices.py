import os
import subprocess
import sys

SCRIPT = r"""
import jax, chex, equinox as eqx, l2lgd
from l2lgd.estimators._base import divisor_mesh
assert len(jax.devices()) == 4, jax.devices()
config = l2lgd.Config(num_steps=5, hidden_size=4, batch_size=8, preprocessing="log_rescale", objective="end_log")
state, static = l2lgd.init_state(config)
mesh = divisor_mesh(config.batch_size, "batch")
assert mesh is not None and mesh.devices.size == 4
sharded, rec4 = l2lgd.make_train_chunk(config, static, mesh=mesh)(state, 10)
single, rec1 = l2lgd.make_train_chunk(config, static, mesh=None)(state, 10)
chex.assert_trees_all_close(sharded.theta, single.theta, rtol=1e-4, atol=1e-6)
chex.assert_trees_all_close(rec4.final_log10, rec1.final_log10, rtol=1e-4, atol=1e-4)
print("OK", len(sharded.theta.lstm.in_bias.sharding.device_set))

# PES on a mixture over the devices that divide a task's pairs (2 of the 4), the chunk under
# shard_map: each member whole on one device or its pairs split, its particles gathered back in
# the one-device order at the chunk's end.
from l2lgd.tasks._mixture import FamilyMixture
family = FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.LinearRegression(4, 3.0, 8, 20)), ("quad", "linreg"))
config = l2lgd.Config(num_steps=5, hidden_size=2, num_layers=1, estimator="pes", perturbations=2, min_horizon=10,
                      max_horizon=20, heldout_minibatch=True, objective="sum_log", reparam_scale=10.0)
state, static = l2lgd.init_state(config, family)
single, rec1 = l2lgd.make_train_chunk(config, static, family, mesh=None)(state, 7)
estimation = l2lgd.make_meta_step(config, static, family=family, mesh="auto").estimation
assert estimation.mesh.devices.size == 2 and estimation.local is not None
# Balanced (each small member whole on one device) and every member's pairs split.
import dataclasses
from l2lgd.estimators._pes import PES
for balance in (True, False):
    estimator = dataclasses.replace(PES.from_config(config), balance=balance)
    assert sorted(estimator.member_placement(config, static, state.theta, family, 2)) == ([0, 1] if balance else [-1, -1])
    chunk = l2lgd.make_train_chunk(config, static, family, estimator=estimator)
    split, rec2 = chunk(chunk(state, 3)[0], 4)  # two chunks: the particles cross a chunk boundary
    chex.assert_trees_all_close(split.theta, single.theta, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(split.inner, single.inner, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(rec2.meta_loss, rec1.meta_loss[3:], rtol=1e-5, atol=1e-6)
print("PES OK")
"""


def test_four_devices_train_like_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout and "PES OK" in proc.stdout


def test_train_devices_gives_one_cpu_device_per_core():
    # `train --devices 2` configures the process this way; XLA reads no flag placed after the
    # single-thread flags, so the device count must come first (it was silently one device).
    script = ("from l2lgd._process import configure_cpu; configure_cpu([0, 1]); import jax, os; "
              "print(len(jax.devices()), len(os.sched_getaffinity(0)))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", script], env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    devices, cores = map(int, proc.stdout.split())
    assert devices == 2 and cores == min(2, len(os.sched_getaffinity(0)))


def test_a_process_pinned_to_one_core_still_knows_the_machines_cores():
    # `make bench` pins itself to one core, and its devices table then runs children on every
    # core: they choose from the cores the process had before it was pinned (it ran one device).
    script = ("import os; before = sorted(os.sched_getaffinity(0)); from l2lgd._process import configure_cpu, "
              "machine_cores; configure_cpu(0, cache=False); "
              "assert machine_cores() == before and os.sched_getaffinity(0) == {before[0]}, (machine_cores(), before); "
              "print('ok')")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "L2LGD_CORES")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
