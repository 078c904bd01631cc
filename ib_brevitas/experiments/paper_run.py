"""One run of the paper's SYN protocol in memory: data, model, optimizer, engine; epochs; checkpoints.

`build_run(config)` seeds everything from the config (so a run is a function of
it), `train_epoch` is one epoch of minibatch Adam, `evaluate` the loss and
accuracy on both splits, `checkpoint_state` / `restore` what `--resume` needs
(model, Brevitas' step counters, optimizer, shuffle generator, global RNGs and
the monitor's state).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ib_brevitas.experiments.data import stratified_split, syn_dataset
from ib_brevitas.experiments.fastpath import SynFastPath, adam_step, check_against_brevitas
from ib_brevitas.experiments.models import syn_loss, syn_mlp
from ib_brevitas.experiments.train_args import ENGINES
from ib_brevitas.monitor import InformationPlane
from ib_brevitas.state import counters_state, load_counters_state, observation



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

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.x_train.shape[0] // self.config["batch_size"])


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
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
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


def checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    """Everything a resume needs at `epoch` (flushes the monitor: its state holds the records)."""
    return {
        "epoch": epoch,
        "model": run.model.state_dict(),
        "counters": counters_state(run.model),
        "optimizer": run.optimizer.state_dict(),
        "shuffle": run.shuffle.get_state(),
        "rng": (torch.get_rng_state(), np.random.get_state(), random.getstate()),
        "plane": run.plane.state_dict(),
        "config": run.config,
    }


def restore(run: Run, state: dict[str, Any]) -> int:
    """Load a checkpoint into a freshly built run; returns its epoch."""
    run.model.load_state_dict(state["model"])
    load_counters_state(run.model, state["counters"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.shuffle.set_state(state["shuffle"])
    torch_rng, np_rng, py_rng = state["rng"]
    torch.set_rng_state(torch_rng)
    np.random.set_state(np_rng)
    random.setstate(py_rng)
    if "plane" in state:
        run.plane.load_state_dict(state["plane"])
    return int(state["epoch"])
