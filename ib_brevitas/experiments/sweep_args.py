"""`ib-brevitas sweep` flags, kept light (no torch) so `--help` answers at once.

Grid flags take several values (`--activation tanh relu --bits 4 8`); each
combination is one configuration, trained for every seed of `--seeds`. A flag
left out takes the preset's value, else `train`'s default for each net
(`train_args.paper_settings`: the MNIST nets 3000 epochs, MI every 2, their
own activation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ib_brevitas.experiments.train_args import DATASETS, NET_NAMES
from ib_brevitas.phase_report import add_threshold_arguments

# Grid axes: train's settings that may take several values, and their parsers.
AXES = {"net": str, "activation": str, "bits": int, "epochs": int, "mi_every": int, "lr": float, "batch_size": int,
        "test_fraction": float}
ACTIVATIONS = ("tanh", "relu")
# The paper's studies (Lorenzen et al., ICLR 2022): SYN, 50 seeds per activation at 8 bit; 4 bit with 20;
# each MNIST net at 8 bit, 20 seeds, 3000 epochs, MI every 2 (MNIST-4x10 with tanh and ReLU, the others ReLU).
_MNIST = dict(bits=[8], seeds="0-19", epochs=[3000], mi_every=[2])
PRESETS = {
    "paper-syn": dict(activation=["tanh", "relu"], bits=[8], seeds="0-49", epochs=[8000], mi_every=[5]),
    "paper-syn-4bit": dict(activation=["tanh", "relu"], bits=[4], seeds="0-19", epochs=[8000], mi_every=[5]),
    "paper-mnist-4x10": dict(net=["mnist-4x10"], activation=["tanh", "relu"], **_MNIST),
    **{f"paper-{net}": dict(net=[net], activation=["relu"], **_MNIST)
       for net in ("mnist-bottleneck-2", "mnist-bottleneck-4", "mnist-hourglass", "mnist-conv")},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep-dir", type=Path, required=True, metavar="DIR",
                   help="where the runs (DIR/<configuration>-s<seed>, e.g. syn-tanh-8b-s3) and the manifest DIR/sweep.json go; "
                        "rerun the same command to skip finished runs and resume interrupted ones")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help=f"a named grid: {', '.join(PRESETS)} (paper-syn: tanh+relu, 8 bit, seeds 0-49, "
                        "8000 epochs, MI every 5; paper-mnist-*: that net, 8 bit, seeds 0-19, 3000 epochs, MI every "
                        "2, on --dataset); flags given beside it replace its values")
    p.add_argument("--seeds", nargs="*", default=None, metavar="SEEDS",
                   help="seeds: ranges and lists, e.g. 0-49, or 0 3 7, or 0-4,10 (default: 0)")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help=f"data of the mnist-* nets: {', '.join(d for d in DATASETS if d != 'syn')} (default: mnist, "
                        "which needs --data-dir), as train's --dataset; the syn net always trains on SYN")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder of MNIST-format IDX files for --dataset mnist or fashion-mnist, as train's")
    g = p.add_argument_group("grid (several values: one configuration per combination)")
    g.add_argument("--net", nargs="*", default=None, metavar="NET",
                   help=f"the paper's networks: {' '.join(NET_NAMES)} (default: syn)")
    g.add_argument("--activation", nargs="*", default=None, metavar="ACT",
                   help=f"hidden activations: {' '.join(ACTIVATIONS)} (default: each net's own, tanh for syn and "
                        "mnist-4x10, relu for the others)")
    g.add_argument("--bits", nargs="*", type=int, default=None, metavar="B", help="bit widths (default: 8)")
    g.add_argument("--epochs", nargs="*", type=int, default=None, metavar="N",
                   help="training epochs (paper: 8000 for syn, 3000 for the mnist nets)")
    g.add_argument("--mi-every", nargs="*", type=int, default=None, metavar="K",
                   help="measure MI every K epochs (paper: 5 for syn, 2 for the mnist nets)")
    g.add_argument("--lr", nargs="*", type=float, default=None, metavar="LR", help="Adam learning rates (paper: 1e-4)")
    g.add_argument("--batch-size", nargs="*", type=int, default=None, metavar="B", help="minibatch sizes (paper: 256)")
    g.add_argument("--test-fraction", nargs="*", type=float, default=None, metavar="F",
                   help="held-out shares (paper: 0.2)")
    e = p.add_argument_group("engine")
    e.add_argument("--engine", default="local", metavar="ENGINE",
                   help="'local' (default): worker processes on this machine; 'ray': Ray tasks on a cluster "
                        "(pip install ray)")
    e.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray instance")
    e.add_argument("--workers", type=int, default=None,
                   help="parallel workers (default: this machine's cores; with Ray: the cluster's CPUs)")
    e.add_argument("--seeds-per-task", type=int, default=None, metavar="S",
                   help="seeds one worker task trains (default: a configuration cut only as far as keeps every "
                        "worker busy; see docs/sweeps.md)")
    e.add_argument("--max-retries", type=int, default=3,
                   help="times a task is re-run after its worker process died (default: 3)")
    e.add_argument("--train-engine", choices=["fast", "brevitas"], default=None,
                   help="training step inside each run, as train's --engine (default: fast; same results)")
    e.add_argument("--checkpoint-secs", type=float, default=60.0,
                   help="each run checkpoints at most this often (default: 60); a resumed run re-trains after it")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threshold_arguments(p)
