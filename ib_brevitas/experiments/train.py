"""`ib-brevitas train`: the paper's SYN experiment as one command.

Trains the 12-10-7-5-4-3-2 network with the paper's protocol (Adam, lr 1e-4,
batch 256, 80/20 stratified split) and measures exact MI of every layer on all
4096 samples at epoch 0 and every K epochs, into a `RunDir` (records, phase
events, metrics, summary, TensorBoard data, checkpoints; see `ib_brevitas.rundir`).

Training runs on `fastpath.SynFastPath` by default: the same Brevitas model,
forward and gradients bit for bit, without Brevitas' per-op module overhead
(`--engine brevitas` trains through the Brevitas modules instead; both give
identical runs). See docs/performance.md.

A checkpoint is written after the first measurement that comes at least
`--checkpoint-secs` after the previous one, at the end and on Ctrl-C. It holds
the monitor's records, so `--resume` restores mi.jsonl and phases.jsonl to
exactly the checkpoint (whatever a crash left after it) and re-trains the
epochs after it; training is deterministic, so the finished run equals an
uninterrupted one. `--resume` takes the run's own settings from config.json:
a flag that contradicts them is refused, a larger `--epochs` extends the run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ib_brevitas import __version__
from ib_brevitas.experiments.paper_run import ENGINES, PAPER
from ib_brevitas.phase_report import add_threshold_arguments, thresholds_from_args
from ib_brevitas.rundir import IDENTITY_KEYS, RunDir, RunDirError

# Flags that are settings of the run (None = not given: the paper's value, or the run's own on --resume).
SETTINGS = dict(net="syn", dataset="syn", activation="tanh", bits=8, epochs=PAPER["epochs"],
                mi_every=PAPER["mi_every"], seed=0, lr=PAPER["lr"], batch_size=PAPER["batch_size"],
                test_fraction=PAPER["test_fraction"], engine="fast")


class UsageError(ValueError):
    """A bad argument: reported as `ib-brevitas train: error: ...`, exit code 2, before anything is written."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["syn"], default=None, help="probe/training data (default: syn)")
    p.add_argument("--activation", choices=["tanh", "relu"], default=None, help="hidden activation (default: tanh)")
    p.add_argument("--bits", type=int, default=None, help="weight and activation bit width, 2..16 (default: 8)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (paper: 8000); with --resume a larger value extends the run")
    p.add_argument("--mi-every", type=int, default=None, help="measure MI every K epochs (paper: 5)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, split and data order (default: 0)")
    p.add_argument("--run-dir", type=Path, default=None, help="output directory (default: runs/syn-<act>-<bits>b-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir by a fresh one")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (paper: 256)")
    p.add_argument("--test-fraction", type=float, default=None, help="held-out share, stratified (paper: 0.2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the SYN net's tiny matrices run slower with more)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="training step: 'fast' (default) computes Brevitas' forward and gradients bit for bit "
                        "in fewer ops; 'brevitas' runs the Brevitas modules and autograd (same results, ~5x slower)")
    p.add_argument("--checkpoint-secs", type=float, default=60.0,
                   help="write checkpoints/last.pt at most this often, and at the end (default: 60; "
                        "0 = at every measurement). A resumed run re-trains the epochs after it")
    add_threshold_arguments(p)


def validate(settings: dict[str, Any], args: argparse.Namespace) -> None:
    """Every argument checked before anything is written."""
    from ib_brevitas.experiments.models import MAX_BITS, MIN_BITS

    for name in ("epochs", "mi_every", "batch_size"):
        if settings[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {settings[name]}")
    if not MIN_BITS <= settings["bits"] <= MAX_BITS:
        raise UsageError(f"--bits must lie in {MIN_BITS}..{MAX_BITS}, got {settings['bits']}")
    if settings["seed"] < 0:
        raise UsageError(f"--seed must be >= 0, got {settings['seed']}")
    if not (math.isfinite(settings["lr"]) and settings["lr"] > 0):
        raise UsageError(f"--lr must be a positive finite number, got {settings['lr']}")
    if not (math.isfinite(settings["test_fraction"]) and 0 < settings["test_fraction"] < 1):
        raise UsageError(f"--test-fraction must lie strictly between 0 and 1, got {settings['test_fraction']}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if not (math.isfinite(args.checkpoint_secs) and args.checkpoint_secs >= 0):
        raise UsageError(f"--checkpoint-secs must be >= 0, got {args.checkpoint_secs}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}


def new_config(settings: dict[str, Any], run_dir: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    import brevitas
    import torch

    from ib_brevitas.experiments.data import syn_dataset
    from ib_brevitas.experiments.models import syn_mlp
    from ib_brevitas.rundir import factory_spec

    return {
        **settings,
        "optimizer": "Adam",
        "probe_description": "all 4096 SYN samples",
        "model": factory_spec(syn_mlp, activation=settings["activation"], bits=settings["bits"]),
        "probe": factory_spec(syn_dataset),
        "phase_thresholds": thresholds,
        "run_dir": str(run_dir),
        "versions": {"ib_brevitas": __version__, "torch": torch.__version__, "brevitas": brevitas.__version__},
    }


def resumed_config(rd: RunDir, given: dict[str, Any]) -> dict[str, Any]:
    """The run's own config; a contradicting flag is refused, a larger --epochs extends it."""
    config = rd.read_config()
    keys = (*IDENTITY_KEYS, "seed", "engine")
    clash = [k for k in keys if k in given and config.get(k, SETTINGS.get(k)) != given[k]]
    if clash:
        have = ", ".join(f"{k}={config.get(k, SETTINGS.get(k))}" for k in clash)
        raise UsageError(f"--resume: {rd.path} was run with {have}; leave those flags out or use another --run-dir")
    if "epochs" in given and given["epochs"] < config["epochs"]:
        raise UsageError(
            f"--resume: {rd.path} is a {config['epochs']}-epoch run; --epochs {given['epochs']} would shorten it "
            "(its records go to that epoch already). Only a larger --epochs (to extend it) is accepted"
        )
    return {**SETTINGS, **{k: v for k, v in config.items() if k != "epochs"}, "epochs": given.get("epochs", config["epochs"])}


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (UsageError, RunDirError) as e:
        print(f"ib-brevitas train: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    given = _given(args)
    settings = {**SETTINGS, **given}
    run_dir = args.run_dir or Path("runs") / f"syn-{settings['activation']}-{settings['bits']}b-s{settings['seed']}"
    rd = RunDir(run_dir)
    if rd.path.exists() and not rd.path.is_dir():
        raise UsageError(f"--run-dir {rd.path} is a file; pass a directory")
    if args.resume:
        config = resumed_config(rd, given)
        validate(config, args)
    else:
        validate(settings, args)
        config = new_config(settings, rd.path, thresholds_from_args(args))
    with rd.lock():
        if not args.resume and rd.holds_run():
            if not args.overwrite:
                raise UsageError(f"{rd.path} already holds a run; pass --resume to continue it, --overwrite to "
                                 "replace it, or choose another --run-dir")
            _clear(rd)
        from ib_brevitas.experiments.loop import train_and_measure

        return train_and_measure(rd, config, resume=args.resume, threads=args.threads,
                                 checkpoint_secs=args.checkpoint_secs, progress=not args.no_progress)


def _clear(rd: RunDir) -> None:
    """--overwrite: remove the old run's files (only those a run writes; the held lock file stays)."""
    import shutil

    for path in (rd.config_path, rd.records_path, rd.phases_path, rd.metrics_path, rd.summary_path("json"),
                 rd.summary_path("txt"), rd.probe_path, rd.model_path, *rd.event_files()):
        path.unlink(missing_ok=True)
    for directory in (rd.checkpoint_path.parent, rd.export_dir):
        shutil.rmtree(directory, ignore_errors=True)
