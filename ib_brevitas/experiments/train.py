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
from ib_brevitas.experiments.train_args import SETTINGS, add_arguments  # noqa: F401 (cli reads add_arguments)
from ib_brevitas.phase_report import thresholds_from_args
from ib_brevitas.rundir import IDENTITY_KEYS, RunDir, RunDirError

class UsageError(ValueError):
    """A bad argument: reported as `ib-brevitas train: error: ...`, exit code 2, before anything is written."""


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
