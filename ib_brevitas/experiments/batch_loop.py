"""Seed batches into run directories: S seeds of one configuration trained together, each into its own `RunDir`.

`train_seed_batch(run_dirs, configs, resume=...)` is `loop.train_and_measure`
for S seeds at once on `engine.SeedBatch`: every seed's directory ends up
holding exactly what its own `ib-brevitas train` run writes (config.json,
mi.jsonl, phases.jsonl, metrics.jsonl, summary.json/.txt, TensorBoard events,
checkpoints/last.pt in `paper_run.checkpoint_state`'s format), value for
value, so `train --resume`, `plot`, `phases` and `export` treat a batched seed
as a single run. Each seed is set up by `paper_run.build_run` itself (its
data, split, initialisation, shuffle generator and RNG state are the single
run's), then its weights join the batch.

Resume rule: all seeds of a batch stand at one step, so the seeds are grouped
by the epoch of their checkpoint (none: a fresh start) and each group trains
as its own batch, one group after another. A kill while the S checkpoints of
a batch were being written therefore costs time, never a wrong number.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ib_brevitas.rundir import RunDir, RunDirError

# Config keys that may differ between the seeds of one batch (everything else must agree).
PER_SEED_KEYS = ("seed", "run_dir", "versions")


def unbatched_reason(config: dict[str, Any]) -> str | None:
    """Why the seed-batched engine does not train this configuration ("a float net", ...), None if it does."""
    from ib_brevitas.experiments.models import FLOAT_BITS

    if config["bits"] == FLOAT_BITS:
        return "a float net"
    if config.get("net") == "mnist-conv":
        return "the conv net"
    if config.get("estimators"):
        return "binning estimators"
    engine = config.get("engine", "fast")
    return None if engine == "fast" else f"engine {engine!r}"


def check_batch(configs: Sequence[dict[str, Any]]) -> None:
    """Refuse configs that differ in more than their seed, or that the batched engine does not train."""
    if not configs:
        raise ValueError("train_seed_batch: no run directories given")
    shared = [{k: v for k, v in c.items() if k not in PER_SEED_KEYS} for c in configs]
    for c, s in zip(configs[1:], shared[1:]):
        diff = sorted(k for k in set(s) | set(shared[0]) if s.get(k) != shared[0].get(k))
        if diff:
            raise ValueError(f"train_seed_batch: the configs of seeds {configs[0]['seed']} and {c['seed']} differ in "
                             f"{', '.join(diff)}; batch only seeds of one configuration")
    seeds = [c["seed"] for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"train_seed_batch: seeds must be distinct, got {seeds}")
    why = unbatched_reason(configs[0])
    if why:
        raise ValueError(f"train_seed_batch: the seed-batched engine trains quantized MLPs on the fast engine, not "
                         f"{why}; train these runs one by one (loop.train_and_measure)")


def train_seed_batch(run_dirs: Sequence[Any], configs: Sequence[dict[str, Any]], *, resume: bool | Sequence[bool],
                     threads: int = 1, checkpoint_secs: float = 60.0, progress: bool = True,
                     lock: bool = True) -> int:
    """Train the seeds of one configuration together, each into its own run directory; 0, or 130 on Ctrl-C.

    run_dirs, configs: one per seed (configs as `train.new_config` or
    `train.resumed_config` make them, differing only in seed and run_dir);
    resume: as `train --resume`, for all or per seed. lock: take each
    directory's `RunDir.lock()` (False when the caller holds them already).
    """
    rds = [rd if isinstance(rd, RunDir) else RunDir(rd) for rd in run_dirs]
    configs = list(configs)
    if len(rds) != len(configs):
        raise ValueError(f"train_seed_batch: {len(rds)} run directories but {len(configs)} configs")
    check_batch(configs)
    resumes = [resume] * len(rds) if isinstance(resume, bool) else list(resume)
    if len(resumes) != len(rds):
        raise ValueError(f"train_seed_batch: {len(rds)} run directories but {len(resumes)} resume flags")
    torch.set_num_threads(threads)
    with contextlib.ExitStack() as locks:
        if lock:
            for rd in rds:
                locks.enter_context(rd.lock())
        states = [rd.load_checkpoint() if r else None for rd, r in zip(rds, resumes)]
        for rd, state in zip(rds, states):
            if state is not None and "plane" not in state:
                raise RunDirError(f"{rd.checkpoint_path} is an ib-brevitas 0.1 checkpoint; resume it on its own "
                                  f"(ib-brevitas train --resume --run-dir {rd.path})")
        groups: dict[int | None, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(None if state is None else int(state["epoch"]), []).append(i)
        for key in sorted(groups, key=lambda e: -(1 << 62) if e is None else e):
            ix = groups[key]
            code = _train_group([rds[i] for i in ix], [configs[i] for i in ix], [states[i] for i in ix],
                                [resumes[i] for i in ix], checkpoint_secs, progress)
            if code:
                return code
    return 0


def _seed_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(S, ...) of the seeds' tensors: one shared copy, expanded, where all are equal (the MNIST nets' fixed
    train/test files: 20 copies of Fashion-MNIST would be 3.7 GB), else stacked (SYN: a split per seed)."""
    first = tensors[0]
    if all(t is first or torch.equal(t, first) for t in tensors[1:]):
        return first.unsqueeze(0).expand(len(tensors), *first.shape)
    return torch.stack(tensors)


def _train_group(rds: list[RunDir], configs: list[dict], states: list[dict | None], resumes: list[bool],
                 checkpoint_secs: float, progress: bool) -> int:
    """Seeds standing at one step (the same checkpoint epoch, or all fresh): train_and_measure's loop, batched."""
    from torch.utils.tensorboard import SummaryWriter

    from ib_brevitas.experiments.engine import SeedBatch
    from ib_brevitas.experiments.loop import _StopAtEpochEnd, final_metrics, run_summary_text
    from ib_brevitas.experiments.paper_run import build_run
    from ib_brevitas.files import sync_files
    from ib_brevitas.monitor import InformationPlane

    runs, rngs = [], []
    for config in configs:  # the single run's own set-up; the batch's start() is the fast path's check
        runs.append(build_run({**config, "engine": "brevitas"}))
        rngs.append((torch.get_rng_state(), np.random.get_state(), random.getstate()))
    shapes = {tuple(r.x_train.shape) for r in runs}
    if len(shapes) > 1:
        raise ValueError(f"train_seed_batch: the seeds' training splits differ in shape ({sorted(shapes)})")
    c0, S = configs[0], len(runs)
    epochs, every, start = c0["epochs"], c0["mi_every"], runs[0].first_epoch
    batch = SeedBatch([r.model for r in runs], lr=c0["lr"], batch_size=c0["batch_size"])
    x_train, y_train, x_test, y_test = (_seed_stack([getattr(r, n) for r in runs])
                                        for n in ("x_train", "y_train", "x_test", "y_test"))
    y_prefit = _seed_stack([r.y_prefit for r in runs]) if start < 0 else None
    last = None if states[0] is None else int(states[0]["epoch"])
    for k, (run, state) in enumerate(zip(runs, states)):
        if state is not None:
            batch.load_state(k, state)
            run.shuffle.set_state(state["shuffle"])
            rngs[k] = state["rng"]
    probe = runs[0].plane  # the whole data set, the same for every seed: one copy serves all
    fell_back = not batch.start(x_train, y_train, probe=probe.inputs)  # then the hooked pass gives the codes
    dropped = [bool(st and st["plane"]["codes_fn_dropped"]) for st in states]
    planes = []
    for k, (run, state) in enumerate(zip(runs, states)):
        run.plane = InformationPlane(run.model, probe.inputs, probe.labels, batch_size=probe.batch_size,
                                     codes_fn=batch.codes_fn(k),
                                     scales_fn=None if fell_back else (lambda k=k: batch.scales(k)))
        if state is not None:
            run.plane.load_state_dict(state["plane"])
        planes.append(run.plane)
    steps_per_epoch = runs[0].steps_per_epoch
    for run in runs:  # their rows live in the stacks now
        run.x_train = run.y_train = run.x_test = run.y_test = run.y_prefit = None

    writers = []
    for rd, config, state, resume, plane in zip(rds, configs, states, resumes, planes):
        if not resume:
            rd.truncate_snapshots(start - 1)
        elif state is None:  # killed before its first checkpoint: training is deterministic, start again
            rd.truncate_records(start - 1)
            rd.write_events([])
            rd.truncate_snapshots(start - 1)
        else:
            rd.truncate_snapshots(last)
        rd.write_config(config)
        rd.truncate_metrics(start - 1 if last is None else last)
        writer = SummaryWriter(log_dir=str(rd.path), purge_step=max(0, last + 1 - start) if last is not None else 0,
                               flush_secs=10)
        writers.append(writer)
        # mi.jsonl and metrics.jsonl are fsync'ed before each checkpoint, not per measurement: a killed
        # process loses nothing written; an OS crash loses at most what the next resume re-trains anyway.
        plane.record_to(rd, writer=writer, on_events=_announcer(rd.path.name), step_offset=-start,
                        sync=False, **config["phase_thresholds"])

    saved_at = time.monotonic()
    metrics: list[dict[str, float]] = [{} for _ in runs]

    def save(epoch: int) -> None:
        nonlocal saved_at
        for k, (rd, run, writer) in enumerate(zip(rds, runs, writers)):
            plane = run.plane.state_dict()
            if fell_back:  # codes_fn None by the engine, not dropped by the monitor: as its single run says
                plane["codes_fn_dropped"] = dropped[k]
            state = {"epoch": epoch, **batch.state(k), "shuffle": run.shuffle.get_state(), "rng": rngs[k],
                     "plane": plane, "config": configs[k]}
            writer.flush()
            sync_files([rd.records_path, rd.metrics_path])  # on disk before a checkpoint says they are
            rd.save_checkpoint(state)
        saved_at = time.monotonic()

    def measure(epoch: int, losses: torch.Tensor | None) -> None:
        nonlocal metrics
        metrics = batch.evaluate({"train": (x_train, y_train), "test": (x_test, y_test)})
        step = (epoch - start) * steps_per_epoch
        running = None if losses is None else losses.tolist()
        for k, (rd, writer, plane) in enumerate(zip(rds, writers, planes)):
            if epoch >= 0:
                for name, v in metrics[k].items():
                    split, what = name.split("_", 1)
                    writer.add_scalar(f"{what}/{split}", v, epoch - start)  # steps are epoch + K after a prefit
            row = {"epoch": epoch, **metrics[k], "train_loss_running": None if running is None else running[k]}
            rd.append_metrics({**row, "prefit_random": True} if epoch < 0 else row, sync=False)
            plane.measure_async(epoch, step=step)
        if epoch == epochs or time.monotonic() - saved_at >= checkpoint_secs:
            save(epoch)

    due = lambda epoch: epoch == epochs or (epoch - start if epoch < 0 else epoch) % every == 0
    name = f"{rds[0].path.name} +{S - 1} seed(s)" if S > 1 else rds[0].path.name
    stop = _StopAtEpochEnd()
    try:
        if last is None:
            measure(start, None)
            last = start
        bar = tqdm(range(last + 1, epochs + 1), desc=name, unit="epoch", initial=last - start,
                   total=epochs - start, disable=not progress, file=sys.stderr)
        with stop:
            for epoch in bar:
                losses = batch.train_epoch(x_train, y_prefit if epoch <= 0 else y_train, [r.shuffle for r in runs],
                                           losses=due(epoch))  # only measured epochs report their loss
                if due(epoch):
                    measure(epoch, losses)
                    bar.set_postfix(acc=f"{np.mean([m['test_acc'] for m in metrics]):.3f}", refresh=False)
                if stop.requested and epoch < epochs:
                    save(epoch)
                    bar.close()
                    print(f"interrupted: checkpoints of epoch {epoch} saved; continue with the same call and "
                          f"resume=True, or one seed with: ib-brevitas train --resume --run-dir {rds[0].path}",
                          file=sys.stderr)
                    return 130
        verdicts = [plane.finish_phases() for plane in planes]
        for plane in planes:
            plane.close()
    finally:
        try:
            for plane in planes:
                plane.close()
        finally:
            for writer in writers:
                writer.close()
            sync_files(p for rd in rds for p in (rd.records_path, rd.metrics_path))

    for rd, config, v, m in zip(rds, configs, verdicts, metrics):
        m = m or final_metrics(rd)  # a finished seed resumed trains nothing: its last measured metrics
        data, text = run_summary_text(rd.read_records(), v, [], config.get("phase_thresholds", {}))
        rd.write_summary({**data, "final_metrics": m}, text)
        if m:
            print(f"{rd.path}: train acc {m['train_acc']:.4f}, test acc {m['test_acc']:.4f}")
    return 0


def _announcer(name: str):
    """The phase events of one seed as progress lines, named by its run directory."""
    def say(events: list[Any]) -> None:
        for e in events:
            tqdm.write(f"{name} epoch {e.epoch}: {e.layer} {e.kind.replace('_', ' ')}")

    return say
