"""`ib-brevitas train`'s arguments and the paper's settings, light: `--help` imports no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ib_brevitas.phase_report import add_threshold_arguments

PAPER = dict(lr=1e-4, batch_size=256, test_fraction=0.2, epochs=8000, mi_every=5)
ENGINES = ("fast", "brevitas")
# Flags that are settings of the run (None = not given: the paper's value, or the run's own on --resume).
SETTINGS = dict(net="syn", dataset="syn", activation="tanh", bits=8, epochs=PAPER["epochs"],
                mi_every=PAPER["mi_every"], seed=0, lr=PAPER["lr"], batch_size=PAPER["batch_size"],
                test_fraction=PAPER["test_fraction"], engine="fast")


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
