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
"""


def test_four_devices_train_like_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
