import json

import numpy as np

from l2lgd.lab import compare as _compare
from l2lgd.lab import figures as _figures


def test_rolling_log_average_matches_the_reference_definition():
    logs = np.array([-1.0, -3.0, -5.0, -7.0])
    np.testing.assert_allclose(_figures.rolling_log_average(logs, 2), 10 ** np.array([-1.0, -2.0, -4.0, -6.0]))


def test_figures_write_non_empty_pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        _figures.sample_unrolls(tmp_path / "a.png", {"SGD": rng.random((3, 20)), "RNN": np.zeros((3, 20))}),
        _figures.convergence(tmp_path / "b.png", {"run": -rng.random(2000) * 10}, {"RMS": -18.2}),
        _figures.per_step(tmp_path / "c.png", {"x": {"mean": [0, -1, -2], "p5": [-1, -2, -3], "p95": [1, 0, -1]}}),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_an_eval_json_written_before_the_renames_reads_in_todays_words(tmp_path):
    entry = {"final": {"mean": -18.2}}
    old = {"num_problems": 8, "validation_problems": 4,
           "optimizers": {"learned (x)": entry, "seed sgd (lr 0.1)": entry, "seed rmsprop (lr 0.1)": entry}}
    (tmp_path / "eval.json").write_text(json.dumps(old))
    result = _compare.load_eval(tmp_path)
    assert (result["num_tasks"], result["validation_tasks"]) == (8, 4)
    assert list(result["optimizers"]) == ["learned (x)", "reference sgd (lr 0.1)", "reference rmsprop (lr 0.1)"]
    assert _compare.load_eval(tmp_path / "missing") is None
