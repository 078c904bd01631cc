"""Where a sweep's tasks run: worker processes here (local) or Ray tasks on a cluster.

A task is a list of jobs (seeds of one configuration); `train_task` trains
them in whatever process runs it. It decides from each run directory what is
left to do (nothing, resume, or start), so a task that is re-run after its
process died simply resumes: that is all the fault tolerance a sweep needs,
and both engines get it by re-running a task whose worker died (the local
engine restarts its pool, Ray re-executes it, `max_retries` times). Run
directories must therefore be on a file system every worker sees.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ib_brevitas.rundir import IDENTITY_KEYS, RunDir

ENGINES = ("local", "ray")
Task = list  # of (run directory path, config) pairs


def epochs_done(rd: RunDir) -> int:
    """The last measured epoch of a run (0 when none), read from the tail of its metrics.jsonl.

    Progress of a batched task: its seeds finish together at the end, so a sweep's
    bar counts measured epochs, not finished runs. Cheap enough to poll every second.
    """
    try:
        with open(rd.metrics_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 1024))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        key = b'{"epoch": '
        if line.startswith(key) and line.endswith(b"}"):
            digits = line[len(key):].split(b",", 1)[0]
            if digits.lstrip(b"-").isdigit():
                return max(0, int(digits))
    return 0


def is_done(rd: RunDir, epochs: int) -> bool:
    """A run is finished when its end-of-run summary is written for `epochs` epochs."""
    if not rd.summary_path("json").exists():
        return False
    try:
        return rd.read_config().get("epochs") == epochs
    except ValueError:
        return False


def train_task(task: Task, checkpoint_secs: float) -> list[dict[str, Any]]:
    """Train a task's runs in this process: skip finished ones, resume interrupted ones, start the rest.

    Returns one {"path", "status", "seconds", "batch"} per run (status: skipped / resumed / trained;
    batch: the seeds trained together with it, itself included).
    """
    from ib_brevitas.experiments.loop import STOP
    from ib_brevitas.experiments.train import resumed_config

    _stop_with_parent()
    if STOP.is_set():  # a task the pool had queued before the sweep was interrupted
        raise RuntimeError("the sweep was interrupted before this task started")
    results, runs = [], []
    with _TRAINING, contextlib.ExitStack() as locks:
        for path, config in task:
            rd = RunDir(path)
            locks.enter_context(rd.lock())  # another live process in it: RunDirLocked
            if is_done(rd, config["epochs"]):
                results.append({"path": str(path), "status": "skipped", "seconds": 0.0, "batch": 0})
                continue
            resume = rd.config_path.exists()  # a checkpoint or not: the resume path knows what to redo
            if resume:
                pinned = {k: config[k] for k in config if k in (*IDENTITY_KEYS, "seed", "engine", "epochs")}
                config = resumed_config(rd, pinned)  # the run's own config; a contradiction is refused
            runs.append((rd, config, resume))
        results += train_runs(runs, checkpoint_secs)
    return results


def _stop_with_parent() -> None:
    """A local worker whose sweep process died (killed, its terminal closed) stops as after Ctrl-C
    (checkpoints at the epoch end) and exits, instead of training on for hours, orphaned, holding its
    runs' locks against the rerun that resumes them, then waiting forever for its next task.
    `STOP_SIGNAL` from an interrupted sweep stops it the same way, but leaves it alive to report.
    Ray workers have no such parent."""
    from ib_brevitas.experiments.loop import STOP

    global _WATCHING
    parent = multiprocessing.parent_process()
    if parent is None or _WATCHING:
        return
    _WATCHING = True
    signal.signal(STOP_SIGNAL, lambda *_: STOP.set())

    def watch() -> None:
        parent.join()  # returns when the parent's end of the pipe closes
        STOP.set()
        with _TRAINING:  # the task's checkpoints are written and its files closed
            os._exit(130)

    threading.Thread(target=watch, daemon=True, name="ib-brevitas-parent-watch").start()


STOP_SIGNAL = signal.SIGUSR1  # not SIGINT: a worker already Ctrl-C'ed by its terminal would take a second
# one as "stop at once" and skip its checkpoints
_WATCHING = False  # one watcher per worker process, whatever number of tasks it trains
_TRAINING = threading.Lock()  # held while a task trains


def train_runs(runs: list[tuple[RunDir, dict, bool]], checkpoint_secs: float) -> list[dict[str, Any]]:
    """Train (run directory, config, resume) triples of one configuration, each exactly as `train` would.

    Together on the seed-batched engine (`batch_loop.train_seed_batch`: the same files in each run
    directory as single runs); configurations it does not cover (float or conv nets, binning
    estimators, the Brevitas engine) one after another. The caller holds the directory locks.
    """
    from ib_brevitas.experiments.batch_loop import check_batch, train_seed_batch
    from ib_brevitas.experiments.loop import train_and_measure

    if not runs:
        return []
    try:
        check_batch([config for _, config, _ in runs])
        batched = True
    except ValueError:
        batched = False
    out = []
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # each run's summary.txt has it
        if batched:
            t0 = time.monotonic()
            code = train_seed_batch([rd for rd, _, _ in runs], [c for _, c, _ in runs], resume=[r for *_, r in runs],
                                    threads=1, checkpoint_secs=checkpoint_secs, progress=False, lock=False)
            if code != 0:
                raise RuntimeError(f"{runs[0][0].path} and {len(runs) - 1} more: training stopped with exit code {code}")
            per = (time.monotonic() - t0) / len(runs)
            return [{"path": str(rd.path), "status": "resumed" if r else "trained", "seconds": per, "batch": len(runs)}
                    for rd, _, r in runs]
        for rd, config, resume in runs:
            t0 = time.monotonic()
            code = train_and_measure(rd, config, resume=resume, threads=1, checkpoint_secs=checkpoint_secs,
                                     progress=False)
            if code != 0:
                raise RuntimeError(f"{rd.path}: training stopped with exit code {code}")
            out.append({"path": str(rd.path), "status": "resumed" if resume else "trained",
                        "seconds": time.monotonic() - t0, "batch": 1})
    return out


@dataclass
class Outcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per failed task
    retries: int = 0


def run_local(tasks: list[Task], *, workers: int, checkpoint_secs: float, max_retries: int,
              tick: Callable[[], None], say: Callable[[str], None]) -> Outcome:
    """Tasks on a pool of `workers` processes; a pool broken by a dead worker is rebuilt and its tasks re-run.

    Ctrl-C (KeyboardInterrupt here, whether or not the workers got the SIGINT too) stops every worker
    at its epoch end with its checkpoints written, then re-raises: the same sweep resumes from them.
    """
    out, pending = Outcome(), list(tasks)
    while pending:
        with ProcessPoolExecutor(min(workers, len(pending)), mp_context=_context(),
                                 initializer=_stop_with_parent) as pool:
            futures = {pool.submit(train_task, t, checkpoint_secs): t for t in pending}
            pending = []
            try:
                while futures:
                    done, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                    tick()
                    for f in done:
                        task = futures.pop(f)
                        try:
                            out.results += f.result()
                        except BrokenProcessPool:
                            pending.append(task)
                        except Exception as e:  # noqa: BLE001 - a failed task is reported, the others go on
                            out.failures.append(_failure(task, e))
            except KeyboardInterrupt:
                _stop_workers(pool)
                raise
        if pending:
            if out.retries >= max_retries:
                out.failures += [_failure(t, RuntimeError(f"its worker process died {max_retries + 1} times"))
                                 for t in pending]
                break
            out.retries += 1
            say(f"a worker process died; restarting the workers, {len(pending)} task(s) resume "
                f"(retry {out.retries} of {max_retries})")
    return out


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ask every worker to stop at its epoch end (`STOP_SIGNAL`), drop the tasks not started, wait."""
    for pid in list(getattr(pool, "_processes", None) or ()):  # the pool's own {pid: process} of its workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNAL)
    pool.shutdown(wait=True, cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    """Fork from a server that imported the training code once (fast restarts); spawn where there is none."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ib_brevitas.experiments.loop", "ib_brevitas.experiments.train"])
        return ctx
    return multiprocessing.get_context("spawn")


def start_worker_server() -> None:
    """Start the local workers' fork server now, before the sweep plans its runs.

    Its imports (torch, Brevitas: seconds) then overlap the parent's own checks of
    every run's settings instead of following them: every worker waits for them,
    so this is time no number of workers wins back.
    """
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def run_ray(tasks: list[Task], *, address: str | None, workers: int | None, checkpoint_secs: float,
            max_retries: int, tick: Callable[[], None], say: Callable[[str], None]) -> Outcome:
    """Tasks as Ray tasks (one CPU each); Ray re-executes one whose worker died, up to `max_retries` times.

    Uses the Ray instance this process is already connected to, else connects
    to `address`, else starts a local one with `workers` CPUs (and stops it).
    """
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": workers}
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False)
    out = Outcome()
    try:
        remote = ray.remote(num_cpus=1, max_retries=max_retries)(train_task)
        refs = {remote.remote(t, checkpoint_secs): t for t in tasks}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            tick()
            for ref in done:
                task = refs.pop(ref)
                try:
                    out.results += ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError (the task's own), WorkerCrashedError
                    out.failures.append(_failure(task, getattr(e, "cause", None) or e))
    finally:
        if started:
            ray.shutdown()
    return out


def _failure(task: Task, e: BaseException) -> str:
    names = ", ".join(Path(p).name for p, _ in task)
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{names}: {type(e).__name__}: {message}"
