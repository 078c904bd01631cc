"""`ib-brevitas train` end to end, and --resume after a hard kill mid-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ib_brevitas.records import read_records

CLI = [sys.executable, "-m", "ib_brevitas", "train", "--dataset", "syn", "--bits", "8", "--no-progress"]


def _train(run_dir: Path, *extra: str, epochs=12, activation="relu", check=True):
    cmd = CLI + ["--activation", activation, "--epochs", str(epochs), "--mi-every", "3",
                 "--seed", "1", "--lr", "1e-3", "--run-dir", str(run_dir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=300)


def _values(run_dir: Path):
    return [(r.layer, r.epoch, r.i_xt, r.i_ty, r.n_distinct) for r in read_records(run_dir / "mi.jsonl")]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    proc = _train(run_dir)
    return run_dir, proc


def test_run_directory_contents(full_run):
    run_dir, proc = full_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["activation"] == "relu" and config["epochs"] == 12 and config["mi_every"] == 3
    records = read_records(run_dir / "mi.jsonl")
    assert sorted({r.epoch for r in records}) == [0, 3, 6, 9, 12]
    assert [r.layer for r in records[:6]] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert all(r.n_samples == 4096 and r.bit_width == 8 for r in records)
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    assert (run_dir / "checkpoints" / "last.pt").exists()
    # the end-of-run summary table names every layer
    for layer in ("T1", "T6"):
        assert layer in proc.stdout
    assert "I(X;T) start" in proc.stdout


def _main(run_dir: Path, *extra: str, activation="relu"):
    from ib_brevitas.cli import main

    return main(["train", "--activation", activation, "--epochs", "12", "--mi-every", "3", "--seed", "1",
                 "--lr", "1e-3", "--no-progress", "--run-dir", str(run_dir), *extra])


def test_existing_run_is_not_overwritten(full_run):
    run_dir, _ = full_run
    with pytest.raises(SystemExit, match="--resume"):
        _main(run_dir)


def test_resume_after_sigkill_equals_uninterrupted_run(full_run, tmp_path):
    reference, _ = full_run
    run_dir = tmp_path / "killed"
    cmd = CLI + ["--activation", "relu", "--epochs", "12", "--mi-every", "3", "--seed", "1",
                 "--lr", "1e-3", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mi = run_dir / "mi.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the epoch-3 measurement is on disk
        if mi.exists() and '"epoch": 3' in mi.read_text():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    # simulate a torn write on top of the kill
    with open(mi, "a") as f:
        f.write('{"layer": "T1", "epoch": 99, "i_x')
    done = _train(run_dir, "--resume")
    assert done.returncode == 0
    assert _values(run_dir) == _values(reference)


def test_resume_refuses_other_settings(full_run):
    run_dir, _ = full_run
    with pytest.raises(SystemExit, match="activation=relu"):
        _main(run_dir, "--resume", activation="tanh")


def test_resuming_a_finished_run_changes_no_record(full_run):
    run_dir, _ = full_run
    before = {name: (run_dir / name).read_text() for name in ("mi.jsonl", "phases.jsonl")}
    assert _main(run_dir, "--resume") == 0
    assert {name: (run_dir / name).read_text() for name in before} == before
