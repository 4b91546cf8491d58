"""`make bench` on a tiny config: every figure it reports is there and positive (no timing
assertion); the figures derived from the measurements are checked against numbers worked out by
hand, from a clock the test sets."""

import os

import pytest

from l2lgd.lab import bench
from l2lgd.lab.bench import bench_config, format_bench, optax_face


def test_bench_reports_fused_autodiff_and_naive(tiny, monkeypatch):
    # Each program runs (once after its warm-up) but its measurement takes the seconds given
    # here, in the order `bench_config` measures: the fused chunk, the scan, jax.grad's, the naive loop.
    seconds = iter([0.5, 0.25, 2.0, 4.0])
    monkeypatch.setattr(bench, "_time", lambda advance, min_seconds: (next(seconds), advance()))
    row = bench_config(tiny.replace(batch_size=2), min_seconds=0.01, chunk=2)
    monkeypatch.undo()  # the real clock for the optax face below
    # A chunk is 2 meta-steps of 2 tasks; the naive loop takes max(1, 2 // 10) = 1 meta-step a call.
    assert (row["meta_steps_per_s"], row["scan_meta_steps_per_s"], row["autodiff_meta_steps_per_s"]) == (4.0, 8.0, 1.0)
    assert (row["naive_meta_steps_per_s"], row["tasks_per_s"], row["naive_tasks_per_s"]) == (0.25, 8.0, 0.5)
    assert (row["fused_speedup"], row["speedup"]) == (4.0, 16.0)
    for key in ("compile_s", "scan_compile_s", "autodiff_compile_s", "naive_compile_s"):
        assert row[key] > 0, key
    result = {
        "experiment": "tiny",
        "machine": {"devices": ["cpu"], "cpus": 2},
        "rows": [row],
        "memory": {"train_steps": 10, "train_wall_s": 1.0, "train_warm_wall_s": 0.5, "train_peak_rss_mb": 100.0},
        "optax_face": optax_face(n=100_000, min_seconds=0.01),
        "time_for_meta_steps_s": {"20": 0.1},
    }
    table = format_bench(result)
    assert "fused vs jax.grad" in table and "| 2 |" in table and "0.5 s warm" in table
    assert result["optax_face"]["learned_ms"] > 0 and result["optax_face"]["adam_ms"] > 0
    assert "optax face, one jitted update on 100,000 coordinates" in table


def test_estimator_rows_count_optimizee_steps_and_flops(tiny):
    """Each estimator's row: optimizee steps per meta-step as its unroll takes them, the FLOP
    count (marked an estimate for backpropagation), a fraction of the measured peak; and the
    table prints them."""
    import pytest

    import l2lgd
    from l2lgd.lab.bench_estimators import estimator_row, format_estimators

    family = l2lgd.tasks.task_family(tiny)
    assert tiny.num_steps == 5  # the counts below are worked out for it
    pes = estimator_row(tiny.replace(estimator="pes", perturbations=3, batch_size=2), family, chunk=2, min_seconds=0.01, peak=100.0)
    # 2 tasks x 3 antithetic pairs (6 particles) x a truncation of 5 steps.
    assert pes["optimizee_steps_per_meta_step"] == 60
    assert pes["optimizee_steps_per_s"] == pytest.approx(60 * pes["meta_steps_per_s"])
    assert pes["gflop_per_meta_step"] > 0 and pes["fraction_of_peak"] > 0
    fused = estimator_row(tiny.replace(batch_size=2), family, chunk=2, min_seconds=0.01)
    assert fused["optimizee_steps_per_meta_step"] == 10  # 2 tasks x 5 steps, one pass
    table = format_estimators({"experiment": "tiny", "dot_peak_gflop_per_s": 100.0,
                               "rows": [pes, fused, {"estimator": "fused", "skipped": "a mixture"}]})
    assert "| pes |" in table and "| fused |" in table and "a mixture" in table
    assert fused["flops_estimated"] and not pes["flops_estimated"] and "(est.)" in table


def test_meta_step_flops_count_every_optimizee_step(tiny):
    """Counted from loop-free programs, so twice the particles or twice the truncation is twice
    the FLOPs (XLA's count of the training program counts its loops' bodies once)."""
    import pytest

    import l2lgd
    from l2lgd.lab.bench_estimators import meta_step_flops

    family = l2lgd.tasks.task_family(tiny)
    pes = tiny.replace(estimator="pes", perturbations=3, batch_size=2)
    one = meta_step_flops(pes, family)
    assert one > 0
    assert meta_step_flops(pes.replace(perturbations=6), family) == pytest.approx(2 * one)
    assert meta_step_flops(pes.replace(num_steps=2 * tiny.num_steps), family) == pytest.approx(2 * one)
    # a kind that needs the horizon and the params (counted through the face, as training runs it)
    assert meta_step_flops(pes.replace(kind="prodigy_controller"), family) > 0


def test_face_table_reports_every_optimizer_size_and_layout():
    from l2lgd.lab.bench_face import face_table, format_face

    result = face_table(("log30",), sizes=(4_000,), leaves=(1, 100), min_seconds=0.01)
    row = result["rows"][0]
    for key in ("log30_1_ms", "log30_100_ms", "adam_1_ms", "adam_100_ms", "mlp_fwd_bwd_ms"):
        assert row[key] > 0, key
    assert row["log30_state_bytes_per_coordinate"] == 2 * 2 * 20 * 4  # c and h, 2 layers of 20, float32
    assert "| 4,000 |" in format_face(result)


TINY_PES = (
    "import l2lgd\n"
    "from l2lgd import Config, Experiment\n"
    "from l2lgd.tasks._mixture import FamilyMixture\n"
    "EXPERIMENT = Experiment(\n"
    "    config=Config(name='tinypes', num_steps=5, hidden_size=2, num_layers=1, estimator='pes', perturbations=2,\n"
    "                  min_horizon=10, max_horizon=20, objective='sum_log'),\n"
    "    family=FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.ConditionedQuadratics(3, 10.0, 20)),\n"
    "                         ('a', 'b')),\n"
    "    ablations={'the controller': {'kind': 'adam_controller'}, 'fewer steps': {'num_steps': 4}},\n"
    ")\n"
)


def test_the_devices_bench_runs_one_device_and_two_in_children(tmp_path, monkeypatch):
    """`make bench EXP=general`'s devices table on a tiny PES mixture: one child on one device,
    one on two forced host devices, and the other kind the experiment's ablations name in a child of
    its own; every figure there and positive, the steps counted by hand."""
    from l2lgd.lab.bench_devices import child_speed, devices_table, format_devices, kind_variants

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tinypes.py").write_text(TINY_PES)
    monkeypatch.setenv("L2LGD_EXPERIMENTS", str(tmp_path / "exps"))
    # Run from a process pinned to one core, as `make bench` is: the 2-device child's threads must
    # still get two cores (they were made pinned to the parent's one, and ran at 0.9x one device).
    cores = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("L2LGD_CORES", ",".join(map(str, cores)))
    os.sched_setaffinity(0, {cores[0]})
    try:
        result = devices_table("tinypes", devices=2, seconds=0.01, kinds=False)
    finally:
        os.sched_setaffinity(0, set(cores))
    one, two = result["rows"]
    assert (one["thread_cores"], two["thread_cores"]) == (1, min(2, len(cores)))
    assert (one["devices"], two["devices"]) == (1, 2)
    assert kind_variants("tinypes") == {"the controller": {"kind": "adam_controller"}}
    # Another kind, on one member only (`members`: how this code runs another commit's families).
    other = dict(child_speed("tinypes", 1, seconds=0.01, overrides={"kind": "adam_controller", "members": ["b"]}),
                 code="this", variant="kind='adam_controller'")
    assert other["optimizer"] == "adam_controller" and (other["members"], other["names"]) == (1, ["b"])
    for row in (one, two, other):
        # members * batch * 2 pairs * num_steps
        assert row["optimizee_steps_per_meta_step"] == row["members"] * 1 * 2 * 2 * 5
        assert row["optimizee_steps_per_s"] > 0
        assert row["compile_cold_s"] > 0 and row["compile_warm_s"] > 0
    assert one["members"] == two["members"] == 2 and one["names"] == ["a", "b"]
    assert sorted(two["placement"].values()) == [0, 1] and one["placement"] == {}  # a tiny member a device
    table = format_devices({**result, "rows": [one, two, other]})
    assert "| this | lstm | - | 2 | 2 |" in table and "1.00x" in table
    assert "Members on several devices: device 0: " in table
    assert "| this | adam_controller | kind='adam_controller' | 1 | 1 |" in table
    # Another commit's families (`--against`): the mixture of those members (`members_named`), and
    # the sentence that sets this code's row on them beside that commit's (made-up rows).
    from l2lgd.lab.bench_devices import members_named
    from l2lgd.runs._experiments import load_experiment

    family = load_experiment("tinypes").family
    assert members_named(family, ["b"]).names == ("b",) and members_named(family, ["b", "a"]).names == ("a", "b")
    with pytest.raises(ValueError, match="no member named c"):
        members_named(family, ["a", "c"])
    fewer = dict(one, code="this", variant="abc's families", members=1, optimizee_steps_per_s=2.0)
    theirs = dict(one, code="abc", variant="", members=1, optimizee_steps_per_s=1.0)
    table = format_devices({**result, "rows": [one, two, theirs, fewer]})
    assert "On abc's 1 families, one device: this code 2 optimizee steps/s, abc's 1: 2.00x; on every family" in table


def test_the_member_table_times_each_member_of_a_mixture_alone(tmp_path, monkeypatch):
    """`make bench EXP=general`'s member table on a tiny PES mixture: a row per member, its steps
    counted by hand, its FLOPs and traced operations positive, and the summary line's sum of the
    members worked out from the rows (no timing assertion)."""
    import pytest

    from l2lgd.lab.bench_estimators import format_members, member_table

    (tmp_path / "exps").mkdir()
    (tmp_path / "exps" / "tinypes.py").write_text(TINY_PES)
    monkeypatch.setenv("L2LGD_EXPERIMENTS", str(tmp_path / "exps"))
    result = member_table("tinypes", chunk=2, min_seconds=0.01, peak=100.0)
    assert [r["member"] for r in result["rows"]] == ["a", "b"]
    for r in result["rows"]:
        assert r["optimizee_steps_per_meta_step"] == 1 * 2 * 2 * 5  # batch * 2 pairs * num_steps
        assert r["ms_per_meta_step"] > 0 and r["mflop_per_meta_step"] > 0 and r["traced_operations"] > 0
        assert r["fraction_of_peak"] == pytest.approx(r["gflop_per_s"] / 100.0)
        assert r["mb_accessed"] > 0
        assert r["ms_at_elementwise_rate"] == pytest.approx(r["mb_accessed"] / result["elementwise_gb_per_s"])
    table = format_members(result)
    total = sum(r["ms_per_meta_step"] for r in result["rows"])
    assert "| a |" in table and "| b |" in table and f"summed: {total:.1f} ms a meta-step" in table
    with pytest.raises(ValueError, match="evolution estimator"):
        member_table("log30", min_seconds=0.01, peak=100.0)
