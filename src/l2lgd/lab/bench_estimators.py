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
in a program of its own, beside its FLOPs and the operations its traced truncation runs: where the
meta-step's time goes, and which members are bound by arithmetic and which by many small kernels."""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp

from ..estimators._named import BENCHMARKED, estimator_for
from ..optimizers._kinds import make_optimizer
from ..optimizers._optax_face import as_optax
from ..runs._experiments import load_experiment
from ..tasks import draw_task, training_family
from ..tasks._mixture import members_of
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


def _flops(fn, *args) -> float:
    """XLA's FLOP count of `fn` at `args`, compiled alone (nan where XLA gives none)."""
    cost = jax.jit(lambda *a: fn(*a)).lower(*args).compile().cost_analysis()  # fn may be a module
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def meta_step_flops(config, family) -> float:
    """FLOPs of one meta-step's optimizee steps (see the module): per task, the optimizer's step
    on its coordinates plus the task's loss and gradient, times the steps taken of it."""
    optimizer = make_optimizer(config, key=jax.random.key(0))
    estimator = estimator_for(config)
    members = members_of(family)
    per_member = optimizee_steps_per_meta_step(config, family) // len(members)
    total = 0.0
    for _, member in members:
        loss_fn, x0, _ = draw_task(member, jax.random.key(0))
        key = jax.random.key(1)
        tx = as_optax(optimizer, num_steps=1_000)  # the face, as training runs it (any kind: horizon, params)
        step = _flops(lambda g, s, p: tx.update(g, s, p)[0], x0, tx.init(x0), x0)
        task = _flops(jax.value_and_grad(loss_fn), x0, key)
        if getattr(estimator, "heldout_minibatch", False):
            task += _flops(loss_fn, x0, key)
        total += per_member * (step + task)
    return 3 * total if estimator.backpropagates else total


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
    alone), its FLOPs (`meta_step_flops`), and the operations and bytes its traced truncation
    writes (`_placement.jaxpr_cost`, before XLA fuses them): a member far below the dot peak with
    a few nanoseconds an operation is bound by its many small kernels, not by arithmetic."""
    from ..estimators._placement import jaxpr_cost
    from ..tasks._mixture import FamilyMixture

    declared = load_experiment(experiment)
    config = declared.config
    estimator = estimator_for(config)
    if estimator.backpropagates:
        raise ValueError(f"member_table times an evolution estimator's members; {experiment} uses {config.estimator!r}.")
    family = declared.family if declared.family is not None else training_family(config)
    peak = peak or dot_peak_gflops()
    rows = []
    for name, member in members_of(family):
        alone = FamilyMixture((member,), (name,)) if isinstance(family, FamilyMixture) else family
        state, static = init_state(config, alone)
        advance = lambda theta, own, member=member: estimator.advance(config, static, theta, own, jax.random.key(0),
                                                                        member.stochastic)
        operations, written = jaxpr_cost(jax.make_jaxpr(advance)(state.theta, state.inner[0]).jaxpr)
        compiled = make_train_chunk(config, static, alone).lower(state, chunk).compile()
        state, _ = compiled(state)  # warm-up
        jax.block_until_ready(state)
        best, start = math.inf, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            state, record = compiled(state)
            jax.block_until_ready(record)
            best = min(best, (time.perf_counter() - t0) / chunk)
        flops = meta_step_flops(config, alone)
        rows.append({"member": name, "ms_per_meta_step": 1e3 * best, "optimizee_steps_per_meta_step":
                     optimizee_steps_per_meta_step(config, alone), "mflop_per_meta_step": flops / 1e6,
                     "gflop_per_s": flops / best / 1e9, "fraction_of_peak": flops / best / 1e9 / peak,
                     "traced_operations": operations, "mb_written": written / 1e6,
                     "ns_per_operation": 1e9 * best / operations})
    return {"experiment": experiment, "dot_peak_gflop_per_s": peak, "rows": rows}


def format_members(result: dict[str, Any]) -> str:
    rows = result["rows"]
    total = sum(r["ms_per_meta_step"] for r in rows)
    steps = sum(r["optimizee_steps_per_meta_step"] for r in rows)
    at_peak = sum(r["mflop_per_meta_step"] for r in rows) / result["dot_peak_gflop_per_s"]
    lines = [f"{result['experiment']}: where a meta-step goes, member by member (each in its own program, one core; "
             f"dot-product peak {result['dot_peak_gflop_per_s']:.0f} GFLOP/s)", "",
             "| member | ms a meta-step | share | MFLOP a meta-step | GFLOP/s | fraction of peak | traced operations | "
             "MB written | ns an operation |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["ms_per_meta_step"]):
        lines.append(f"| {r['member']} | {r['ms_per_meta_step']:.2f} | {100 * r['ms_per_meta_step'] / total:.0f}% | "
                     f"{r['mflop_per_meta_step']:,.1f} | {r['gflop_per_s']:.1f} | {100 * r['fraction_of_peak']:.1f}% | "
                     f"{r['traced_operations']:,} | {r['mb_written']:,.1f} | {r['ns_per_operation']:.1f} |")
    lines += ["", f"Members alone, summed: {total:.1f} ms a meta-step ({steps * 1e3 / total:,.0f} optimizee steps/s); "
              f"every FLOP at the dot peak: {at_peak:.1f} ms ({steps * 1e3 / at_peak:,.0f} optimizee steps/s)."]
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
