"""`ib-brevitas sweep`: grid x seeds into run directories equal to `train`'s, rerun-skip, resume, dead workers, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from ib_brevitas.cli import main as cli_main
from ib_brevitas.files import read_jsonl
from ib_brevitas.rundir import RunDir

SMALL = ["--activation", "tanh", "relu", "--epochs", "6", "--mi-every", "2", "--seeds", "0-1",
         "--checkpoint-secs", "0", "--no-progress", "--workers", "2"]
NAMES = ["syn-tanh-8b-s0", "syn-tanh-8b-s1", "syn-relu-8b-s0", "syn-relu-8b-s1"]
FILES = ("mi.jsonl", "phases.jsonl", "metrics.jsonl")  # what a finished run must hold, identically


def _sweep(sweep_dir: Path, *flags: str) -> int:
    return cli_main(["sweep", "--sweep-dir", str(sweep_dir), *flags])


def _rows(run: Path) -> dict[str, list[dict]]:
    return {f: read_jsonl(run / f) for f in FILES}


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep") / "small"
    assert _sweep(d, *SMALL) == 0
    return d


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory) -> Path:
    """seed 1 of ReLU, by `ib-brevitas train` itself."""
    d = tmp_path_factory.mktemp("train") / "ref"
    assert cli_main(["train", "--run-dir", str(d), "--activation", "relu", "--epochs", "6", "--mi-every", "2",
                     "--seed", "1", "--checkpoint-secs", "0", "--no-progress"]) == 0
    return d


def test_sweep_writes_one_train_run_per_seed(small_sweep, train_reference):
    manifest = json.loads((small_sweep / "sweep.json").read_text())
    assert manifest["grid"]["activation"] == ["tanh", "relu"] and manifest["seeds"] == [0, 1]
    assert sorted(manifest["runs"]) == sorted(NAMES)
    assert manifest["configurations"]["syn-relu-8b"]["activation"] == "relu"
    s = manifest["sessions"][0]
    assert s["trained"] == 4 and s["skipped"] == 0 and s["failed"] == 0 and s["ended"] and s["wall_s"] > 0
    for name in NAMES:
        rd = RunDir(small_sweep / name)
        assert rd.summary_path("json").exists() and rd.checkpoint_path.exists()
        config = rd.read_config()
        assert config["seed"] == int(name[-1]) and config["activation"] in name
    # config.json exactly as train writes it (its run_dir aside), and every record equal
    ours, theirs = (RunDir(p).read_config() for p in (small_sweep / "syn-relu-8b-s1", train_reference))
    assert {**ours, "run_dir": None} == {**theirs, "run_dir": None}
    assert _rows(small_sweep / "syn-relu-8b-s1") == _rows(train_reference)
    assert _rows(small_sweep / "syn-relu-8b-s0") != _rows(train_reference)  # the seed reaches the run


def test_rerun_skips_finished_runs(small_sweep, capsys):
    before = {n: (small_sweep / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES}
    assert _sweep(small_sweep, *SMALL) == 0
    assert {n: (small_sweep / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES} == before
    s = json.loads((small_sweep / "sweep.json").read_text())["sessions"][-1]
    assert s["skipped"] == 4 and s["trained"] == 0
    assert "4 finished already" in capsys.readouterr().err


def test_more_seeds_grow_the_sweep(small_sweep, tmp_path):
    """--seeds 0-2 over a 0-1 sweep: the finished runs are kept, only seed 2 is trained."""
    d = tmp_path / "grow"
    shutil.copytree(small_sweep, d)
    kept = {n: (d / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES}
    assert _sweep(d, *[f if f != "0-1" else "0-2" for f in SMALL]) == 0
    manifest = json.loads((d / "sweep.json").read_text())
    assert manifest["seeds"] == [0, 1, 2] and len(manifest["runs"]) == 6
    assert manifest["sessions"][-1]["skipped"] == 4 and manifest["sessions"][-1]["trained"] == 2
    assert len(manifest["sessions"]) == len(json.loads((small_sweep / "sweep.json").read_text())["sessions"]) + 1
    assert {n: (d / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES} == kept
    assert RunDir(d / "syn-relu-8b-s2").summary_path("json").exists()


def test_interrupted_runs_resume_to_the_same_records(small_sweep, tmp_path):
    """A run cut after a checkpoint, one cut before any, one with only config.json: all end as uninterrupted."""
    d = tmp_path / "copy"
    shutil.copytree(small_sweep, d)
    want = {n: _rows(small_sweep / n) for n in NAMES}
    cut = RunDir(d / "syn-tanh-8b-s0")  # after its epoch-6 checkpoint: resume re-trains nothing, writes the end
    cut.summary_path("json").unlink()
    with open(cut.records_path, "a") as f:
        f.write('{"torn": ')  # a write cut short
    bare = RunDir(d / "syn-tanh-8b-s1")  # records but no checkpoint: trained afresh
    bare.checkpoint_path.unlink()
    bare.summary_path("json").unlink()
    only = RunDir(d / "syn-relu-8b-s0")
    for p in (only.records_path, only.phases_path, only.summary_path("json"), only.checkpoint_path):
        p.unlink()
    assert _sweep(d, *SMALL) == 0
    assert {n: _rows(d / n) for n in NAMES} == want
    s = json.loads((d / "sweep.json").read_text())["sessions"][-1]
    assert s["skipped"] == 1 and s["trained"] == 3


def test_paper_preset_plans_the_study(tmp_path):
    import argparse

    from ib_brevitas.experiments.sweep import plan_sweep
    from ib_brevitas.experiments.sweep_args import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    plan, jobs = plan_sweep(p.parse_args(["--sweep-dir", str(tmp_path / "s"), "--preset", "paper-syn"]))
    assert plan["grid"]["activation"] == ["tanh", "relu"] and plan["grid"]["bits"] == [8]
    assert plan["seeds"] == list(range(50)) and len(jobs) == 100
    assert {j.config["epochs"] for j in jobs} == {8000} and {j.config["mi_every"] for j in jobs} == {5}
    assert jobs[0].name == "syn-tanh-8b-s0" and jobs[-1].name == "syn-relu-8b-s49"
    # a flag beside the preset replaces its value; other axes keep the preset's
    plan, jobs = plan_sweep(p.parse_args(["--sweep-dir", str(tmp_path / "s"), "--preset", "paper-syn",
                                          "--epochs", "100", "--seeds", "0-2"]))
    assert {j.config["epochs"] for j in jobs} == {100} and len(jobs) == 6 and plan["grid"]["bits"] == [8]
    # a varied axis other than activation and bits shows in the directory names
    _, jobs = plan_sweep(p.parse_args(["--sweep-dir", str(tmp_path / "s"), "--mi-every", "5", "10"]))
    assert [j.name for j in jobs] == ["syn-tanh-8b-k5-s0", "syn-tanh-8b-k10-s0"]


@pytest.mark.parametrize("engine, starts", [("local", True), ("ray", False)])
def test_worker_server_starts_before_the_settings_are_checked(tmp_path, monkeypatch, engine, starts):
    """The workers' imports overlap the parent's checks (a serial start no worker count wins back)."""
    import argparse

    from ib_brevitas.experiments import sweep, train
    from ib_brevitas.experiments.sweep_args import add_arguments

    events = []
    monkeypatch.setattr(sweep, "start_worker_server", lambda: events.append("server"))
    checked = train.validate
    monkeypatch.setattr(train, "validate", lambda *a: (events.append("check"), checked(*a))[1])
    p = argparse.ArgumentParser()
    add_arguments(p)
    sweep.plan_sweep(p.parse_args(["--sweep-dir", str(tmp_path / "s"), "--seeds", "0-1", "--engine", engine]))
    assert events == (["server", "check", "check"] if starts else ["check", "check"])


@pytest.mark.parametrize("flags, message", [
    (["--bits"], "--bits has no values: the grid is empty"),
    (["--seeds", ","], "--seeds names no seed: the grid is empty"),
    (["--seeds", "5-2"], "the range 5-2 is empty"),
    (["--seeds", "1", "0-3"], "seed 1 is given twice"),
    (["--seeds", "x"], "'x' is neither a seed"),
    (["--preset", "paper-mnist"], "unknown preset 'paper-mnist'"),
    (["--activation", "tanh", "sigmoid"], "unknown activation 'sigmoid'"),
    (["--bits", "8", "40"], "--bits must lie in"),
    (["--engine", "slurm"], "unknown engine 'slurm'"),
    (["--address", "auto"], "add --engine ray"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--min-drop-bits", "-1"], "min_drop_bits must be >= 0"),
])
def test_bad_input_is_one_line_before_anything_starts(tmp_path, capsys, flags, message):
    d = tmp_path / "sweep"
    assert _sweep(d, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ib-brevitas sweep: error: ") and message in err and "\n" not in err
    assert not d.exists()


def test_a_directory_of_another_grid_is_refused(small_sweep, tmp_path, capsys):
    before = (small_sweep / "sweep.json").read_text()
    flags = [f if f != "0-1" else "1-2" for f in SMALL]
    assert _sweep(small_sweep, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a sweep of a different grid (seeds: 0-1 there, 1-2 asked)" in err and "\n" not in err
    assert _sweep(small_sweep, "--activation", "tanh", "--epochs", "6", "--mi-every", "2", "--seeds", "0-1") == 2
    assert "activation: tanh relu there, tanh asked" in capsys.readouterr().err
    assert (small_sweep / "sweep.json").read_text() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _sweep(other, *SMALL) == 2
    assert "is not empty and holds no sweep.json" in capsys.readouterr().err


def _wait_for(cond, timeout: float, what: str, thread: threading.Thread):
    t0 = time.monotonic()
    while not cond():
        if not thread.is_alive():
            pytest.fail(f"the sweep ended before {what}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _measured_epochs(run: Path) -> int:
    p = run / "mi.jsonl"
    return len(p.read_text().splitlines()) // 6 if p.exists() else 0


def test_a_killed_worker_is_replaced_and_every_record_is_intact(tmp_path, capsys):
    """SIGKILL the worker training a run mid-way: the pool is rebuilt, the run resumes, records equal train's."""
    d = tmp_path / "sweep"
    flags = ["--activation", "relu", "--epochs", "30", "--mi-every", "2", "--seeds", "0-1", "--checkpoint-secs", "0",
             "--no-progress", "--workers", "2", "--seeds-per-task", "1"]
    result: list[int] = []
    sweep = threading.Thread(target=lambda: result.append(_sweep(d, *flags)), daemon=True)
    sweep.start()  # in this process: its workers fork from the server the other tests started (no new imports)
    victim = d / "syn-relu-8b-s1"
    _wait_for(lambda: _measured_epochs(victim) >= 5 and (victim / "checkpoints" / "last.pt").exists(), 240,
              "the run's fifth measurement", sweep)
    assert not (victim / "summary.json").exists(), "the run finished before it could be killed; lengthen it"
    pid = int((victim / ".lock").read_text().split()[0])  # the worker holding the run
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    sweep.join(timeout=300)
    err = capsys.readouterr().err
    assert result == [0], err
    assert "a worker process died" in err and "retry 1 of 3" in err
    assert json.loads((d / "sweep.json").read_text())["sessions"][-1]["retries"] >= 1
    assert all(RunDir(d / f"syn-relu-8b-s{s}").summary_path("json").exists() for s in (0, 1))
    ref = tmp_path / "ref"
    assert cli_main(["train", "--run-dir", str(ref), "--activation", "relu", "--epochs", "30", "--mi-every", "2",
                     "--seed", "1", "--no-progress"]) == 0
    assert _rows(victim) == _rows(ref)


@pytest.fixture(scope="module")
def relu_300_reference(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train") / "relu300"
    assert cli_main(["train", "--run-dir", str(d), "--activation", "relu", "--epochs", "300", "--mi-every", "2",
                     "--seed", "0", "--no-progress"]) == 0
    return d


@pytest.mark.parametrize("how", ["kill the sweep", "interrupt the sweep", "Ctrl-C"])
def test_workers_stop_when_the_sweep_is_killed_or_interrupted(tmp_path, relu_300_reference, how):
    """The sweep process SIGKILLed (its worker trained on, orphaned, holding the run's lock), sent SIGINT alone
    (it waited for its workers to finish their runs, for hours), or Ctrl-C'ed with its workers: the worker
    checkpoints at the epoch end and exits at once, and the same command then resumes the run to an
    uninterrupted run's records."""
    import subprocess
    import sys

    d = tmp_path / "sweep"
    flags = ["--activation", "relu", "--epochs", "300", "--mi-every", "2", "--seeds", "0", "--checkpoint-secs", "0",
             "--no-progress", "--workers", "1"]
    command = [sys.executable, "-m", "ib_brevitas", "sweep", "--sweep-dir", str(d), *flags]
    sweep = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # a process group of its own, as a terminal gives it
    run = d / "syn-relu-8b-s0"
    try:
        t0 = time.monotonic()
        while _measured_epochs(run) < 5 or not (run / "checkpoints" / "last.pt").exists():
            assert sweep.poll() is None, "the sweep ended before its run's fifth measurement"
            assert time.monotonic() - t0 < 240, "timed out waiting for the run's fifth measurement"
            time.sleep(0.05)
        worker = int((run / ".lock").read_text().split()[0])
        assert worker != sweep.pid
        if how == "kill the sweep":
            sweep.kill()
        elif how == "interrupt the sweep":
            sweep.send_signal(signal.SIGINT)
        else:
            os.killpg(sweep.pid, signal.SIGINT)
        code = sweep.wait(timeout=60)
        err = sweep.stderr.read()
        t0 = time.monotonic()
        while os.path.exists(f"/proc/{worker}") and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]:
            assert time.monotonic() - t0 < 20, "the worker trained on after its sweep was stopped"
            time.sleep(0.05)
    finally:
        sweep.kill()
    assert not RunDir(run).summary_path("json").exists(), "the run finished before the sweep was stopped; lengthen it"
    if how != "kill the sweep":
        assert code == 130, err
        assert "rerun the same command to resume" in err, err
        saved = RunDir(run).load_checkpoint()  # at the epoch end: nothing recorded after it
        assert saved["epoch"] >= read_jsonl(run / "mi.jsonl")[-1]["epoch"], "stopped without its last checkpoint"
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    assert _rows(run) == _rows(relu_300_reference)


@pytest.mark.slow
def test_ray_engine_on_a_local_cluster(small_sweep, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        d = tmp_path / "ray"
        assert _sweep(d, *SMALL[:-2], "--engine", "ray") == 0
    finally:
        ray.shutdown()
    assert {n: _rows(d / n) for n in NAMES} == {n: _rows(small_sweep / n) for n in NAMES}
    s = json.loads((d / "sweep.json").read_text())["sessions"][-1]
    assert s["engine"] == "ray" and s["trained"] == 4


def test_tasks_take_turns_across_configurations():
    from ib_brevitas.experiments.sweep import _tasks
    from ib_brevitas.experiments.sweep_plan import Job

    jobs = [Job(f"{c}-s{s}", c, {"bits": 8}) for c in ("a", "b") for s in range(3)]
    dirs = {j.name: RunDir(f"/x/{j.name}") for j in jobs}
    names = lambda tasks: [[Path(p).name for p, _ in t] for t in tasks]  # noqa: E731
    assert names(_tasks(jobs, dirs, 1, 1)) == [["a-s0"], ["b-s0"], ["a-s1"], ["b-s1"], ["a-s2"], ["b-s2"]]
    assert names(_tasks(jobs, dirs, 2, 2)) == [["a-s0", "a-s1"], ["b-s0", "b-s1"], ["a-s2"], ["b-s2"]]


def test_tasks_cut_a_batched_configuration_only_as_far_as_the_workers_need():
    """Bigger batches train each seed faster: 2 configurations on 2 workers are one batch each, not two halves
    each (which left every worker two half batches, the slower way to do the same work)."""
    from ib_brevitas.experiments.models import FLOAT_BITS
    from ib_brevitas.experiments.sweep import _tasks
    from ib_brevitas.experiments.sweep_plan import Job

    def plan(configs, seeds, workers, bits=8):
        jobs = [Job(f"{c}-s{s}", c, {"bits": bits}) for c in configs for s in range(seeds)]
        tasks = _tasks(jobs, {j.name: RunDir(f"/x/{j.name}") for j in jobs}, None, workers)
        return [[Path(p).name for p, _ in t] for t in tasks]

    assert plan("ab", 4, 2) == [["a-s0", "a-s1", "a-s2", "a-s3"], ["b-s0", "b-s1", "b-s2", "b-s3"]]
    assert plan("a", 4, 2) == [["a-s0", "a-s1"], ["a-s2", "a-s3"]]
    assert plan("abc", 4, 2) == [["a-s0", "a-s1"], ["b-s0", "b-s1"], ["c-s0", "c-s1"],
                                 ["a-s2", "a-s3"], ["b-s2", "b-s3"], ["c-s2", "c-s3"]]
    assert plan("abcd", 2, 2) == [["a-s0", "a-s1"], ["b-s0", "b-s1"], ["c-s0", "c-s1"], ["d-s0", "d-s1"]]
    assert plan("ab", 4, 1) == plan("ab", 4, 2)
    assert plan("ab", 2, 4) == [["a-s0"], ["b-s0"], ["a-s1"], ["b-s1"]]
    # float nets train one seed after another anyway: single seeds keep every worker busy
    assert plan("ab", 2, 2, bits=FLOAT_BITS) == [["a-s0"], ["b-s0"], ["a-s1"], ["b-s1"]]


@pytest.mark.slow
def test_ray_retries_a_task_whose_worker_was_killed(tmp_path, capsys):
    """SIGKILL the Ray worker training a run mid-way: Ray re-executes the task, the run resumes, and every
    run's records equal an uninterrupted run's (none lost, none repeated)."""
    ray = pytest.importorskip("ray")
    d = tmp_path / "sweep"
    flags = ["--activation", "relu", "--epochs", "30", "--mi-every", "2", "--seeds", "0-1", "--checkpoint-secs", "0",
             "--no-progress", "--seeds-per-task", "1", "--engine", "ray"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result: list[int] = []
        sweep = threading.Thread(target=lambda: result.append(_sweep(d, *flags)), daemon=True)
        sweep.start()
        victim = d / "syn-relu-8b-s1"
        _wait_for(lambda: _measured_epochs(victim) >= 5 and (victim / "checkpoints" / "last.pt").exists(), 240,
                  "the run's fifth measurement", sweep)
        assert not (victim / "summary.json").exists(), "the run finished before it could be killed; lengthen it"
        pid = int((victim / ".lock").read_text().split()[0])  # the Ray worker holding the run
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        sweep.join(timeout=300)
        assert not sweep.is_alive(), "the sweep did not end after its worker was killed"
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert result == [0], err
    for s in (0, 1):
        run = d / f"syn-relu-8b-s{s}"
        assert RunDir(run).summary_path("json").exists()
        ref = tmp_path / f"ref{s}"
        assert cli_main(["train", "--run-dir", str(ref), "--activation", "relu", "--epochs", "30", "--mi-every", "2",
                         "--seed", str(s), "--no-progress"]) == 0
        assert _rows(run) == _rows(ref), run.name
        epochs = [r["epoch"] for r in read_jsonl(run / "mi.jsonl") if r["layer"] == "T1"]
        assert epochs == list(range(0, 31, 2))  # each measurement once
