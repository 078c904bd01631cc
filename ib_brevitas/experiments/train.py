"""`ib-brevitas train`: one of the paper's experiments as one command.

`--net syn` (default) trains the 12-10-7-5-4-3-2 network with the paper's
protocol (Adam, lr 1e-4, batch 256, 80/20 stratified split) and measures exact
MI of every layer on all 4096 samples at epoch 0 and every K epochs, into a
`RunDir` (records, phase events, metrics, summary, TensorBoard data,
checkpoints; see `ib_brevitas.rundir`). The MNIST nets (`--net mnist-...`,
`models.NETS`) train on MNIST-format images (`--dataset`, `data.image_set`)
and measure all of them. `--bits 32` is the float network, measured by
binning only (`--estimators`, default the paper's 30/100/256 uniform bins with
global bounds); `--estimators` on a quantized net adds binning beside exact MI.
`--prefit-random K` first trains K epochs on permuted labels (epochs -K..-1).

Quantized MLPs train on `fastpath.SynFastPath` by default: the same Brevitas
model, forward and gradients bit for bit, without Brevitas' per-op module
overhead (`--engine brevitas` trains through the Brevitas modules instead;
both give identical runs). The conv net trains through Brevitas, a float net
through plain torch; config.json records the engine used. See docs/performance.md.

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
from ib_brevitas.experiments.train_args import (  # noqa: F401 (cli reads add_arguments)
    DATASETS,
    FLOAT_BITS,
    NET_NAMES,
    SETTINGS,
    add_arguments,
    paper_settings,
)
from ib_brevitas.phase_report import thresholds_from_args
from ib_brevitas.rundir import IDENTITY_KEYS, RunDir, RunDirError

# Settings a resumed run must share with the run it continues (besides IDENTITY_KEYS).
RESUME_KEYS = (*IDENTITY_KEYS, "seed", "engine", "data_dir", "prefit_random", "estimators", "freeze_relu_after")
PAPER_ESTIMATOR_LABELS = ("binning-uniform-30-global", "binning-uniform-100-global", "binning-uniform-256-global")


class UsageError(ValueError):
    """A bad argument: reported as `ib-brevitas train: error: ...`, exit code 2, before anything is written."""


def validate(settings: dict[str, Any], args: argparse.Namespace) -> None:
    """Every argument checked before anything is written (the data's files too, from their headers)."""
    from ib_brevitas.experiments.models import MAX_BITS, MIN_BITS, NETS

    for name in ("epochs", "mi_every", "batch_size"):
        if settings[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {settings[name]}")
    if not (MIN_BITS <= settings["bits"] <= MAX_BITS or settings["bits"] == FLOAT_BITS):
        raise UsageError(f"--bits must lie in {MIN_BITS}..{MAX_BITS}, or be {FLOAT_BITS} for a float network "
                         f"(measured by binning), got {settings['bits']}")
    if settings["seed"] < 0:
        raise UsageError(f"--seed must be >= 0, got {settings['seed']}")
    if not (math.isfinite(settings["lr"]) and settings["lr"] > 0):
        raise UsageError(f"--lr must be a positive finite number, got {settings['lr']}")
    if not (math.isfinite(settings["test_fraction"]) and 0 < settings["test_fraction"] < 1):
        raise UsageError(f"--test-fraction must lie strictly between 0 and 1, got {settings['test_fraction']}")
    if settings.get("prefit_random", 0) < 0:
        raise UsageError(f"--prefit-random must be >= 0 (epochs on permuted labels), got {settings['prefit_random']}")
    freeze = settings.get("freeze_relu_after")
    if freeze is not None:
        if not 1 <= freeze <= settings["epochs"]:
            raise UsageError(f"--freeze-relu-ranges-after must lie in 1..--epochs (calibrate first), got {freeze}")
        if settings.get("activation") == "tanh" or settings["bits"] == FLOAT_BITS:
            raise UsageError("--freeze-relu-ranges-after needs quantized ReLU layers (tanh's grid is fixed already)")
        if settings.get("engine") != "brevitas":
            raise UsageError("--freeze-relu-ranges-after needs --engine brevitas (the fast engine replays the "
                             "unfrozen range update)")
    net, dataset = settings.get("net", "syn"), settings.get("dataset", "syn")
    if net not in NETS:
        raise UsageError(f"--net: unknown network {net!r}; choose one of {', '.join(NETS)}")
    if dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    if (net == "syn") != (dataset == "syn"):
        raise UsageError(f"--net {net} cannot train on --dataset {dataset}: the syn net takes the 12-bit SYN "
                         "patterns, the mnist nets 28x28 images (mnist, fashion-mnist or digits)")
    if settings["activation"] not in NETS[net].activations:
        raise UsageError(f"--net {net} has {' or '.join(NETS[net].activations)} hidden layers, not "
                         f"--activation {settings['activation']}")
    settings["estimators"] = check_estimators(settings.get("estimators"), settings["bits"])
    check_data(dataset, settings.get("data_dir"))
    threads = getattr(args, "threads", 1)
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    if not (math.isfinite(args.checkpoint_secs) and args.checkpoint_secs >= 0):
        raise UsageError(f"--checkpoint-secs must be >= 0, got {args.checkpoint_secs}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one")


def check_estimators(labels: Any, bits: int) -> list[str] | None:
    """The binning estimators' labels as the library writes them; the paper's three for a float net."""
    from ib_brevitas import binning

    if labels is None:
        return list(PAPER_ESTIMATOR_LABELS) if bits == FLOAT_BITS else None
    try:
        out = [binning.parse_estimator(label).label for label in labels]
    except ValueError as e:
        raise UsageError(f"--estimators: {e}") from None
    if not out or len(set(out)) != len(out):
        raise UsageError(f"--estimators: name each binning once, got {list(labels)}")
    return out


def check_data(dataset: str, data_dir: str | None) -> None:
    """The data's files exist (read from the IDX headers only); a missing one is a UsageError saying what to do."""
    from ib_brevitas.experiments import data

    if dataset in ("syn", "digits"):
        if data_dir is not None:
            raise UsageError(f"--data-dir applies to --dataset mnist or fashion-mnist, not {dataset}; leave it out")
        return
    if dataset == "mnist" and data_dir is None:
        raise UsageError("--dataset mnist needs --data-dir DIR, the folder holding its IDX files "
                         "(e.g. t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz)")
    directory = Path(data_dir) if data_dir is not None else data.FASHION_MNIST_DIR
    try:
        sizes = data.idx_split_sizes(directory)
    except (OSError, ValueError) as e:
        raise UsageError(f"--data-dir {directory}: {e}") from None
    if not sizes:
        if dataset == "fashion-mnist" and data_dir is None:
            raise UsageError(f"Fashion-MNIST not found in {directory}; install it with "
                             f"`{data.FASHION_MNIST_INSTALL}` (or `make fashion-mnist`)")
        raise UsageError(f"--data-dir {directory}: no MNIST IDX images there (train-images-idx3-ubyte[.gz] or "
                         "t10k-images-idx3-ubyte[.gz]); point it at the folder holding them")


def engine_for(settings: dict[str, Any]) -> str:
    """The engine that will train the run: 'fast' only for quantized MLPs, Brevitas for the conv net, torch for float."""
    if settings["bits"] == FLOAT_BITS:
        return "torch"
    if settings.get("net", "syn") == "mnist-conv":
        return "brevitas"
    return settings.get("engine", "fast")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    if "data_dir" in given:
        given["data_dir"] = str(Path(given["data_dir"]).resolve())
    if "estimators" in given:
        given["estimators"] = check_estimators(given["estimators"], given.get("bits", 8))
    return given


def new_config(settings: dict[str, Any], run_dir: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    import brevitas
    import torch

    from ib_brevitas.experiments.data import image_set, syn_dataset
    from ib_brevitas.experiments.models import build_net, syn_mlp
    from ib_brevitas.rundir import factory_spec

    net, dataset = settings.get("net", "syn"), settings.get("dataset", "syn")
    if net == "syn":
        model = factory_spec(syn_mlp, activation=settings["activation"], bits=settings["bits"])
        probe, described = factory_spec(syn_dataset), "all 4096 SYN samples"
    else:
        model = factory_spec(build_net, name=net, activation=settings["activation"], bits=settings["bits"])
        probe = factory_spec(image_set, name=dataset, data_dir=settings.get("data_dir"))
        described = f"every sample of {dataset}" + (f" in {settings['data_dir']}" if settings.get("data_dir") else "")
    return {
        **settings,
        "engine": engine_for(settings),
        "optimizer": "Adam",
        "probe_description": described,
        "model": model,
        "probe": probe,
        "phase_thresholds": thresholds,
        "run_dir": str(run_dir),
        "versions": {"ib_brevitas": __version__, "torch": torch.__version__, "brevitas": brevitas.__version__},
    }


def resumed_config(rd: RunDir, given: dict[str, Any]) -> dict[str, Any]:
    """The run's own config; a contradicting flag is refused, a larger --epochs extends it."""
    config = rd.read_config()
    clash = [k for k in RESUME_KEYS if k in given and config.get(k, SETTINGS.get(k)) != given[k]]
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
    from ib_brevitas.experiments.paper_run import DataError  # imports torch: only when training

    try:
        return _run(args)
    except (UsageError, RunDirError, DataError) as e:
        print(f"ib-brevitas train: error: {e}", file=sys.stderr)
        return 2


def default_run_dir(settings: dict[str, Any]) -> Path:
    net = settings.get("net", "syn")
    where = net if net == "syn" else f"{net}-{settings['dataset']}"
    return Path("runs") / f"{where}-{settings['activation']}-{settings['bits']}b-s{settings['seed']}"


def _run(args: argparse.Namespace) -> int:
    given = _given(args)
    settings = {**paper_settings(given.get("net", "syn")), **given}
    run_dir = args.run_dir or default_run_dir(settings)
    rd = RunDir(run_dir)
    if rd.path.exists() and not rd.path.is_dir():
        raise UsageError(f"--run-dir {rd.path} is a file; pass a directory")
    if args.resume:
        config = resumed_config(rd, given)
        validate(config, args)
    else:
        validate(settings, args)
        config = new_config(settings, rd.path, thresholds_from_args(args))
        if config["engine"] != settings["engine"]:
            print(f"engine: {config['engine']} (the fast engine covers quantized MLPs only)")
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
    for directory in (rd.checkpoint_path.parent, rd.export_dir, rd.snapshots_dir):
        shutil.rmtree(directory, ignore_errors=True)
