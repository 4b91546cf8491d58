"""`make bench` on a tiny config: every figure it reports is there and positive (no timing assertion)."""

from l2lgd.lab.bench import bench_config, format_bench, optax_face


def test_bench_reports_fused_autodiff_and_naive(tiny):
    row = bench_config(tiny.replace(batch_size=2), min_seconds=0.01, chunk=2)
    for key in ("meta_steps_per_s", "tasks_per_s", "autodiff_meta_steps_per_s", "naive_meta_steps_per_s", "scan_meta_steps_per_s"):
        assert row[key] > 0, key
    assert row["tasks_per_s"] == 2 * row["meta_steps_per_s"]
    assert row["fused_speedup"] == row["meta_steps_per_s"] / row["autodiff_meta_steps_per_s"]
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
