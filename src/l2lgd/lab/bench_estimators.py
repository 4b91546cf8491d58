"""Meta-training throughput by estimator: optimizee steps per second of an experiment's training
program with backpropagation (the fused backward pass), PES and antithetic ES, side by side in
one process, with the FLOP count of one meta-step and the fraction of this machine's measured
dot-product peak that the program reaches.

The FLOP count is XLA's for programs without loops (XLA's `cost_analysis` counts a loop's body
once, so the training program's own count undercounts by the loop trip counts): one step of the
learned optimizer on each task's coordinates, and one loss-and-gradient of each task (one more
loss with `heldout_minibatch`), times the optimizee steps a meta-step takes of each. For
backpropagation that forward count is multiplied by 3 (a backward pass costs about twice its
forward), an estimate, marked so.

On a mixture of families (an evolution estimator), `member_table` times each member's truncation
in a program of its own, beside its FLOPs, the bytes it accesses and the operations its traced
truncation runs: where the meta-step's time goes, and how far each member is from the arithmetic's
and the memory traffic's rooflines."""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators._named import BENCHMARKED, estimator_for
from ..optimizers._kinds import make_optimizer
from ..optimizers._optax_face import as_optax
from ..runs._experiments import load_experiment
from ..tasks import draw_task, training_family
from ..tasks._mixture import FamilyMixture, members_of
from ..training._state import init_state
from ..training._step import make_train_chunk


def dot_peak_gflops(n: int = 2048, min_seconds: float = 1.0) -> float:
    """This process's float32 matrix-product rate on an n x n by n x n product, in GFLOP/s."""
    a = jnp.ones((n, n)) / n
    f = jax.jit(lambda x: x @ a)
    x = f(a).block_until_ready()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        x = f(x)
        done += 1
    x.block_until_ready()
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def elementwise_gb_s(n: int = 2**24, min_seconds: float = 1.0) -> float:
    """This process's rate of an elementwise pass over float32 arrays too large for the caches
    (x * a + b on `n` values: 8 bytes read and written a value), in GB/s: memory's rate, a
    floor under that of a small member's arrays, which stay in the caches."""
    f = jax.jit(lambda x: x * 0.999 + 1e-3, donate_argnums=0)  # in place: no fresh pages a call
    x = f(jnp.ones(n)).block_until_ready()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        x = f(x)
        done += 1
    x.block_until_ready()
    return 8 * n * done / (time.perf_counter() - start) / 1e9


# The estimators' settings in a config, each group reset together where an estimator refuses it.
SETTINGS = (("per_task_clip",), ("min_horizon", "max_horizon"), ("heldout_minibatch",))


def _variant(config, kind: str):
    """The experiment's config with estimator `kind`, keeping each of its estimator settings that
    the kind accepts (the others reset to their defaults)."""
    defaults = type(config)()
    variant = config.replace(estimator=kind, **{f: getattr(defaults, f) for group in SETTINGS for f in group})
    for group in SETTINGS:
        try:
            variant = variant.replace(**{f: getattr(config, f) for f in group})
        except ValueError:
            pass
    return variant


def optimizee_steps_per_meta_step(config, family) -> int:
    """Optimizee steps one meta-step takes: each task's truncation, times the particles."""
    return estimator_for(config).optimizee_steps(config, family)


def _costs(fn, *args) -> tuple[float, float]:
    """XLA's (FLOPs, bytes accessed) of `fn` at `args`, compiled alone (nan where XLA gives none)."""
    cost = jax.jit(lambda *a: fn(*a)).lower(*args).compile().cost_analysis()  # fn may be a module
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return tuple(float(cost.get(k, float("nan"))) if cost else float("nan") for k in ("flops", "bytes accessed"))


def meta_step_costs(config, family) -> tuple[float, float]:
    """(FLOPs, bytes accessed) of one meta-step's optimizee steps (see the module): per task, the
    optimizer's step on its coordinates plus the task's loss and gradient, times the steps taken
    of it; backpropagation's FLOPs and bytes estimated as 3 times the forward's."""
    optimizer = make_optimizer(config, key=jax.random.key(0))
    estimator = estimator_for(config)
    members = members_of(family)
    per_member = optimizee_steps_per_meta_step(config, family) // len(members)
    total = np.zeros(2)
    for _, member in members:
        loss_fn, x0, _ = draw_task(member, jax.random.key(0))
        key = jax.random.key(1)
        tx = as_optax(optimizer, num_steps=1_000)  # the face, as training runs it (any kind: horizon, params)
        step = np.array(_costs(lambda g, s, p: tx.update(g, s, p)[0], x0, tx.init(x0), x0))
        task = np.array(_costs(jax.value_and_grad(loss_fn), x0, key))
        if getattr(estimator, "heldout_minibatch", False):
            task += np.array(_costs(loss_fn, x0, key))
        total += per_member * (step + task)
    return tuple(float(x) for x in (3 * total if estimator.backpropagates else total))


def meta_step_flops(config, family) -> float:
    """FLOPs of one meta-step's optimizee steps (`meta_step_costs`)."""
    return meta_step_costs(config, family)[0]


def estimator_row(config, family, *, chunk: int = 20, min_seconds: float = 3.0, peak: float | None = None) -> dict[str, Any]:
    state, static = init_state(config, family)
    train_chunk = make_train_chunk(config, static, family)
    t0 = time.perf_counter()
    compiled = train_chunk.lower(state, chunk).compile()
    compile_s = time.perf_counter() - t0
    flops = meta_step_flops(config, family)
    state, _ = compiled(state)  # warm-up
    jax.block_until_ready(state)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        state, record = compiled(state)
        jax.block_until_ready(record)
        done += chunk
    rate = done / (time.perf_counter() - start)
    steps = optimizee_steps_per_meta_step(config, family)
    row = {"estimator": config.estimator, "meta_steps_per_s": rate, "optimizee_steps_per_meta_step": steps,
           "optimizee_steps_per_s": rate * steps, "compile_s": compile_s, "gflop_per_meta_step": flops / 1e9,
           "flops_estimated": estimator_for(config).backpropagates}
    if peak:
        row["fraction_of_peak"] = flops * rate / 1e9 / peak
    return row


def estimator_table(experiment: str, kinds=BENCHMARKED, min_seconds: float = 3.0) -> dict[str, Any]:
    declared = load_experiment(experiment)
    family = declared.family if declared.family is not None else training_family(declared.config)
    peak = dot_peak_gflops()
    rows = []
    for kind in kinds:
        config = _variant(declared.config, kind)
        try:
            rows.append(estimator_row(config, family, min_seconds=min_seconds, peak=peak))
        except ValueError as e:  # e.g. backpropagation on a mixture of families
            rows.append({"estimator": kind, "skipped": str(e)})
    return {"experiment": experiment, "dot_peak_gflop_per_s": peak, "rows": rows}


def member_table(experiment: str, *, chunk: int = 10, min_seconds: float = 2.0, peak: float | None = None) -> dict[str, Any]:
    """Where an evolution estimator's meta-step goes on a mixture (one core): each member's
    truncation timed in its own program (the experiment's config, the mixture of that member
    alone), beside its rooflines: its FLOPs at the dot peak and the bytes XLA's programs access
    at the rate of an elementwise pass (`meta_step_costs`, loop-free programs), and the
    operations its traced truncation runs (`_placement.jaxpr_cost`, before XLA fuses them). A
    member far above both rooflines is bound by the many small kernels of its steps."""
    from ..estimators._placement import jaxpr_cost

    declared = load_experiment(experiment)
    config = declared.config
    estimator = estimator_for(config)
    if estimator.backpropagates:
        raise ValueError(f"member_table times an evolution estimator's members; {experiment} uses {config.estimator!r}.")
    family = declared.family if declared.family is not None else training_family(config)
    peak = peak or dot_peak_gflops()
    bandwidth = elementwise_gb_s()
    rows = []
    for name, member in members_of(family):
        alone = FamilyMixture((member,), (name,)) if isinstance(family, FamilyMixture) else family
        state, static = init_state(config, alone)
        advance = lambda theta, own, member=member: estimator.advance(config, static, theta, own, jax.random.key(0),
                                                                        member.stochastic)
        operations, _ = jaxpr_cost(jax.make_jaxpr(advance)(state.theta, state.inner[0]).jaxpr)
        compiled = make_train_chunk(config, static, alone).lower(state, chunk).compile()
        state, _ = compiled(state)  # warm-up
        jax.block_until_ready(state)
        best, start = math.inf, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            state, record = compiled(state)
            jax.block_until_ready(record)
            best = min(best, (time.perf_counter() - t0) / chunk)
        flops, accessed = meta_step_costs(config, alone)
        rows.append({"member": name, "ms_per_meta_step": 1e3 * best, "optimizee_steps_per_meta_step":
                     optimizee_steps_per_meta_step(config, alone), "mflop_per_meta_step": flops / 1e6,
                     "gflop_per_s": flops / best / 1e9, "fraction_of_peak": flops / best / 1e9 / peak,
                     "mb_accessed": accessed / 1e6, "ms_at_elementwise_rate": accessed / bandwidth / 1e6,
                     "traced_operations": operations, "ns_per_operation": 1e9 * best / operations})
    return {"experiment": experiment, "dot_peak_gflop_per_s": peak, "elementwise_gb_per_s": bandwidth, "rows": rows}


def format_members(result: dict[str, Any]) -> str:
    rows = result["rows"]
    total = sum(r["ms_per_meta_step"] for r in rows)
    steps = sum(r["optimizee_steps_per_meta_step"] for r in rows)
    at_peak = sum(r["mflop_per_meta_step"] for r in rows) / result["dot_peak_gflop_per_s"]
    lines = [f"{result['experiment']}: where a meta-step goes, member by member (each in its own program, one core; "
             f"dot-product peak {result['dot_peak_gflop_per_s']:.0f} GFLOP/s, an elementwise pass "
             f"{result['elementwise_gb_per_s']:.1f} GB/s)", "",
             "| member | ms a meta-step | share | MFLOP a meta-step | GFLOP/s | fraction of peak | MB accessed a meta-step | "
             "ms at the elementwise rate | traced operations | ns an operation |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["ms_per_meta_step"]):
        lines.append(f"| {r['member']} | {r['ms_per_meta_step']:.2f} | {100 * r['ms_per_meta_step'] / total:.0f}% | "
                     f"{r['mflop_per_meta_step']:,.1f} | {r['gflop_per_s']:.1f} | {100 * r['fraction_of_peak']:.1f}% | "
                     f"{r['mb_accessed']:,.1f} | {r['ms_at_elementwise_rate']:.2f} | {r['traced_operations']:,} | "
                     f"{r['ns_per_operation']:.1f} |")
    traffic = sum(r["ms_at_elementwise_rate"] for r in rows)
    lines += ["", f"Members alone, summed: {total:.1f} ms a meta-step ({steps * 1e3 / total:,.0f} optimizee steps/s); "
              f"every FLOP at the dot peak: {at_peak:.1f} ms ({steps * 1e3 / at_peak:,.0f} optimizee steps/s); every "
              f"byte XLA accesses at the elementwise rate: {traffic:.1f} ms."]
    return "\n".join(lines)


def format_estimators(result: dict[str, Any]) -> str:
    lines = [f"{result['experiment']}: meta-training by estimator (one core; measured dot-product peak "
             f"{result['dot_peak_gflop_per_s']:.0f} GFLOP/s)", "",
             "| estimator | meta-steps/s | optimizee steps per meta-step | optimizee steps/s | GFLOP per meta-step | "
             "fraction of peak | compile s |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['estimator']} | — ({r['skipped']}) | | | | | |")
            continue
        lines.append(f"| {r['estimator']} | {r['meta_steps_per_s']:,.1f} | {r['optimizee_steps_per_meta_step']:,} | "
                     f"{r['optimizee_steps_per_s']:,.0f} | {r['gflop_per_meta_step']:.3f}{' (est.)' if r.get('flops_estimated') else ''} | "
                     f"{100 * r.get('fraction_of_peak', float('nan')):.1f}% | {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """`python -m l2lgd.lab.bench_estimators EXP [--members] [--core N]`: one table of `make
    bench` alone (the estimators', or with `--members` where a mixture's meta-step goes), in a
    process set up as `make bench`'s (single-threaded XLA on core N, no compilation cache)."""
    import argparse

    from .._process import configure_cpu

    parser = argparse.ArgumentParser(prog="python -m l2lgd.lab.bench_estimators")
    parser.add_argument("experiment", nargs="?", default="general")
    parser.add_argument("--members", action="store_true", help="the member table of an evolution estimator on a mixture")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args(argv)
    configure_cpu(args.core, cache=False)
    if args.members:
        print(format_members(member_table(args.experiment)))
    else:
        print(format_estimators(estimator_table(args.experiment)))


if __name__ == "__main__":
    main()
