"""`ib-brevitas train`: the paper's SYN experiment as one command.

Trains the 12-10-7-5-4-3-2 network with the paper's protocol (Adam, lr 1e-4,
batch 256, 80/20 stratified split) and measures exact MI of every layer on all
4096 samples at epoch 0 and every K epochs. A run directory holds:

    config.json        the run's settings and library versions
    mi.jsonl           one LayerMI record per layer per measurement
    phases.jsonl       phase events (fitting ended, compression started, ...)
    events.out.tfevents.*  TensorBoard scalars and information-plane data
    checkpoints/last.pt    model, optimizer, RNG and loop state (atomic)

Training runs on `fastpath.SynFastPath` by default: the same Brevitas model,
forward and gradients bit for bit, without Brevitas' per-op module overhead
(`--engine brevitas` trains through the Brevitas modules instead; both give
identical runs). See docs/performance.md.

A checkpoint is written after the first measurement that comes at least
`--checkpoint-secs` after the previous one, and at the end. `--resume`
continues from `checkpoints/last.pt`: records written after it are dropped
from the logs (and purged from TensorBoard) and their epochs trained again;
training is deterministic, so the finished run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ib_brevitas import __version__
from ib_brevitas.experiments.data import stratified_split, syn_dataset
from ib_brevitas.experiments.fastpath import SynFastPath, adam_step, check_against_brevitas
from ib_brevitas.experiments.models import syn_loss, syn_mlp
from ib_brevitas.monitor import InformationPlane, JsonlSink
from ib_brevitas.phase_report import add_threshold_arguments, thresholds_from_args
from ib_brevitas.formatting import format_table
from ib_brevitas.phases import PhaseEvent, PhaseTracker, format_verdicts, write_events
from ib_brevitas.files import append_jsonl, truncate_jsonl
from ib_brevitas.records import LayerMI, read_records
from ib_brevitas.state import counters_state, load_counters_state, observation

PAPER = dict(lr=1e-4, batch_size=256, test_fraction=0.2, epochs=8000, mi_every=5)
# Settings that define what is computed: a resumed run must match them.
_IDENTITY_KEYS = ("dataset", "activation", "bits", "seed", "mi_every", "lr", "batch_size", "test_fraction")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["syn"], default="syn", help="probe/training data (default: syn)")
    p.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    p.add_argument("--bits", type=int, default=8, help="weight and activation bit width (default: 8)")
    p.add_argument("--epochs", type=int, default=PAPER["epochs"], help="training epochs (paper: 8000)")
    p.add_argument("--mi-every", type=int, default=PAPER["mi_every"], help="measure MI every K epochs (paper: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=None, help="output directory (default: runs/syn-<act>-<bits>b-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    p.add_argument("--lr", type=float, default=PAPER["lr"])
    p.add_argument("--batch-size", type=int, default=PAPER["batch_size"])
    p.add_argument("--test-fraction", type=float, default=PAPER["test_fraction"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the SYN net's tiny matrices run slower with more)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--engine", choices=["fast", "brevitas"], default="fast",
                   help="training step: 'fast' (default) computes Brevitas' forward and gradients bit for bit "
                        "in fewer ops; 'brevitas' runs the Brevitas modules and autograd (same results, ~8x slower)")
    p.add_argument("--checkpoint-secs", type=float, default=60.0,
                   help="write checkpoints/last.pt at most this often, and at the end (default: 60; "
                        "0 = at every measurement). A resumed run re-trains the epochs after it")
    add_threshold_arguments(p)


@dataclass
class Run:
    """Everything one training run holds in memory."""

    config: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    plane: InformationPlane
    shuffle: torch.Generator
    fast: SynFastPath | None = None


def _config(args: argparse.Namespace, run_dir: Path) -> dict:
    return {
        "dataset": args.dataset,
        "activation": args.activation,
        "bits": args.bits,
        "epochs": args.epochs,
        "mi_every": args.mi_every,
        "seed": args.seed,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "test_fraction": args.test_fraction,
        "optimizer": "Adam",
        "engine": args.engine,
        "probe": "all 4096 SYN samples",
        "phase_thresholds": thresholds_from_args(args),
        "run_dir": str(run_dir),
        "versions": {
            "ib_brevitas": __version__,
            "torch": torch.__version__,
            "brevitas": __import__("brevitas").__version__,
        },
    }


def _validate(args: argparse.Namespace) -> None:
    for name in ("epochs", "mi_every", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if not 1 <= args.bits <= 16:
        raise SystemExit("--bits must lie in 1..16")
    if args.checkpoint_secs < 0:
        raise SystemExit("--checkpoint-secs must be >= 0")


def build_run(config: dict) -> Run:
    """Data, split, model and optimizer of a run, seeded from its config.

    `config["engine"]` (default "fast") picks the training step; the fast path
    is first checked against Brevitas on this very model (bit for bit).
    """
    seed = config["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    x, y = syn_dataset()
    train_idx, test_idx = stratified_split(y, config["test_fraction"], seed=seed)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    model = syn_mlp(config["activation"], config["bits"])
    # foreach: the same kernels as the default per-tensor loop (bit-identical), fewer calls
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], foreach=True)
    shuffle = torch.Generator().manual_seed(seed)
    engine = config.get("engine", "fast")
    if engine not in ("fast", "brevitas"):
        raise ValueError(f"engine must be 'fast' or 'brevitas', got {engine!r}")
    fast = None
    if engine == "fast":
        try:
            check_against_brevitas(model, xt, yt, batch=config["batch_size"])
            fast = SynFastPath(model)
        except RuntimeError as e:  # e.g. another torch/Brevitas: stay exact, train through Brevitas
            warnings.warn(f"{e}. Training through the Brevitas modules instead (same results, slower).")
    # The fast path's codes are the monitor's too, checked by it against its hooked Brevitas pass.
    plane = InformationPlane(model, xt, yt, batch_size=len(xt), codes_fn=None if fast is None else fast.codes)
    return Run(config, model, optimizer, xt[train_idx], yt[train_idx], xt[test_idx], yt[test_idx], plane, shuffle,
               fast=fast)


def train_epoch(run: Run) -> float:
    """One epoch of minibatch Adam; returns the mean training loss."""
    n = run.x_train.shape[0]
    order = torch.randperm(n, generator=run.shuffle)
    batch, fast = run.config["batch_size"], run.fast
    # One gather per epoch; the batches are row slices of it (same values as x[idx]).
    x, y = run.x_train[order], run.y_train[order]
    if fast is None:
        run.model.train()
    total = 0.0
    for start in range(0, n, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        if fast is not None:
            loss = fast.train_step(xb, yb)  # sets fresh .grad, as zero_grad + backward
            adam_step(run.optimizer)
        else:
            run.optimizer.zero_grad(set_to_none=True)
            loss = syn_loss(run.model(xb), yb)
            loss.backward()
            run.optimizer.step()
        total += loss.item() * xb.shape[0]
    return total / n


def evaluate(run: Run) -> dict[str, float]:
    """Loss and accuracy on the train and test splits (eval mode, no trace left)."""
    out = {}
    with observation(run.model) if run.fast is None else torch.no_grad():
        for split, x, y in (("train", run.x_train, run.y_train), ("test", run.x_test, run.y_test)):
            probs = run.model(x) if run.fast is None else run.fast.forward(x)
            out[f"{split}_loss"] = float(syn_loss(probs, y))
            out[f"{split}_acc"] = float((probs.argmax(dim=1) == y).float().mean())
    return out


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def save_checkpoint(run: Run, run_dir: Path, epoch: int, tracker: PhaseTracker) -> None:
    """Atomically replace checkpoints/last.pt (a crash leaves the previous one intact)."""
    path = _checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "model": run.model.state_dict(),
        "counters": counters_state(run.model),
        "optimizer": run.optimizer.state_dict(),
        "shuffle": run.shuffle.get_state(),
        "rng": (torch.get_rng_state(), np.random.get_state(), random.getstate()),
        "config": run.config,
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(run: Run, run_dir: Path) -> int:
    path = _checkpoint_path(run_dir)
    if not path.exists():
        return -1
    state = torch.load(path, weights_only=False)
    run.model.load_state_dict(state["model"])
    load_counters_state(run.model, state["counters"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.shuffle.set_state(state["shuffle"])
    torch_rng, np_rng, py_rng = state["rng"]
    torch.set_rng_state(torch_rng)
    np.random.set_state(np_rng)
    random.setstate(py_rng)
    return int(state["epoch"])


def _prepare_run_dir(args: argparse.Namespace, run_dir: Path, config: dict) -> dict:
    cfg_path = run_dir / "config.json"
    if args.resume:
        if not cfg_path.exists():
            raise SystemExit(f"--resume: {run_dir} holds no config.json; start the run without --resume")
        old = json.loads(cfg_path.read_text())
        diff = [k for k in _IDENTITY_KEYS if old.get(k) != config[k]]
        if diff:
            raise SystemExit(
                f"--resume: {run_dir} was run with other settings ({', '.join(f'{k}={old.get(k)}' for k in diff)}); "
                "pass the same flags or use another --run-dir"
            )
    elif (run_dir / "mi.jsonl").exists() or _checkpoint_path(run_dir).exists():
        raise SystemExit(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    return config


def _tensorboard_writer(run_dir: Path, purge_step: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=10)


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    run_dir = args.run_dir or Path("runs") / f"syn-{args.activation}-{args.bits}b-s{args.seed}"
    config = _prepare_run_dir(args, run_dir, _config(args, run_dir))
    run_ = build_run(config)
    epochs, every = config["epochs"], config["mi_every"]
    mi_path, phases_path = run_dir / "mi.jsonl", run_dir / "phases.jsonl"

    last = load_checkpoint(run_, run_dir) if args.resume else -1
    # Keep only what the checkpoint covers: later records are re-measured.
    truncate_jsonl(mi_path, lambda r: r["epoch"] <= last)
    kept = read_records(mi_path) if mi_path.exists() else []
    # Phase events are a function of the records: replay them, rewrite the file.
    tracker = PhaseTracker.from_records(kept, **config["phase_thresholds"])
    write_events(phases_path, tracker.events)

    # A fresh run also writes a purge marker: TensorBoard's Python loader ignores
    # a run's first one, so only then do the markers of later resumes take effect.
    writer = _tensorboard_writer(run_dir, purge_step=last + 1 if last >= 0 else 0)
    from ib_brevitas.tensorboard.summary import TensorBoardSink

    tb = TensorBoardSink(writer=writer)
    run_.plane.history.extend(kept)
    run_.plane.add_sink(JsonlSink(mi_path))
    run_.plane.add_sink(lambda records: tb.write(records, step=records[0].epoch))

    def on_phase_events(records: list[LayerMI]) -> None:
        events: list[PhaseEvent] = tracker.update(records)
        if events:
            append_jsonl(phases_path, [e.to_dict() for e in events])
            tb.write_phase_events([e.to_dict() for e in events], step=records[0].epoch)
            for e in events:
                tqdm.write(f"epoch {e.epoch}: {e.layer} {e.kind.replace('_', ' ')}")

    run_.plane.add_sink(on_phase_events)

    saved_at = time.monotonic()

    def measure(epoch: int, train_loss: float | None) -> dict:
        nonlocal saved_at
        metrics = evaluate(run_)
        if train_loss is not None:
            metrics["train_loss_running"] = train_loss
        for k, v in metrics.items():
            split, name = k.split("_", 1)
            writer.add_scalar(f"{name}/{split}", v, epoch)
        # Counting and the sinks run beside the next epochs; the codes are taken now.
        run_.plane.measure_async(epoch, step=epoch * _steps_per_epoch(run_))
        if epoch == epochs or time.monotonic() - saved_at >= args.checkpoint_secs:
            # Records and events up to here must be on disk before a checkpoint says they
            # are (a resume purges TensorBoard after it); SummaryWriter flushes every 10 s anyway.
            run_.plane.flush()
            writer.flush()
            save_checkpoint(run_, run_dir, epoch, tracker)
            saved_at = time.monotonic()
        return metrics

    trains = last < epochs
    try:
        if last < 0:
            metrics = measure(0, None)
            last = 0
        else:
            metrics = {}
        bar = tqdm(range(last + 1, epochs + 1), desc=run_dir.name, unit="epoch",
                   initial=last, total=epochs, disable=args.no_progress, file=sys.stderr)
        for epoch in bar:
            train_loss = train_epoch(run_)
            if epoch % every == 0 or epoch == epochs:
                metrics = measure(epoch, train_loss)
                mi = {}
                if run_.plane.history:  # the last counted measurement of the top layer
                    top = run_.plane.history[-1]
                    mi = dict(i_xt=f"{top.i_xt:.2f}", i_ty=f"{top.i_ty:.3f}")
                bar.set_postfix(acc=f"{metrics['test_acc']:.3f}", **mi, refresh=False)
        run_.plane.flush()
        final_events = tracker.finish()
        write_events(phases_path, tracker.events)  # idempotent when a finished run is resumed
        if final_events and trains:
            tb.write_phase_events([e.to_dict() for e in final_events], step=epochs)
    finally:
        try:
            run_.plane.flush()  # whatever was measured before a crash or Ctrl-C is recorded
        finally:
            writer.close()

    print(summary_table(read_records(mi_path)))
    print(format_verdicts(tracker.verdicts()))
    if metrics:
        print(f"final: train acc {metrics['train_acc']:.4f}, test acc {metrics['test_acc']:.4f}")
    print(f"run directory: {run_dir}")
    return 0


def summary_table(records: list[LayerMI]) -> str:
    """Per layer: I(X;T) and I(T;Y) at the first measurement, their maxima, and the last."""
    by_layer: dict[str, list[LayerMI]] = {}
    for r in sorted(records, key=lambda r: (r.layer_index, r.epoch)):
        by_layer.setdefault(r.layer, []).append(r)
    head = ["layer", "", "I(X;T) start", "max", "final", "I(T;Y) start", "max", "final"]
    rows = []
    for name, rs in by_layer.items():
        xt, ty = [r.i_xt for r in rs], [r.i_ty for r in rs]
        rows.append([name, "" if name == rs[0].label else rs[0].label] + [f"{v:.3f}" for v in (xt[0], max(xt), xt[-1], ty[0], max(ty), ty[-1])])
    n = records[0].n_samples if records else 0
    h_y = records[0].h_y if records else 0.0
    return format_table(head, rows) + f"\n(bits; bounds: I(X;T) <= log2 N = {np.log2(max(n, 1)):.3f}, I(T;Y) <= H(Y) = {h_y:.3f})"


def _steps_per_epoch(run_: Run) -> int:
    return -(-run_.x_train.shape[0] // run_.config["batch_size"])
