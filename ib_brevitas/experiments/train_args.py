"""`ib-brevitas train`'s arguments and the paper's settings, light: `--help` imports no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ib_brevitas.phase_report import add_threshold_arguments

PAPER = dict(lr=1e-4, batch_size=256, test_fraction=0.2, epochs=8000, mi_every=5)
# The paper's MNIST protocol: 3000 epochs, MI of every layer on all samples every 2 epochs.
PAPER_MNIST = dict(epochs=3000, mi_every=2)
ENGINES = ("fast", "brevitas")
NET_NAMES = ("syn", "mnist-4x10", "mnist-bottleneck-2", "mnist-bottleneck-4", "mnist-hourglass", "mnist-conv")
DATASETS = ("syn", "mnist", "fashion-mnist", "digits")
FLOAT_BITS = 32  # models.FLOAT_BITS, here without importing torch
# Flags that are settings of the run (None = not given: the paper's value, or the run's own on --resume).
# activation None: the net's own default (tanh for syn and mnist-4x10, ReLU for the others).
SETTINGS = dict(net="syn", dataset="syn", data_dir=None, activation="tanh", bits=8, epochs=PAPER["epochs"],
                mi_every=PAPER["mi_every"], seed=0, lr=PAPER["lr"], batch_size=PAPER["batch_size"],
                test_fraction=PAPER["test_fraction"], engine="fast", prefit_random=0, estimators=None,
                freeze_relu_after=None)

PREFIT_HELP = (
    "first train K epochs on randomly permuted labels (the training labels permuted once with the seed, during "
    "the prefit only), then train normally. The prefit is measured and recorded as its own phase: its epochs "
    "are numbered -K..-1 (epoch -K is the untrained net, epoch 0 the state at the start of normal training), "
    "so --epochs still counts normal training (default: 0, no prefit)"
)


def paper_settings(net: str) -> dict:
    """SETTINGS with the paper's protocol for `net` (the MNIST nets: 3000 epochs, MI every 2; their activation)."""
    if net == "syn":
        return dict(SETTINGS)
    activation = "tanh" if net == "mnist-4x10" else "relu"
    return {**SETTINGS, **PAPER_MNIST, "net": net, "dataset": "mnist", "activation": activation}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", choices=NET_NAMES, default=None,
                   help="the paper's network (default: syn, 12-10-7-5-4-3-2); the mnist-* nets take 28x28 images")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="training and probe data (default: syn for --net syn, else mnist). mnist: the IDX files "
                        "in --data-dir; fashion-mnist: Debian's dataset-fashion-mnist (70,000 images); digits: "
                        "scikit-learn's 1,797 digits, offline. A directory with train and test files trains on "
                        "the train files; every sample is measured")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder of MNIST-format IDX files (gzip or not) for --dataset mnist or fashion-mnist")
    p.add_argument("--activation", choices=["tanh", "relu"], default=None,
                   help="hidden activation (default: the net's own: tanh for syn and mnist-4x10, else relu)")
    p.add_argument("--bits", type=int, default=None,
                   help=f"weight and activation bit width, 2..16 (default: 8), or {FLOAT_BITS} for a float network "
                        "measured by binning (exact MI needs integer codes)")
    p.add_argument("--estimators", nargs="+", default=None, metavar="LABEL",
                   help="binning estimators measured beside exact MI (e.g. binning-uniform-30-global "
                        "binning-adaptive-30-layer binning-uniform-256-fixed[-1,1]); default for --bits 32: "
                        "the paper's binning-uniform-{30,100,256}-global. Binned records carry their label and are "
                        "computed from model snapshots at the end of the run (global bounds are known only then)")
    p.add_argument("--prefit-random", type=int, default=None, metavar="K", help=PREFIT_HELP)
    p.add_argument("--freeze-relu-ranges-after", dest="freeze_relu_after", type=int, default=None, metavar="E",
                   help="after epoch E, freeze the ReLU quantizers' calibrated ranges, so every later measurement "
                        "uses the same grid and a fall of I(X;T) is not a coarser grid (needs --engine brevitas; "
                        "see docs/data-and-models.md)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (paper: 8000 for syn, 3000 for the mnist nets); with --resume a larger "
                        "value extends the run")
    p.add_argument("--mi-every", type=int, default=None, help="measure MI every K epochs (paper: 5 for syn, 2 for mnist)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, split and data order (default: 0)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="output directory (default: runs/<net>-<act>-<bits>b-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir by a fresh one")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (paper: 256)")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="held-out share, stratified, where the data has no test files of its own (paper: 0.2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the SYN net's tiny matrices run slower with more)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="training step: 'fast' (default) computes Brevitas' forward and gradients bit for bit "
                        "in fewer ops (quantized MLPs: syn and the mnist MLPs); 'brevitas' runs the Brevitas "
                        "modules and autograd (same results, ~5x slower). mnist-conv trains through Brevitas, a "
                        "float net (--bits 32) through plain torch; config.json records the engine used")
    p.add_argument("--checkpoint-secs", type=float, default=60.0,
                   help="write checkpoints/last.pt at most this often, and at the end (default: 60; "
                        "0 = at every measurement). A resumed run re-trains the epochs after it")
    add_threshold_arguments(p)
