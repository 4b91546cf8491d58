"""`make bench EXP=...`: meta-training throughput, compile time and memory, against a naive loop.

The naive implementation is what one writes first: one jitted meta-step per Python call (the
batch by `vmap`, tasks drawn inside the step, `jax.grad` of the unroll). The training
program is measured with the fused meta-gradient (`estimators/_fused.py`: its default loop, and the scan
over steps) and with `jax.grad`'s. Also: the whole `l2lgd train` process of a short run, cold
(empty compilation cache) and warm, and one `update` of the shipped `log30` optimizer on a
1,000,000-coordinate leaf against optax's Adam. All run in the same process (or its children),
so the ratios are like-for-like on whatever machine runs them; the backend is printed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from ..estimators._named import estimator_for
from ..runs._experiments import load_experiment
from ..runs._shipped import list_optimizers
from .bench_devices import devices_table, format_devices
from .bench_estimators import estimator_table, format_estimators, format_members, member_table
from .bench_face import face_in_child, format_face
from ..estimators._autodiff import Autodiff
from ..estimators._fused import FusedBackprop
from ..estimators._backprop import make_task_batch
from ..training._state import init_state
from ..training._step import make_meta_step, make_train_chunk

BATCHES = (1, 32, 128, 1024)


def _time(fn, min_seconds: float) -> tuple[float, int]:
    """Calls `fn()` (which returns meta-steps done) until `min_seconds` pass."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed, done


class _Stepper:
    """Calls a compiled step on the state it carries: `advance()` runs `repeats` steps and
    returns the meta-steps (or updates) they did."""

    def __init__(self, step, state, *, repeats: int = 1, done_per_call: int = 1):
        self.step, self.state, self.repeats, self.done_per_call = step, state, repeats, done_per_call

    def advance(self) -> int:
        for _ in range(self.repeats):
            out, self.state = self.step(self.state)
        jax.block_until_ready(out)
        return self.repeats * self.done_per_call


def _chunk_speed(config, state, static, chunk: int, min_seconds: float, estimator) -> tuple[float, float]:
    """(meta-steps/s, compile seconds) of `make_train_chunk` with `estimator`."""
    train_chunk = make_train_chunk(config, static, estimator=estimator)
    t0 = time.perf_counter()
    compiled = train_chunk.lower(state, chunk).compile()
    compile_s = time.perf_counter() - t0
    stepper = _Stepper(lambda s: compiled(s)[::-1], state, done_per_call=chunk)
    stepper.advance()  # warm-up
    elapsed, done = _time(stepper.advance, min_seconds)
    return done / elapsed, compile_s


def bench_config(config, *, min_seconds: float = 3.0, chunk: int | None = None) -> dict[str, Any]:
    """Meta-steps/s and compile times of the training program (scanned chunks, fused
    meta-gradient), of the same with `jax.grad`'s meta-gradient, and of the naive loop."""
    state, static = init_state(config)
    chunk = chunk or max(1, min(1000, 20_000 // config.batch_size))
    fast, compile_s = _chunk_speed(config, state, static, chunk, min_seconds, FusedBackprop.from_config(config))
    scan, scan_compile_s = _chunk_speed(config, state, static, chunk, min_seconds, FusedBackprop.from_config(config, loop="scan"))
    autodiff, autodiff_compile_s = _chunk_speed(config, state, static, chunk, min_seconds, Autodiff.from_config(config))

    meta_step = make_meta_step(config, static, estimator=Autodiff.from_config(config))
    tasks = make_task_batch(config)
    naive_step = jax.jit(lambda s: meta_step(s, tasks(s.key, s.step)))
    t0 = time.perf_counter()
    naive_compiled = naive_step.lower(state).compile()
    naive_compile_s = time.perf_counter() - t0
    stepper = _Stepper(lambda s: naive_compiled(s)[::-1], state, repeats=max(1, chunk // 10))
    stepper.advance()
    elapsed, done = _time(stepper.advance, min_seconds)
    naive = done / elapsed
    return {
        "batch_size": config.batch_size,
        "meta_steps_per_s": fast,
        "tasks_per_s": fast * config.batch_size,
        "compile_s": compile_s,
        "naive_meta_steps_per_s": naive,
        "naive_tasks_per_s": naive * config.batch_size,
        "naive_compile_s": naive_compile_s,
        "speedup": fast / naive,
        "autodiff_meta_steps_per_s": autodiff,
        "autodiff_compile_s": autodiff_compile_s,
        "fused_speedup": fast / autodiff,
        "scan_meta_steps_per_s": scan,
        "scan_compile_s": scan_compile_s,
    }


def train_memory(experiment: str, steps: int = 2_000) -> dict[str, float]:
    """Peak resident memory and wall time of `python -m l2lgd train` (a short run), cold (an
    empty compilation cache) and warm (the same run again, into a new folder)."""
    import os
    import tempfile

    from .._process import CACHE_VARIABLE

    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, **{CACHE_VARIABLE: str(Path(tmp) / "cache")})
        for name in ("cold", "warm"):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "l2lgd", "train", experiment, "--steps", str(steps), "--out", str(Path(tmp) / name),
                 "--no-progress", "--checkpoint-every", str(max(1, steps // 2))],
                check=True, capture_output=True, env=env,
            )
            walls[name] = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"train_steps": steps, "train_wall_s": walls["cold"], "train_warm_wall_s": walls["warm"], "train_peak_rss_mb": peak / 1024}


def optax_face(n: int = 1_000_000, min_seconds: float = 2.0, optimizer: str = "log30") -> dict[str, float]:
    """ms per jitted `update` of a shipped learned optimizer and of optax's Adam on one leaf of
    `n` coordinates, and the learned one's arithmetic rate (its matrix products' FLOPs)."""
    import jax.numpy as jnp
    import optax

    from ..runs._loading import load_learned_optimizer
    from ..optimizers._optax_face import as_optax

    opt = load_learned_optimizer(optimizer)[0]
    lstm = opt.lstm
    h, features, outputs = lstm.hidden_size, lstm.in_kernel.shape[0], lstm.out_kernel.shape[1]
    flops = 2 * n * (features * h + lstm.num_layers * 2 * h * 4 * h + h * outputs)
    params = jnp.linspace(-1.0, 1.0, n)
    result = {"coordinates": n, "gflop": flops / 1e9}
    for name, tx in (("learned", as_optax(opt)), ("adam", optax.adam(1e-3))):
        update = jax.jit(tx.update)
        stepper = _Stepper(lambda s, update=update: update(params, s), tx.init(params))
        stepper.advance()
        elapsed, done = _time(stepper.advance, min_seconds)
        result[f"{name}_ms"] = 1e3 * elapsed / done
    result["learned_gflop_per_s"] = flops / 1e9 / (result["learned_ms"] / 1e3)
    return result


def run_bench(experiment: str = "log30", *, out: Path = Path("bench.json"), steps: int | None = None, batches=None,
              against: str | None = None) -> dict[str, Any]:
    """Benchmarks `experiment`: the reference's quadratics at several batch sizes (`BATCHES`), any
    other task at its own batch size; prints a table and writes JSON. `steps`: meta-steps of
    the short `l2lgd train` runs (default 2,000 on quadratics, 20 otherwise). For an
    evolution-strategies experiment, also one device against every core (`bench_devices`), and
    `against` (a commit) that commit's code beside them."""
    from tqdm.auto import tqdm

    declared = load_experiment(experiment)
    config = declared.config
    backpropagates = estimator_for(config).backpropagates
    cheap = config.task in ("quadratic", "paper_quadratic") and declared.family is None
    batches = batches or (BATCHES if cheap else (config.batch_size,))
    rows = []
    if backpropagates:  # backpropagation's programs against the naive loop
        for batch in tqdm(batches, desc="bench", unit="batch size"):
            rows.append(bench_config(config.replace(batch_size=batch), min_seconds=3.0 if batch == 1 else 5.0,
                                     chunk=None if cheap else 2 * config.truncations))
    devices = None if backpropagates else devices_table(experiment, against=against)
    if devices:  # the slowest part: kept on disk before the rest runs
        Path(out).write_text(json.dumps({"experiment": experiment, "devices": devices}, indent=1) + "\n")
    estimators = estimator_table(experiment)
    members = None if backpropagates else member_table(experiment, peak=estimators["dot_peak_gflop_per_s"])
    own = next(r for r in estimators["rows"] if r["estimator"] == config.estimator)
    if "skipped" in own:
        raise RuntimeError(f"the experiment's own estimator could not be benchmarked: {own['skipped']}")
    rate = rows[0]["meta_steps_per_s"] if backpropagates else own["meta_steps_per_s"]
    shipped = [o.name for o in list_optimizers()]
    result = {
        "experiment": experiment,
        "machine": {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "cpus": _cpus()},
        "rows": rows,
        "estimators": estimators,
        **({"devices": devices} if devices else {}),
        **({"members": members} if members else {}),
        "memory": train_memory(experiment, steps or (2_000 if cheap else 20)),
        "optax_face": optax_face(),
        "face_at_scale": face_in_child([n for n in ("log30", "digits", "general") if n in shipped]),
        "time_for_meta_steps_s": {str(config.meta_steps): config.meta_steps / rate},
    }
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(format_bench(result))
    return result


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"{result['experiment']}: meta-training throughput (backend {result['machine'].get('backend', '?')}, "
        f"{result['machine']['devices'][0]}, pinned to one of {result['machine']['cpus']} CPUs)",
        "",
    ]
    if result["rows"]:
        lines += _backprop_table(result)
    if "estimators" in result:
        lines += ["", format_estimators(result["estimators"])]
    if "members" in result:
        lines += ["", format_members(result["members"])]
    if "devices" in result:
        lines += ["", format_devices(result["devices"])]
    m = result["memory"]
    (steps, seconds), = result["time_for_meta_steps_s"].items()
    lines += [
        "",
        f"{int(steps):,} meta-steps: {seconds:.1f} s of training (excluding compilation).",
        f"`l2lgd train` ({m['train_steps']:,} meta-steps), whole process: {m['train_wall_s']:.1f} s cold (empty "
        f"compilation cache), {m['train_warm_wall_s']:.1f} s warm; peak RSS {m['train_peak_rss_mb']:.0f} MB.",
    ]
    if "optax_face" in result:
        f = result["optax_face"]
        lines.append(
            f"optax face, one jitted update on {f['coordinates']:,} coordinates: learned (log30) {f['learned_ms']:.1f} ms "
            f"({f['gflop']:.1f} GFLOP of matrix products, {f['learned_gflop_per_s']:.1f} GFLOP/s), optax adam {f['adam_ms']:.2f} ms."
        )
    if "face_at_scale" in result:
        lines += ["", format_face(result["face_at_scale"])]
    return "\n".join(lines)


def _backprop_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| batch | meta-steps/s | tasks/s | compile s | scan meta-steps/s | scan compile s "
        "| jax.grad meta-steps/s | jax.grad compile s | fused vs jax.grad | naive meta-steps/s | naive compile s | vs naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['meta_steps_per_s']:,.1f} | {r['tasks_per_s']:,.0f} | {r['compile_s']:.1f} | "
            f"{r['scan_meta_steps_per_s']:,.1f} | {r['scan_compile_s']:.1f} | "
            f"{r['autodiff_meta_steps_per_s']:,.1f} | {r['autodiff_compile_s']:.1f} | {r['fused_speedup']:.2f}x | "
            f"{r['naive_meta_steps_per_s']:,.1f} | {r['naive_compile_s']:.1f} | {r['speedup']:.2f}x |"
        )
    return lines
