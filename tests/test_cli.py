import subprocess
import sys
import time

import pytest

from l2lgd import cli


def test_unknown_experiment_fails_fast_listing_the_known_ones():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "l2lgd", "train", "nope"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Unknown experiment 'nope'" in proc.stderr
    for name in ("log30", "sum", "end_log", "log15_end"):
        assert name in proc.stderr
    assert time.perf_counter() - start < 30  # generous: only imports happen


def test_invalid_step_count_names_the_field():
    with pytest.raises(SystemExit, match="meta_steps must be a positive integer, got -5"):
        cli.main(["train", "log30", "--steps", "-5"])


def test_eval_of_an_untrained_run_names_the_train_command(tmp_path):
    with pytest.raises(SystemExit, match=r"make train EXP=log30 OUT="):
        cli.main(["eval", "log30", "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match=r"make train EXP=sum"):
        cli.main(["figures", "sum", "--out", str(tmp_path / "none")])
