"""`make paper`'s table: each setting's optimizer comes from the folder of runs it is given."""

import l2lgd.lab.paper as paper


def _result(loss):
    per_step = {"mean": [0.0, -1.0], "p5": [-1.0, -2.0], "p95": [1.0, 0.0]}
    return {"final": {"loss_mean": loss, "loss_ci95": 0.01, "mean": -1.0}, "per_step": per_step}


def test_settings_run_the_optimizers_of_the_given_checkpoints_folder(tmp_path, monkeypatch):
    calls = []

    def run_setting(run_dir, changes, test, val, widen=False):
        calls.append((run_dir, changes, test, val))
        return {"learned": _result(0.1), "optax sgd (tuned)": _result(0.5)}

    monkeypatch.setattr(paper, "run_setting", run_setting)
    settings = (("quadratic, 200 steps", "paper_quadratic", {"horizon": 200}),)
    rows, verdicts, everything = paper.settings_table(
        settings, lambda run: (7, 3), tmp_path / "figures", checkpoints=tmp_path / "runs"
    )
    assert calls == [(str(tmp_path / "runs" / "paper_quadratic"), {"horizon": 200}, 7, 3)]
    assert rows[0].startswith("| quadratic, 200 steps | **0.1 ± 0.01 (-1.00)** | 0.5")
    assert "beats 1 of 1 tuned baselines" in verdicts[0] and "0.20x the best baseline's" in verdicts[0]
    assert (tmp_path / "figures" / "quadratic_200_steps.png").stat().st_size > 0
    assert set(everything["quadratic, 200 steps"]) == {"learned", "optax sgd (tuned)"}
