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


def test_existing_run_is_not_overwritten(full_run, capsys):
    run_dir, _ = full_run
    assert _main(run_dir) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


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
    done = _train(run_dir, "--resume", check=False)
    assert done.returncode == 0, done.stderr
    assert _values(run_dir) == _values(reference)


def test_resume_refuses_other_settings(full_run, capsys):
    run_dir, _ = full_run
    assert _main(run_dir, "--resume", activation="tanh") == 2
    assert "was run with activation=relu" in capsys.readouterr().err


def test_resuming_a_finished_run_changes_no_record(full_run):
    run_dir, _ = full_run
    before = {name: (run_dir / name).read_text() for name in ("mi.jsonl", "phases.jsonl")}
    assert _main(run_dir, "--resume") == 0
    assert {name: (run_dir / name).read_text() for name in before} == before


def test_run_directory_has_metrics_summary_and_rebuild_recipe(full_run):
    from ib_brevitas.rundir import RunDir

    rd = RunDir(full_run[0])
    metrics = rd.read_metrics()
    assert [m["epoch"] for m in metrics] == [0, 3, 6, 9, 12]
    assert all(0 <= m["test_acc"] <= 1 and m["train_loss"] > 0 for m in metrics)
    summary = json.loads(rd.summary_path("json").read_text())
    assert [layer["layer"] for layer in summary["layers"]] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert "I(X;T) start" in rd.summary_path("txt").read_text()
    model = rd.build_model()  # the factory recorded in config.json
    model.load_state_dict(rd.load_checkpoint()["model"])
    x, y = rd.probe_set()
    assert x.shape == (4096, 12) and len(y) == 4096
    records = rd.read_records()
    assert all(r.scale is not None and r.scale > 0 for r in records)  # the quantizer's scale per record
    assert {r.layer for r in records if r.saturated} <= {"T1", "T2", "T3", "T4", "T5", "T6"}
    assert all(r.saturated == (r.n_distinct == r.n_samples) for r in records)


@pytest.mark.parametrize("flags, message", [
    (["--bits", "1"], "--bits must lie in 2..16"),
    (["--test-fraction", "1.5"], "--test-fraction must lie strictly between 0 and 1"),
    (["--lr", "-1"], "--lr must be a positive finite number"),
    (["--lr", "nan"], "--lr must be a positive finite number"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    from ib_brevitas.cli import main

    run_dir = tmp_path / "bad"
    assert main(["train", "--run-dir", str(run_dir), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ib-brevitas train: error: ") and message in err
    assert not run_dir.exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    from ib_brevitas.cli import main

    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["train", "--run-dir", str(f), "--epochs", "1"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_resume_takes_the_runs_own_length_and_only_extends(full_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(full_run[0], run_dir)
    from ib_brevitas.cli import main

    base = ["train", "--no-progress", "--run-dir", str(run_dir), "--resume"]
    assert main(base) == 0  # no --epochs: the run's own 12, not the paper's 8000
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 12
    assert main(base + ["--epochs", "6"]) == 2
    assert "would shorten it" in capsys.readouterr().err
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 12
    assert main(base + ["--epochs", "15"]) == 0  # extends: 12 -> 15
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 15
    assert sorted({r.epoch for r in read_records(run_dir / "mi.jsonl")}) == [0, 3, 6, 9, 12, 15]


@pytest.mark.parametrize("damage", ["emptied", "deleted", "cut"])
def test_resume_over_a_damaged_log_restores_every_record(full_run, tmp_path, damage):
    """The checkpoint holds the records: a log that lost some is restored, never left with a gap."""
    import shutil

    run_dir = tmp_path / damage
    shutil.copytree(full_run[0], run_dir)
    mi = run_dir / "mi.jsonl"
    lines = mi.read_text().splitlines(keepends=True)
    if damage == "emptied":
        mi.write_text("")
    elif damage == "deleted":
        mi.unlink()
    else:
        mi.write_text("".join(lines[: len(lines) // 2]))
    assert _train(run_dir, "--resume").returncode == 0
    assert _values(run_dir) == _values(full_run[0])


def test_overwrite_starts_afresh(full_run, tmp_path):
    import shutil

    run_dir = tmp_path / "again"
    shutil.copytree(full_run[0], run_dir)
    (run_dir / "mi.jsonl").write_text("junk that a fresh run must not keep\n")
    assert _train(run_dir, "--overwrite").returncode == 0
    assert _values(run_dir) == _values(full_run[0])


def test_a_second_process_on_a_live_run_is_refused(tmp_path):
    run_dir = tmp_path / "busy"
    cmd = CLI + ["--activation", "relu", "--epochs", "400", "--mi-every", "3", "--seed", "1", "--run-dir", str(run_dir)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run_dir / "mi.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        for extra in ([], ["--resume"]):
            second = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert f"in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
    # the lock died with the killed process: the run can be taken up again
    from ib_brevitas.rundir import RunDir

    with RunDir(run_dir).lock():
        pass


def test_kill_during_start_up_leaves_a_resumable_run(tmp_path):
    """SIGKILL at many moments of start-up: config.json is never left empty or torn."""
    run_dir = tmp_path / "startup"
    cmd = CLI + ["--activation", "relu", "--epochs", "6", "--mi-every", "3", "--seed", "1", "--run-dir", str(run_dir)]
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        proc = subprocess.Popen(cmd + (["--resume"] if (run_dir / "config.json").exists() else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if (run_dir / "config.json").exists():
            json.loads((run_dir / "config.json").read_text())  # whole, never empty
    extra = ["--resume"] if (run_dir / "config.json").exists() else []
    done = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_checkpoints_at_the_epoch_end_and_resumes_exactly(full_run, tmp_path):
    run_dir = tmp_path / "interrupted"
    cmd = CLI + ["--activation", "relu", "--epochs", "12", "--mi-every", "3", "--seed", "1", "--lr", "1e-3",
                 "--checkpoint-secs", "1000", "--engine", "brevitas", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run_dir / "mi.jsonl").exists() and (run_dir / "mi.jsonl").read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C reached it")
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" in err
    assert _train(run_dir, "--resume").returncode == 0
    assert _values(run_dir) == _values(full_run[0])
