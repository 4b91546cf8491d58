"""`make bench`: meta-training throughput, compile time and memory, against a naive loop.

The naive implementation is what one writes first: one jitted meta-step per Python call (the
batch by `vmap`, problems drawn inside the step, `jax.grad` of the unroll). The training
program with `jax.grad`'s meta-gradient instead of the fused one (`_fused.py`) is measured too.
All run in the same process, so the ratios are like-for-like on whatever machine runs them.
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

from ._experiments import load_experiment
from ._meta import init_state, make_meta_step, make_problem_batch, make_train_chunk

BATCHES = (1, 32, 128, 1024)


def _time(fn, min_seconds: float) -> tuple[float, int]:
    """Calls `fn()` (which returns meta-steps done) until `min_seconds` pass."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed, done


def _chunk_speed(config, state, static, chunk: int, min_seconds: float, fused: bool) -> tuple[float, float]:
    """(meta-steps/s, compile seconds) of `make_train_chunk` with the fused or autodiff meta-gradient."""
    train_chunk = make_train_chunk(config, static, fused=fused)
    t0 = time.perf_counter()
    compiled = train_chunk.lower(state, chunk).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run_chunk():
        holder["state"], rec = compiled(holder["state"])
        jax.block_until_ready(rec)
        return chunk

    run_chunk()  # warm-up
    elapsed, done = _time(run_chunk, min_seconds)
    return done / elapsed, compile_s


def bench_config(config, *, min_seconds: float = 3.0, chunk: int | None = None) -> dict[str, Any]:
    """Meta-steps/s and compile times of the training program (scanned chunks, fused
    meta-gradient), of the same with `jax.grad`'s meta-gradient, and of the naive loop."""
    state, opt = init_state(config)
    static = eqx.filter(opt, eqx.is_array, inverse=True)
    chunk = chunk or max(1, min(1000, 20_000 // config.batch_size))
    fast, compile_s = _chunk_speed(config, state, static, chunk, min_seconds, fused=True)
    autodiff, _ = _chunk_speed(config, state, static, chunk, min_seconds, fused=False)
    holder = {}

    meta_step = make_meta_step(config, static, fused=False)
    problems = make_problem_batch(config)
    naive_step = jax.jit(lambda s: meta_step(s, problems(s.key, s.step)))
    t0 = time.perf_counter()
    naive_compiled = naive_step.lower(state).compile()
    naive_compile_s = time.perf_counter() - t0
    holder["naive"] = state

    def run_naive():
        for _ in range(max(1, chunk // 10)):
            holder["naive"], rec = naive_compiled(holder["naive"])
        jax.block_until_ready(rec)
        return max(1, chunk // 10)

    run_naive()
    elapsed, done = _time(run_naive, min_seconds)
    naive = done / elapsed
    return {
        "batch_size": config.batch_size,
        "meta_steps_per_s": fast,
        "problems_per_s": fast * config.batch_size,
        "compile_s": compile_s,
        "naive_meta_steps_per_s": naive,
        "naive_problems_per_s": naive * config.batch_size,
        "naive_compile_s": naive_compile_s,
        "speedup": fast / naive,
        "autodiff_meta_steps_per_s": autodiff,
        "fused_speedup": fast / autodiff,
    }


def train_memory(experiment: str, steps: int = 2_000) -> dict[str, float]:
    """Peak resident memory and wall time of `python -m l2lgd train` (a short run)."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "l2lgd", "train", experiment, "--steps", str(steps), "--out", out,
             "--no-progress", "--checkpoint-every", "1000"],
            check=True, capture_output=True,
        )
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"train_steps": steps, "train_wall_s": wall, "train_peak_rss_mb": max(peak, before) / 1024}


def run_bench(experiment: str = "log30", *, out: Path = Path("bench.json"), steps: int = 3_000, batches=BATCHES) -> dict[str, Any]:
    """Benchmarks `experiment` at several batch sizes; prints a table and writes JSON."""
    from tqdm.auto import tqdm

    config = load_experiment(experiment).CONFIG
    rows = []
    for batch in tqdm(batches, desc="bench", unit="batch size"):
        rows.append(bench_config(config.replace(batch_size=batch), min_seconds=3.0 if batch == 1 else 5.0))
    result = {
        "experiment": experiment,
        "machine": {"devices": [str(d) for d in jax.devices()], "cpus": _cpus()},
        "rows": rows,
        "memory": train_memory(experiment),
        "time_for_meta_steps_s": {str(config.meta_steps): config.meta_steps / rows[0]["meta_steps_per_s"]},
    }
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(format_bench(result))
    return result


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"{result['experiment']}: meta-training throughput ({result['machine']['devices'][0]}, pinned to one of {result['machine']['cpus']} CPUs)",
        "",
        "| batch | meta-steps/s | problems/s | compile s | jax.grad meta-steps/s | fused vs jax.grad "
        "| naive meta-steps/s | naive compile s | vs naive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['meta_steps_per_s']:,.0f} | {r['problems_per_s']:,.0f} | {r['compile_s']:.1f} | "
            f"{r['autodiff_meta_steps_per_s']:,.0f} | {r['fused_speedup']:.2f}x | "
            f"{r['naive_meta_steps_per_s']:,.0f} | {r['naive_compile_s']:.1f} | {r['speedup']:.2f}x |"
        )
    m = result["memory"]
    (steps, seconds), = result["time_for_meta_steps_s"].items()
    lines += [
        "",
        f"{int(steps):,} meta-steps at batch 1: {seconds:.1f} s of training (excluding compilation).",
        f"`l2lgd train` ({m['train_steps']:,} meta-steps): peak RSS {m['train_peak_rss_mb']:.0f} MB, wall {m['train_wall_s']:.1f} s.",
    ]
    return "\n".join(lines)
