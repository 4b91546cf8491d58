"""Meta-training throughput of an evolution-strategies experiment (e.g. `general`'s PES on the
train mixture) on one CPU device and on several (one per core, forced host devices of one
process: `train --devices N`), and optionally under the code of another commit, side by side in
one run: each figure comes from a child process (the device count is fixed when JAX starts) that
compiles the experiment's training chunk from an empty compilation cache (cold), again from the
cache it filled (warm), then times the chunk, alternating nothing else on the machine.

The child uses only what every version of l2lgd since the PES mixtures has (`load_experiment`,
`init_state`, `make_train_chunk`), so `--against COMMIT` runs it in a `git worktree` of that
commit, on that commit's own experiment of the same name (its settings and families: the
figures compare what each version trains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._process import machine_cores

CHILD = r"""
import json, os, sys, time
experiment, devices, core, chunk, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
overrides = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if devices > 1:  # first: XLA reads no flag after `intra_op_parallelism_threads=1`
    flags = f"--xla_force_host_platform_device_count={devices} " + flags
os.environ["XLA_FLAGS"] = flags
# Pinned before JAX starts: the threads that run the devices keep the affinity they were made with.
cores = os.environ.get("L2LGD_CORES")  # the machine's cores: the parent may be pinned to one (_process.machine_cores)
cores = [int(c) for c in cores.split(",")] if cores else sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, set(cores[core:core + devices]))
import jax
assert len(jax.devices()) == devices, jax.devices()
jax.config.update("jax_compilation_cache_dir", os.environ["BENCH_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
from l2lgd.runs._experiments import load_experiment
from l2lgd.training._state import init_state
from l2lgd.training._step import make_train_chunk
from l2lgd.tasks import training_family
declared = load_experiment(experiment)
kept = overrides.pop("members", None)  # names: the mixture of those members only (another commit's families)
config = declared.config.replace(**overrides) if overrides else declared.config
family = declared.family if declared.family is not None else training_family(config)
if kept is not None:  # this code's rows only (another commit's child is given no names)
    from l2lgd.lab.bench_devices import members_named
    family = members_named(family, kept)
state, static = init_state(config, family)
compile_s = []
for _ in range(2):  # cold, then from the cache the first filled
    jax.clear_caches()
    t0 = time.perf_counter()
    train_chunk = make_train_chunk(config, static, family)
    state1, _ = train_chunk(state, chunk)
    jax.block_until_ready(state1)
    compile_s.append(time.perf_counter() - t0)
state, _ = train_chunk(state1, chunk)  # a committed state: the program of every later chunk
jax.block_until_ready(state)
rounds = []
end = time.perf_counter() + seconds
while time.perf_counter() < end or len(rounds) < 3:
    t0 = time.perf_counter()
    state, record = train_chunk(state, chunk)
    jax.block_until_ready(record)
    rounds.append((time.perf_counter() - t0) / chunk)
members = len(getattr(family, "members", (family,)))
steps = members * config.batch_size * 2 * config.perturbations * config.num_steps
best = min(rounds)
placed = {}  # each member's device, or "split" (newer code, several devices)
if devices > 1:
    try:
        from l2lgd.estimators._named import estimator_for
        from l2lgd.tasks._mixture import members_of
        owners = estimator_for(config).member_placement(config, static, state.theta, family, devices)
        placed = {name: ("split" if o < 0 else o) for (name, _), o in zip(members_of(family), owners)}
    except (ImportError, AttributeError):
        pass
# The fewest cores any thread of this process may run on (the devices' threads included).
thread_cores = min(len(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
print("BENCH" + json.dumps({"devices": devices, "thread_cores": thread_cores, "meta_steps_per_s": 1 / best, "optimizee_steps_per_s": steps / best,
                            "optimizee_steps_per_meta_step": steps, "compile_cold_s": compile_s[0],
                            "compile_warm_s": compile_s[1], "members": members, "names": list(getattr(family, "names", ())),
                            "optimizer": getattr(config, "kind", "lstm"), "placement": placed}))
"""


def members_named(family, names):
    """The mixture of `family`'s members named in `names` (in the mixture's order): another
    commit's train families, where this experiment's mixture has them all."""
    from ..tasks._mixture import FamilyMixture

    missing = set(names) - set(family.names)
    if missing:
        raise ValueError(f"the mixture has no member named {', '.join(sorted(missing))}; it has {', '.join(family.names)}.")
    kept = [(n, m) for n, m in zip(family.names, family.members) if n in names]
    return FamilyMixture(tuple(m for _, m in kept), tuple(n for n, _ in kept))


def child_speed(experiment: str, devices: int, *, source: Path | None = None, core: int = 0, chunk: int = 10,
                seconds: float = 20.0, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One child process's figures (see the module) for `experiment` on `devices` CPU devices
    (cores `core`...), under this l2lgd or the one in `source` (a checkout's root); `overrides`:
    config fields changed from the experiment's (e.g. another kind of optimizer)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, BENCH_CACHE=cache)
        cwd = None
        if source is not None:
            env["PYTHONPATH"] = str(Path(source) / "src")
            env.pop("L2LGD_EXPERIMENTS", None)
            cwd = str(source)
        extra = [json.dumps(overrides)] if overrides else []
        proc = subprocess.run([sys.executable, "-c", CHILD, experiment, str(devices), str(core), str(chunk), str(seconds),
                               *extra],
                              capture_output=True, text=True, env=env, cwd=cwd)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"the benchmark child ({experiment}, {devices} devices{f', {source}' if source else ''}) "
                           f"failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("BENCH"):])


def kind_variants(experiment: str) -> dict[str, dict[str, Any]]:
    """The experiment's ablations that change the kind of learned optimizer (name: overrides):
    the other kinds whose own meta-training throughput the bench measures beside the experiment's."""
    from ..runs._experiments import load_experiment

    return {name: dict(changes) for name, changes in (load_experiment(experiment).ablations or {}).items()
            if "kind" in changes}


def devices_table(experiment: str, *, devices: int | None = None, against: str | None = None,
                  seconds: float = 20.0, kinds: bool = True) -> dict[str, Any]:
    """This code on one device and on `devices` (default: every core); with `kinds`, the same
    for each other kind of optimizer the experiment's ablations name (`kind_variants`); and, with
    `against` (a commit), that commit's code on one device, then this code on that commit's
    families where the experiment's mixture has them all and more (the same tasks, side by side);
    the rows in that order."""
    devices = devices or len(machine_cores())  # every core, also when this process is pinned to one
    variants = {"": {}, **(kind_variants(experiment) if kinds else {})}
    rows = []
    for overrides in variants.values():
        for count in (1, devices) if devices > 1 else (1,):
            rows.append(dict(child_speed(experiment, count, seconds=seconds, overrides=overrides), code="this",
                             variant=", ".join(f"{k}={v!r}" for k, v in overrides.items())))
    if against:
        root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                   check=True).stdout.strip())
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), against],
                           capture_output=True, text=True, check=True)
            try:
                rows.append(dict(child_speed(experiment, 1, source=tree, seconds=seconds), code=against))
            finally:
                subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)
        theirs, ours = rows[-1].get("names") or [], rows[0].get("names") or []
        if theirs and theirs != ours and set(theirs) <= set(ours):  # the same tasks as that commit trains on
            rows.append(dict(child_speed(experiment, 1, seconds=seconds, overrides={"members": theirs}), code="this",
                             variant=f"{against}'s families"))
    return {"experiment": experiment, "rows": rows}


def format_devices(result: dict[str, Any]) -> str:
    base = result["rows"][0]["optimizee_steps_per_s"]
    lines = [f"{result['experiment']}: evolution-strategies meta-training by CPU devices (one per core, one process; "
             "each figure the best of its chunks, compiled cold then warm in its own process)", "",
             "| code | optimizer | changes | families | devices | meta-steps/s | optimizee steps/s | vs this code on 1 device "
             "| vs its kind on 1 device | compile cold s | compile warm s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    one_device = {}
    for r in result["rows"]:
        own = one_device.setdefault((r["code"], r.get("variant", "")), r["optimizee_steps_per_s"])
        lines.append(f"| {r['code']} | {r['optimizer']} | {r.get('variant') or '-'} | {r['members']} | {r['devices']} | "
                     f"{r['meta_steps_per_s']:.2f} | {r['optimizee_steps_per_s']:,.0f} | {r['optimizee_steps_per_s'] / base:.2f}x | "
                     f"{r['optimizee_steps_per_s'] / own:.2f}x | {r['compile_cold_s']:.1f} | {r['compile_warm_s']:.1f} |")
    other = next((r for r in result["rows"] if r["code"] != "this"), None)
    same = next((r for r in result["rows"] if r["code"] == "this" and other and r.get("variant") == f"{other['code']}'s families"), None)
    if same:
        lines += ["", f"On {other['code']}'s {other['members']} families, one device: this code "
                      f"{same['optimizee_steps_per_s']:,.0f} optimizee steps/s, {other['code']}'s "
                      f"{other['optimizee_steps_per_s']:,.0f}: {same['optimizee_steps_per_s'] / other['optimizee_steps_per_s']:.2f}x; "
                      f"on every family of this experiment: {base / other['optimizee_steps_per_s']:.2f}x."]
    placed = next((r["placement"] for r in result["rows"] if r.get("placement")), None)
    if placed:  # the experiment's own kind's first row on several devices (`estimators._placement`)
        by = {}
        for name, where in placed.items():
            by.setdefault(f"device {where}" if where != "split" else "split over the devices", []).append(name)
        lines += ["", "Members on several devices: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(by.items()))]
    return "\n".join(lines)
