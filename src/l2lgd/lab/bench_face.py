"""The optax face at model scale: ms per jitted `update` of each learned optimizer and of optax's
Prodigy and Adam (and each one's ratio to Adam's) on 100k, 1M and 10M coordinates, in one leaf and
spread over 100 leaves, beside the forward and backward pass of an MLP with as many parameters at
batch 128, and the optimizer state's bytes per coordinate. Run in a child process with JAX's
default threading (a user's training loop is not single-threaded as the CLI is), on the cores the
parent has: every core when run directly (`python -m l2lgd.lab.bench_face [OPTIMIZER ...]`), one
under `make bench`, which pins itself; the table says how many."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

SIZES = (100_000, 1_000_000, 10_000_000)
LEAVES = (1, 100)


def _ms(fn, state, min_seconds: float) -> float:
    """Mean ms of `state = fn(state)` (after one warm-up call), for at least `min_seconds`."""
    out, state = fn(state)
    jax.block_until_ready(out)
    done, start = 0, time.perf_counter()
    while True:
        out, state = fn(state)
        jax.block_until_ready(out)
        done += 1
        if time.perf_counter() - start >= min_seconds:
            return 1e3 * (time.perf_counter() - start) / done


def _params(n: int, leaves: int) -> dict[str, jax.Array]:
    sizes = [n // leaves + (1 if i < n % leaves else 0) for i in range(leaves)]
    return {f"w{i:03d}": jnp.linspace(-1.0, 1.0, s) for i, s in enumerate(sizes)}


def _state_bytes(state: Any, n: int) -> float:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / n


def mlp_step_ms(n: int, min_seconds: float = 1.0) -> float:
    """ms of one jitted forward and backward pass at batch 128 of an MLP 256 -> h -> h -> 10 with
    about `n` parameters (ReLU, cross-entropy)."""
    # 256 h + h^2 + 10 h ~ n
    h = int((-266 + np.sqrt(266**2 + 4 * n)) / 2)
    key = jax.random.key(0)
    k1, k2, k3, kx = jax.random.split(key, 4)
    params = {"w1": jax.random.normal(k1, (256, h)) / 16, "w2": jax.random.normal(k2, (h, h)) / np.sqrt(h),
              "w3": jax.random.normal(k3, (h, 10)) / np.sqrt(h)}
    x = jax.random.normal(kx, (128, 256))
    y = jnp.arange(128) % 10

    def loss(p):
        z = jax.nn.relu(jax.nn.relu(x @ p["w1"]) @ p["w2"]) @ p["w3"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

    grad = jax.jit(jax.grad(loss))
    return _ms(lambda p: (grad(p), p), params, min_seconds)


def face_table(optimizers=("log30", "digits"), sizes=SIZES, leaves=LEAVES, min_seconds: float = 1.0) -> dict[str, Any]:
    """Every optimizer (shipped names, plus optax Adam) at every size and leaf count."""
    from ..runs._loading import load_optimizer

    txs = {name: load_optimizer(name, num_steps=1_000) for name in optimizers}  # num_steps: for kinds that use it
    txs["prodigy"] = optax.contrib.prodigy()  # the hand-designed step `general`'s ProdigyController controls
    txs["adam"] = optax.adam(1e-3)
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"coordinates": n, "mlp_fwd_bwd_ms": mlp_step_ms(n, min_seconds)}
        for name, tx in txs.items():
            for count in leaves:
                params = _params(n, count)
                update = jax.jit(tx.update)
                state = tx.init(params)
                row[f"{name}_{count}_ms"] = _ms(lambda s, update=update, params=params: update(params, s, params), state, min_seconds)
            row[f"{name}_state_bytes_per_coordinate"] = _state_bytes(state, n)
        rows.append(row)
    import os

    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "rows": rows,
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "optimizers": list(txs)}


def face_in_child(optimizers, sizes=SIZES) -> dict[str, Any]:
    """`face_table` in a fresh Python process with JAX's default threading (all cores)."""
    import os

    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "multi_thread" not in f and "intra_op" not in f)
    out = subprocess.run([sys.executable, "-m", "l2lgd.lab.bench_face", "--json", *optimizers, "--sizes",
                          ",".join(map(str, sizes))], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def format_face(result: dict[str, Any]) -> str:
    names = result["optimizers"]
    head = "| coordinates | MLP fwd+bwd ms | " + " | ".join(f"{n} 1 leaf | {n} 100 leaves" for n in names) + " |"
    cores = result.get("cores")
    lines = [f"optax face, ms per jitted update ({result['devices'][0]}, default threading, "
             f"{'?' if cores is None else cores} core{'' if cores == 1 else 's'}):", "", head,
             "|" + "---|" * (2 + 2 * len(names))]
    for r in result["rows"]:
        cells = " | ".join(f"{r[f'{n}_1_ms']:.1f} | {r[f'{n}_100_ms']:.1f}" for n in names)
        lines.append(f"| {r['coordinates']:,} | {r['mlp_fwd_bwd_ms']:.1f} | {cells} |")
    lines += ["", "ratio to optax adam's update (same size and leaves):", "",
              "| coordinates | " + " | ".join(f"{n} 1 leaf | {n} 100 leaves" for n in names if n != "adam") + " |",
              "|" + "---|" * (1 + 2 * (len(names) - 1))]
    for r in result["rows"]:
        cells = " | ".join(f"{r[f'{n}_1_ms'] / r['adam_1_ms']:.1f}x | {r[f'{n}_100_ms'] / r['adam_100_ms']:.1f}x"
                           for n in names if n != "adam")
        lines.append(f"| {r['coordinates']:,} | {cells} |")
    last = result["rows"][-1]
    lines += ["", "optimizer state, bytes per coordinate: " + ", ".join(
        f"{n} {last[f'{n}_state_bytes_per_coordinate']:.0f}" for n in names)]
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m l2lgd.lab.bench_face")
    parser.add_argument("optimizers", nargs="*", default=["log30", "digits"])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    result = face_table(tuple(args.optimizers), tuple(int(s) for s in args.sizes.split(",")))
    print(json.dumps(result) if args.json else format_face(result))


if __name__ == "__main__":
    main()
