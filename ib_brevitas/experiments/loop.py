"""The loop behind `ib-brevitas train`: epochs, measurements, checkpoints, into one `RunDir`.

The monitor writes the records, phase events and TensorBoard data
(`InformationPlane.record_to`); this loop adds the metrics file, checkpoints
and the end-of-run summary. On resume the checkpoint's copy of the records is
the truth: mi.jsonl and phases.jsonl are made to agree with it.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from typing import Any

import torch
from tqdm import tqdm

from ib_brevitas.experiments.models import freeze_relu_ranges
from ib_brevitas.experiments.paper_run import build_run, checkpoint_state, evaluate, restore, train_epoch
from ib_brevitas.phases import format_verdicts, run_summary
from ib_brevitas.records import LayerMI
from ib_brevitas.rundir import RunDir, RunDirError


def train_and_measure(rd: RunDir, config: dict[str, Any], *, resume: bool, threads: int = 1,
                      checkpoint_secs: float = 60.0, progress: bool = True) -> int:
    torch.set_num_threads(threads)
    run = build_run(config)
    epochs, every, start = config["epochs"], config["mi_every"], run.first_epoch
    last = _resume_point(rd, run) if resume else None
    freeze = config.get("freeze_relu_after")
    if freeze is not None and last is not None and last >= freeze:
        freeze_relu_ranges(run.model)  # not in the checkpoint: frozen again on resume
    if not resume:  # a run killed before its first checkpoint may have left snapshots
        rd.truncate_snapshots(start - 1)
    rd.write_config(config)  # after the resume checks: it never names a length the records contradict
    rd.truncate_metrics(start - 1 if last is None else last)
    if run.plane is None:  # a float net: every record is binned, and those are recomputed at the end
        rd.truncate_records(start - 1)

    # A fresh run also writes a purge marker: TensorBoard's Python loader ignores
    # a run's first one, so only then do the markers of later resumes take effect.
    from torch.utils.tensorboard import SummaryWriter

    # TensorBoard steps are >= 0: a prefit's epochs -K..0 go to steps 0..K, every step is epoch + K.
    offset = -start
    writer = SummaryWriter(log_dir=str(rd.path), purge_step=max(0, last + 1 + offset) if last is not None else 0,
                           flush_secs=10)

    def say(events: list[Any]) -> None:
        for e in events:
            tqdm.write(f"epoch {e.epoch}: {e.layer} {e.kind.replace('_', ' ')}")

    plane = run.plane
    if plane is not None:
        plane.record_to(rd, writer=writer, on_events=say, step_offset=offset, **config["phase_thresholds"])
    saved_at = time.monotonic()
    metrics: dict[str, float] = {}

    def save(epoch: int) -> None:
        nonlocal saved_at
        # Records and events up to here must be on disk before a checkpoint says they
        # are (a resume purges TensorBoard after it); SummaryWriter flushes every 10 s anyway.
        state = checkpoint_state(run, epoch)
        writer.flush()
        rd.save_checkpoint(state)
        saved_at = time.monotonic()

    def measure(epoch: int, train_loss: float | None) -> None:
        nonlocal metrics
        metrics = evaluate(run)
        if epoch >= 0:
            for k, v in metrics.items():
                split, name = k.split("_", 1)
                writer.add_scalar(f"{name}/{split}", v, epoch + offset)
        row = {"epoch": epoch, **metrics, "train_loss_running": train_loss}
        rd.append_metrics({**row, "prefit_random": True} if epoch < 0 else row)
        step = (epoch - start) * run.steps_per_epoch
        if run.binned is not None:  # binned post hoc, from this state (global bounds need the whole run)
            rd.save_snapshot(epoch, step, copy.deepcopy(run.model.state_dict()))
        if plane is not None:  # counting and the sinks run beside the next epochs; the codes are taken now
            plane.measure_async(epoch, step=step)
        if epoch == epochs or time.monotonic() - saved_at >= checkpoint_secs:
            save(epoch)

    def due(epoch: int) -> bool:
        return epoch == epochs or (epoch - start if epoch < 0 else epoch) % every == 0

    stop = _StopAtEpochEnd()
    try:
        if last is None:
            measure(start, None)
            last = start
        bar = tqdm(range(last + 1, epochs + 1), desc=rd.path.name, unit="epoch",
                   initial=last - start, total=epochs - start, disable=not progress, file=sys.stderr)
        with stop:
            for epoch in bar:
                train_loss = train_epoch(run, prefit=epoch <= 0)  # epochs -K+1..0 end the prefit's K epochs
                if epoch == freeze:
                    freeze_relu_ranges(run.model)
                if due(epoch):
                    measure(epoch, train_loss)
                    top = plane.history[-1] if plane is not None and plane.history else None
                    mi = dict(i_xt=f"{top.i_xt:.2f}", i_ty=f"{top.i_ty:.3f}") if top else {}
                    bar.set_postfix(acc=f"{metrics['test_acc']:.3f}", **mi, refresh=False)
                if stop.requested and epoch < epochs:
                    save(epoch)
                    bar.close()
                    print(f"interrupted: checkpoint of epoch {epoch} saved in {rd.checkpoint_path}; continue "
                          f"with: ib-brevitas train --resume --run-dir {rd.path}", file=sys.stderr)
                    return 130
        verdicts = plane.finish_phases() if plane is not None else {}
        if plane is not None:
            plane.close()  # every exact record in mi.jsonl before the binned ones join it
        binned = finish_binning(rd, run, writer, offset)
    finally:
        try:
            if plane is not None:
                plane.close()  # whatever was measured before a crash is recorded
        finally:
            writer.close()

    records = rd.read_records()
    metrics = metrics or final_metrics(rd)  # a finished run resumed trains nothing: its last measured metrics
    data, text = run_summary_text(records, verdicts, binned, config.get("phase_thresholds", {}))
    rd.write_summary({**data, "final_metrics": metrics}, text)
    print(text)
    if metrics:
        print(f"final: train acc {metrics['train_acc']:.4f}, test acc {metrics['test_acc']:.4f}")
    print(f"run directory: {rd.path}")
    return 0


def finish_binning(rd: RunDir, run: Any, writer: Any, step_offset: int = 0) -> list[LayerMI]:
    """The binned records of the whole run, from its snapshots (global bounds over all of them), into mi.jsonl.

    mi.jsonl is rewritten atomically as its exact records followed by these, so
    a finished run resumed again writes the same file.
    """
    if run.binned is None:
        return []
    from ib_brevitas.binned import measure_snapshots
    from ib_brevitas.files import write_jsonl

    binned = measure_snapshots(run.binned, rd.read_snapshots())
    exact = [r for r in rd.read_records() if r.exact]
    write_jsonl(rd.records_path, [r.to_dict() for r in exact + binned])
    if writer is not None:
        from ib_brevitas.tensorboard.summary import TensorBoardSink

        sink = TensorBoardSink(writer=writer, step_offset=step_offset)
        for group in _by(binned, lambda r: (r.estimator, r.epoch)).values():
            sink.write(group)
    return binned


def _by(records: list[LayerMI], key: Any) -> dict[Any, list[LayerMI]]:
    out: dict[Any, list[LayerMI]] = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def estimator_verdicts(records: list[LayerMI], thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per binning estimator, per layer: the offline detector's verdict on that estimator's series alone."""
    from ib_brevitas.phases import detect

    out: dict[str, dict[str, Any]] = {}
    for label, rs in _by([r for r in records if not r.exact], lambda r: r.estimator).items():
        layers = _by(sorted(rs, key=lambda r: (r.layer_index, r.epoch)), lambda r: r.layer)
        out[label] = {name: detect([r.epoch for r in ls], [r.i_xt for r in ls], [r.i_ty for r in ls], layer=name,
                                   n_samples=ls[0].n_samples, h_y=ls[0].h_y, **thresholds) for name, ls in layers.items()}
    return out


def final_metrics(rd: RunDir) -> dict[str, float]:
    """The last metrics.jsonl row's losses and accuracies ({} when there is none)."""
    rows = rd.read_metrics()
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    return {k: rows[-1][k] for k in keys if k in rows[-1]} if rows else {}


def run_summary_text(records: list[LayerMI], verdicts: dict[str, Any], binned: list[LayerMI],
                     thresholds: dict[str, float]) -> tuple[dict[str, Any], str]:
    """summary.json (exact under "layers", binned per estimator under "binned") and summary.txt.

    `phases.run_summary` tables: one "peak" (the verdict's) in the table, the verdicts and the tab.
    """
    exact = [r for r in records if r.exact]
    data: dict[str, Any] = {"layers": [], "binned": {}}
    parts = []
    if exact:
        d, text = run_summary(exact, verdicts)
        data.update(d)
        parts = [text, format_verdicts(verdicts)]
    for label, vs in estimator_verdicts(binned, thresholds).items():
        d, text = run_summary([r for r in binned if r.estimator == label], vs)
        data["binned"][label] = d["layers"]
        parts += [f"\nbinned, {label} (an estimate, not exact MI):", text, format_verdicts(vs)]
    return data, "\n".join(parts)


STOP = threading.Event()  # set: every training loop of this process stops as after Ctrl-C (a sweep worker orphaned)


class _StopAtEpochEnd:
    """Ctrl-C (or `STOP`) asks the loop to checkpoint at the end of the epoch and stop; a second Ctrl-C stops at once."""

    interrupted = False

    @property
    def requested(self) -> bool:
        return self.interrupted or STOP.is_set()

    def __enter__(self) -> "_StopAtEpochEnd":
        self._old = signal.signal(signal.SIGINT, self._handle) if _main_thread() else None
        return self

    def _handle(self, *_: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _resume_point(rd: RunDir, run: Any) -> int | None:
    """Load the checkpoint into `run`; its epoch, or None (start afresh) when there is none."""
    state = rd.load_checkpoint()
    if state is None:  # killed before its first checkpoint: training is deterministic, start again
        rd.truncate_records(run.first_epoch - 1)
        rd.write_events([])
        rd.truncate_snapshots(run.first_epoch - 1)
        return None
    if "plane" not in state:  # a checkpoint of ib-brevitas 0.1: the records come from mi.jsonl
        _adopt_records(rd, run, int(state["epoch"]))
    last = restore(run, state)
    rd.truncate_snapshots(last)
    return last


def _adopt_records(rd: RunDir, run: Any, last: int) -> None:
    """Resume an 0.1 checkpoint: mi.jsonl must cover every measured epoch up to `last`."""
    kept = rd.truncate_records(last)
    every = run.config["mi_every"]
    expected = {0, *range(every, last + 1, every), last}
    have = {}
    for r in kept:
        have.setdefault(r.epoch, set()).add(r.layer)
    missing = sorted(e for e in expected if have.get(e) != set(run.plane.layer_names))
    if missing:
        raise RunDirError(
            f"{rd.records_path} does not cover the checkpoint (epoch {last}): no complete records for epochs "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; restore the file, or start again with --overwrite"
        )
    run.plane.load_state_dict({
        "version": 1, "layer_names": run.plane.layer_names, "n_samples": run.plane.n_samples,
        "history": [r.to_dict() for r in kept], "passes": len(have), "codes_fn_dropped": False,
    })


