"""The sweep's progress bar counts measured epochs, so a batched task shows progress before its seeds finish."""

from __future__ import annotations

import json

from ib_brevitas.cli import main as cli_main
from ib_brevitas.experiments.sweep_engines import epochs_done
from ib_brevitas.rundir import RunDir


def test_epochs_done_reads_the_last_measured_epoch(tmp_path, capsys):
    rd = RunDir(tmp_path / "r")
    assert epochs_done(rd) == 0  # nothing yet
    assert cli_main(["train", "--run-dir", str(rd.path), "--epochs", "7", "--mi-every", "3",
                     "--checkpoint-secs", "0", "--no-progress"]) == 0
    epochs = [r["epoch"] for r in rd.read_metrics()]
    assert epochs[-1] == 7 and epochs_done(rd) == 7
    text = rd.metrics_path.read_bytes()
    rd.metrics_path.write_bytes(text[:-10])  # a write cut by a kill: the last complete row counts
    assert epochs_done(rd) == epochs[-2]
    rd.metrics_path.write_bytes(b"")
    assert epochs_done(rd) == 0


def test_sweep_bar_shows_runs_and_seeds_per_hour(tmp_path, capsys):
    d = tmp_path / "sw"
    assert cli_main(["sweep", "--sweep-dir", str(d), "--epochs", "4", "--mi-every", "2", "--seeds", "0-1",
                     "--checkpoint-secs", "0", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "runs 2/2" in err and "seeds/hour" in err and "100%" in err
    assert len(json.loads((d / "sweep.json").read_text())["runs"]) == 2
