"""`ib-brevitas sweep`: a grid of configurations times seeds, one run directory per seed.

    ib-brevitas sweep --sweep-dir runs/study --preset paper-syn
    ib-brevitas sweep --sweep-dir runs/small --activation tanh relu --bits 4 8 --epochs 500 --seeds 0-9

Each seed's directory (DIR/<configuration>-s<seed>) is exactly what
`ib-brevitas train --run-dir` writes, so plot, phases, export, report and the
TensorBoard tab (`--logdir DIR`) read it as any run. DIR/sweep.json names the
grid and records each session's start, end and seeds trained. Rerunning the
command skips finished runs and resumes interrupted ones (train's --resume);
a worker that dies is replaced and its task resumed. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ib_brevitas.experiments.sweep_args import add_arguments  # noqa: F401  the command's flags
from ib_brevitas.experiments.sweep_engines import (
    ENGINES,
    Outcome,
    epochs_done,
    is_done,
    run_local,
    run_ray,
    start_worker_server,
)
from ib_brevitas.experiments.sweep_plan import (
    VERSION,
    Job,
    UsageError,
    check_sweep_dir,
    config_name,
    grid_from_args,
    write_manifest,
)
from ib_brevitas.formatting import format_table
from ib_brevitas.phase_report import thresholds_from_args
from ib_brevitas.rundir import RunDir, RunDirError, RunLock

PROG = "ib-brevitas sweep"


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (UsageError, RunDirError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def plan_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], list[Job]]:
    """The manifest's grid part and every job, all arguments checked (nothing written).

    For the local engine the workers' fork server starts once the cheap checks pass.
    """
    from ib_brevitas.experiments import train
    from ib_brevitas.phases.types import make_thresholds

    if args.engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {args.engine!r}; choose from {', '.join(ENGINES)}")
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address names a Ray cluster; add --engine ray")
    for flag, value, least in (("--workers", args.workers, 1), ("--seeds-per-task", args.seeds_per_task, 1),
                               ("--max-retries", args.max_retries, 0)):
        if value is not None and value < least:
            raise UsageError(f"{flag} must be >= {least}, got {value}")
    grid, points, seeds = grid_from_args(args)
    thresholds = thresholds_from_args(args)
    try:
        make_thresholds(thresholds)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    data = data_settings(args, grid["net"])
    if args.engine == "local":
        start_worker_server()  # its imports run while the settings below are checked
    engine = args.train_engine or train.SETTINGS["engine"]
    checks = argparse.Namespace(threads=1, checkpoint_secs=args.checkpoint_secs, resume=False, overwrite=False)
    sweep_dir = args.sweep_dir.resolve()
    jobs = []
    for point in points:
        net_data = data if point["net"] != "syn" or grid["net"] == ["syn"] else {"dataset": "syn", "data_dir": None}
        cname = config_name(point, grid, net_data["dataset"])
        for seed in seeds:
            settings = {**train.paper_settings(point["net"]), **point, **net_data, "seed": seed, "engine": engine}
            try:
                train.validate(settings, checks)
            except train.UsageError as e:
                raise UsageError(str(e)) from None
            name = f"{cname}-s{seed}"
            jobs.append(Job(name, cname, train.new_config(settings, sweep_dir / name, thresholds)))
    fixed = {"engine": engine, "phase_thresholds": thresholds}
    if grid["net"] != ["syn"]:  # the MNIST nets' data (a SYN sweep's manifest stays as it was)
        fixed.update(data)
    return {"grid": grid, "seeds": seeds, "fixed": fixed}, jobs


def data_settings(args: argparse.Namespace, nets: list[str]) -> dict[str, Any]:
    """--dataset and --data-dir as train takes them: the data of the mnist nets (default mnist), else syn."""
    from ib_brevitas.experiments.train_args import DATASETS

    dataset = args.dataset
    if dataset is not None and dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset is None:
        dataset = "syn" if nets == ["syn"] else "mnist"
    data_dir = None if args.data_dir is None else str(Path(args.data_dir).resolve())
    return {"dataset": dataset, "data_dir": data_dir}


def _run(args: argparse.Namespace) -> int:
    plan, jobs = plan_sweep(args)
    sweep_dir = args.sweep_dir.resolve()
    check_sweep_dir(sweep_dir, plan)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(sweep_dir / ".lock"):
        manifest = {
            "version": VERSION, **plan,
            "configurations": {j.configuration: {k: j.config[k] for k in (*plan["grid"], "dataset")} for j in jobs},
            "runs": {j.name: j.configuration for j in jobs}, "sessions": [],
        }
        old = check_sweep_dir(sweep_dir, plan)
        if old is not None:  # the same grid, perhaps with more seeds now: its sessions go on
            manifest["sessions"] = old.get("sessions", [])
        return _sweep(args, sweep_dir, manifest, jobs)


def _sweep(args: argparse.Namespace, sweep_dir: Path, manifest: dict[str, Any], jobs: list[Job]) -> int:
    from tqdm import tqdm

    dirs = {j.name: RunDir(sweep_dir / j.name) for j in jobs}
    done0 = {j.name for j in jobs if is_done(dirs[j.name], j.config["epochs"])}
    todo = [j for j in jobs if j.name not in done0]
    workers = args.workers or os.cpu_count() or 1
    session = {"started": _now(), "ended": None, "engine": args.engine, "workers": workers,
               "skipped": len(done0), "trained": 0, "failed": 0, "wall_s": None}
    manifest["sessions"].append(session)
    write_manifest(sweep_dir, manifest)
    tasks = _tasks(todo, dirs, args.seeds_per_task, workers)
    t0 = time.monotonic()
    n_conf, n_seeds = len(manifest["configurations"]), len(manifest["seeds"])
    print(f"sweep {sweep_dir}: {len(jobs)} runs ({_n(n_conf, 'configuration')} x {_n(n_seeds, 'seed')}), "
          f"{len(done0)} finished already, {len(tasks)} task(s) on "
          f"{args.engine} ({_n(workers, 'worker')})", file=sys.stderr)
    # The bar counts seed-epochs (a batched task's seeds all finish at its end), its text runs done and seeds/hour.
    epochs = {j.name: j.config["epochs"] for j in jobs}
    start = {n: (epochs[n] if n in done0 else min(epochs_done(dirs[n]), epochs[n])) for n in epochs}
    bar = tqdm(total=sum(epochs.values()), initial=sum(start.values()), unit="epoch", desc="sweep",
               disable=args.no_progress, file=sys.stderr, smoothing=0, unit_scale=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
    pending = {j.name for j in todo}
    now = dict(start)

    def tick() -> None:
        finished = {n for n in pending if dirs[n].summary_path("json").exists()}
        pending.difference_update(finished)
        for n in pending:
            now[n] = min(epochs_done(dirs[n]), epochs[n])
        for n in finished:
            now[n] = epochs[n]
        hours = max(time.monotonic() - t0, 1e-9) / 3600
        seeds = sum((now[n] - start[n]) / max(epochs[n], 1) for n in now)
        bar.set_postfix_str(f"runs {len(jobs) - len(pending)}/{len(jobs)}, {seeds / hours:.1f} seeds/hour",
                            refresh=False)
        bar.update(sum(now.values()) - bar.n)

    outcome = Outcome()
    try:
        if tasks:
            common = dict(checkpoint_secs=args.checkpoint_secs, max_retries=args.max_retries, tick=tick,
                          say=lambda m: tqdm.write(m, file=sys.stderr))
            if args.engine == "ray":
                outcome = _ray(tasks, address=args.address, workers=workers, **common)
            else:
                outcome = run_local(tasks, workers=workers, **common)
        tick()
    except KeyboardInterrupt:
        bar.close()
        print(f"{PROG}: interrupted; rerun the same command to resume (finished runs are kept, the others go "
              "on from their last checkpoint)", file=sys.stderr)
        raise
    finally:
        bar.close()
        wall = time.monotonic() - t0
        trained = sum(r["status"] != "skipped" for r in outcome.results)
        session.update(ended=_now(), wall_s=round(wall, 3), trained=trained, failed=len(outcome.failures),
                       retries=outcome.retries)
        write_manifest(sweep_dir, manifest)
    print(summary_text(manifest, jobs, dirs, wall, trained))
    for line in outcome.failures:
        print(f"{PROG}: failed: {line}", file=sys.stderr)
    if outcome.failures:
        print(f"{PROG}: error: {len(outcome.failures)} task(s) failed (above); rerun the same command to retry "
              "them, the finished runs are kept", file=sys.stderr)
        return 1
    return 0


def _ray(tasks, **kwargs) -> Outcome:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install ray") from None
    return run_ray(tasks, **kwargs)


def _tasks(todo: list[Job], dirs: dict[str, RunDir], per_task: int | None, workers: int) -> list:
    """Seeds of one configuration, in chunks: `per_task`, else as few as keep every worker busy to the end.

    A batch trains each of its seeds faster the more seeds it holds (docs/performance.md), so a batched
    configuration is cut only as far as the workers need: into workers / gcd(configurations, workers)
    equal chunks (2 configurations on 2 workers: one batch each; 1 on 2: halves; 3 on 2: halves, three per
    worker). A configuration the batched engine does not train runs its seeds one after another, so its
    chunks are single seeds. The configurations take turns in the queue, so a sweep stopped early has
    measured all of them.
    """
    from ib_brevitas.experiments.batch_loop import unbatched_reason

    by_config: dict[str, list[Job]] = {}
    for j in todo:
        by_config.setdefault(j.configuration, []).append(j)
    cuts = workers // math.gcd(len(by_config), workers) if by_config else 1
    chunks = []
    for js in by_config.values():
        size = per_task or (1 if unbatched_reason(js[0].config) else math.ceil(len(js) / cuts))
        chunks.append([[(str(dirs[j.name].path), j.config) for j in js[i:i + size]] for i in range(0, len(js), size)])
    return [task for turn in itertools.zip_longest(*chunks) for task in turn if task is not None]


def summary_text(manifest: dict[str, Any], jobs: list[Job], dirs: dict[str, RunDir], wall: float,
                 trained: int) -> str:
    """Per configuration: runs finished of all; then this session's time and rate, and what to run next."""
    rows, per = [], {}
    for j in jobs:
        c = per.setdefault(j.configuration, [0, 0])
        c[0] += is_done(dirs[j.name], j.config["epochs"])
        c[1] += 1
    for name, (done, total) in per.items():
        rows.append([name, f"{done}/{total}", "" if done == total else "incomplete: rerun to resume"])
    rate = f", {trained / wall * 3600:.1f} seeds/hour" if trained and wall > 0 else ""
    sweep_dir = next(iter(dirs.values())).path.parent
    return "\n".join([
        format_table(["configuration", "runs finished", ""], rows),
        f"this session: {trained} run(s) trained in {wall:.1f} s{rate}",
        f"report: ib-brevitas report {sweep_dir}",
    ])


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
