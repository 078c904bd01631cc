"""S seeds of one configuration, set up exactly as S single runs would set themselves up.

`build_seed_batch(make_model, seeds, x, y, ...)` seeds torch, NumPy and
Python's RNGs per seed, draws that seed's stratified split and model, and its
shuffle generator, in the order a single run does (`paper_run.build_run`), so
slot k of the batch starts where the single run of `seeds[k]` starts.
`syn_seed_batch(activation, bits, seeds)` is the SYN case.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ib_brevitas.experiments.data import stratified_split, syn_dataset
from ib_brevitas.experiments.engine import SeedBatch
from ib_brevitas.experiments.models import PaperMLP, SynMLP


@dataclass
class SeedRuns:
    """A SeedBatch with each seed's data: splits (S, n, ...), shuffle generators, the shared probe set."""

    seeds: list[int]
    batch: SeedBatch
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shuffles: list[torch.Generator]
    probe_x: torch.Tensor
    probe_y: torch.Tensor

    def train_epoch(self) -> torch.Tensor:
        """One epoch of every seed; each seed's mean training loss (S,)."""
        return self.batch.train_epoch(self.x_train, self.y_train, self.shuffles)

    def evaluate(self) -> list[dict[str, float]]:
        """Per seed: train/test loss and accuracy, as `paper_run.evaluate` gives them."""
        return self.batch.evaluate({"train": (self.x_train, self.y_train), "test": (self.x_test, self.y_test)})

    def start(self) -> bool:
        """The start-up exactness check on the current weights (see `SeedBatch.start`)."""
        return self.batch.start(self.x_train, self.y_train, probe=self.probe_x)


def build_seed_batch(make_model: Callable[[], PaperMLP], seeds: Sequence[int], x: torch.Tensor, y: torch.Tensor,
                     lr: float, batch_size: int = 256, test_fraction: float = 0.2, **batch_options) -> SeedRuns:
    """One SeedBatch over `seeds` on the data set (x, y); every seed its split, init and data order."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    x, y = torch.as_tensor(x).float(), torch.as_tensor(y)
    models, parts = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        train, test = stratified_split(y.numpy(), test_fraction, seed=seed)
        models.append(make_model())
        parts.append((x[train], y[train], x[test], y[test]))
    x_train, y_train, x_test, y_test = (torch.stack(p) for p in zip(*parts))
    batch = SeedBatch(models, lr=lr, batch_size=batch_size, **batch_options)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    return SeedRuns(seeds, batch, x_train, y_train, x_test, y_test, shuffles, x, y)


def syn_seed_batch(activation: str, bits: int, seeds: Sequence[int], lr: float = 1e-4, batch_size: int = 256,
                   test_fraction: float = 0.2, **batch_options) -> SeedRuns:
    """The paper's SYN net for `seeds`, on all 4096 SYN samples (probe = the whole set)."""
    x, y = syn_dataset()
    return build_seed_batch(lambda: SynMLP(activation, bits), seeds, torch.from_numpy(x), torch.from_numpy(y),
                            lr=lr, batch_size=batch_size, test_fraction=test_fraction, **batch_options)
