"""One run of the paper's protocol in memory: data, model, optimizer, engine; epochs; checkpoints.

`build_run(config)` seeds everything from the config (so a run is a function of
it): the SYN net on the SYN set, or an MNIST net (`config["net"]`) on an image
set (`config["dataset"]`); `train_epoch` is one epoch of minibatch Adam (on the
permuted labels during a random-label prefit), `evaluate` the loss and
accuracy on both splits, `checkpoint_state` / `restore` what `--resume` needs
(model, Brevitas' step counters, optimizer, shuffle generator, global RNGs and
the monitor's state). A float net (bits 32) has no exact monitor (`plane` is
None); `binned` is its `BinnedPlane`, or a quantized net's when the config
names binning estimators.
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
from ib_brevitas.experiments.models import FLOAT_BITS, PaperMLP, build_net, syn_loss, syn_mlp
from ib_brevitas.experiments.train_args import ENGINES
from ib_brevitas.monitor import InformationPlane
from ib_brevitas.state import counters_state, load_counters_state, observation

RUN_ENGINES = (*ENGINES, "torch")  # "torch": a float net's plain loop (the same code as "brevitas")

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
    plane: InformationPlane | None  # None for a float net: no integer codes
    shuffle: torch.Generator
    fast: SynFastPath | None = None
    binned: Any = None  # ib_brevitas.binned.BinnedPlane when the config names estimators
    y_prefit: torch.Tensor | None = None  # the training labels permuted once, for --prefit-random

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.x_train.shape[0] // self.config["batch_size"])

    @property
    def first_epoch(self) -> int:
        """-K with a K-epoch random-label prefit (its epochs are -K..-1), else 0."""
        return -int(self.config.get("prefit_random", 0))


class DataError(ValueError):
    """The run's data cannot be read (a missing or damaged file); the message names it."""


def load_data(config: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, train_idx, test_idx): the run's whole data set (its probe set) and its split.

    A directory with train and test IDX files trains on the train files (the
    first rows) and tests on the others; one set alone, SYN and digits are
    split stratified by `test_fraction` with the seed.
    """
    dataset = config.get("dataset", "syn")
    if dataset == "syn":
        x, y = syn_dataset()
    else:
        from ib_brevitas.experiments.data import FASHION_MNIST_DIR, idx_split_sizes, image_set

        try:
            x, y = image_set(dataset, config.get("data_dir"))
            sizes = idx_split_sizes(config.get("data_dir") or FASHION_MNIST_DIR) if dataset != "digits" else {}
        except (OSError, ValueError) as e:  # a file gone or damaged since the arguments were checked
            raise DataError(f"--dataset {dataset}: {e}") from None
        if "train" in sizes and "test" in sizes:
            n = sizes["train"]
            return x, y, np.arange(n), np.arange(n, x.shape[0])
    train_idx, test_idx = stratified_split(y, config["test_fraction"], seed=config["seed"])
    return x, y, train_idx, test_idx


def build_run(config: dict) -> Run:
    """Data, split, model and optimizer of a run, seeded from its config.

    `config["engine"]` (default "fast") picks the training step; the fast path
    is first checked against Brevitas on this very model (bit for bit).
    """
    seed = config["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    x, y, train_idx, test_idx = load_data(config)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    net = config.get("net", "syn")
    model = syn_mlp(config["activation"], config["bits"]) if net == "syn" else build_net(
        net, config["activation"], config["bits"])
    # foreach: the same kernels as the default per-tensor loop (bit-identical), fewer calls
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], foreach=True)
    shuffle = torch.Generator().manual_seed(seed)
    engine = config.get("engine", "fast")
    if engine not in RUN_ENGINES:
        raise ValueError(f"engine must be one of {RUN_ENGINES}, got {engine!r}")
    if engine == "fast" and not (isinstance(model, PaperMLP) and model.quantized):
        raise ValueError(f"the fast engine trains quantized MLPs only, not {net} at {config['bits']} bits; "
                         "use engine 'brevitas' (or 'torch' for a float net)")
    fast = None
    if engine == "fast":
        try:
            check_against_brevitas(model, xt, yt, batch=config["batch_size"])
            fast = SynFastPath(model)
        except RuntimeError as e:  # e.g. another torch/Brevitas: stay exact, train through Brevitas
            warnings.warn(f"{e}. Training through the Brevitas modules instead (same results, slower).")
    # The fast path's codes are the monitor's too, checked by it against its hooked Brevitas pass.
    plane = None
    if config["bits"] != FLOAT_BITS:
        plane = InformationPlane(model, xt, yt, batch_size=len(xt) if net == "syn" else None,
                                 codes_fn=None if fast is None else fast.codes)
    binned = None
    if config.get("estimators"):
        from ib_brevitas.binned import BinnedPlane

        binned = BinnedPlane(model, xt, yt, estimators=config["estimators"])
    y_train = yt[train_idx]
    y_prefit = None
    if config.get("prefit_random", 0) > 0:  # its own generator: the run's other random streams stay as they are
        y_prefit = y_train[torch.from_numpy(np.random.default_rng(seed).permutation(len(y_train)))]
    return Run(config, model, optimizer, xt[train_idx], y_train, xt[test_idx], yt[test_idx], plane, shuffle,
               fast=fast, binned=binned, y_prefit=y_prefit)


def train_epoch(run: Run, prefit: bool = False) -> float:
    """One epoch of minibatch Adam (on the permuted labels if `prefit`); returns the mean training loss."""
    n = run.x_train.shape[0]
    order = torch.randperm(n, generator=run.shuffle)
    batch, fast = run.config["batch_size"], run.fast
    if prefit and run.y_prefit is None:
        raise ValueError("this run has no random-label prefit (config prefit_random is 0)")
    # One gather per epoch; the batches are row slices of it (same values as x[idx]).
    x, y = run.x_train[order], (run.y_prefit if prefit else run.y_train)[order]
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
        "plane": None if run.plane is None else run.plane.state_dict(),
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
    if state.get("plane") is not None:
        run.plane.load_state_dict(state["plane"])
    return int(state["epoch"])
