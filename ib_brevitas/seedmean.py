"""Seeds of one configuration: which runs belong together, and their mean +- s.d.

The one home of the seed statistics: the TensorBoard tab's `mean` route and
`ib-brevitas plot --mean` both call `mean_sd`, so the tab and a paper figure
can never disagree. Only numpy (the TensorBoard plugin imports this).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

# Trailing seed marker of a run name: "syn-tanh-seed3", "tanh/seed_3", "relu_s2".
_SEED_SUFFIX = re.compile(r"(?:^|[-_./ ])(?:seed|s)[-_=]?\d+$", re.IGNORECASE)


def group_of(run: str) -> str:
    """The configuration a run belongs to: its name without a seed suffix."""
    m = _SEED_SUFFIX.search(run)
    return run[: m.start()] if m and m.start() > 0 else run


@dataclass
class MeanSeries:
    """Per epoch: mean and sample s.d. (ddof 1; 0 for one run) over the runs that measured it."""

    epoch: np.ndarray
    i_xt: np.ndarray
    sd_xt: np.ndarray
    i_ty: np.ndarray
    sd_ty: np.ndarray
    n_runs: np.ndarray


def mean_sd(runs: Iterable[Mapping[Hashable, tuple[Sequence, Sequence, Sequence]]]) -> dict[Hashable, MeanSeries]:
    """Average series over runs: `runs` maps a series key (e.g. (layer, estimator)) to
    (epochs, i_xt, i_ty) per run; the answer maps each key to its `MeanSeries`.

    Series of different keys are never mixed: an exact and a binned series of
    one layer have different keys. Two-pass s.d. (no cancellation).
    """
    parts: dict[Hashable, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for run in runs:
        for key, (e, x, y) in run.items():
            parts.setdefault(key, []).append((np.asarray(e, dtype=np.float64), np.asarray(x, dtype=np.float64),
                                              np.asarray(y, dtype=np.float64)))
    out = {}
    for key, ps in parts.items():
        e = np.concatenate([p[0] for p in ps])
        epochs, inv = np.unique(e, return_inverse=True)
        n = np.bincount(inv, minlength=len(epochs))
        stats = []
        for k in (1, 2):
            v = np.concatenate([p[k] for p in ps])
            m = np.bincount(inv, weights=v, minlength=len(epochs)) / n
            ss = np.bincount(inv, weights=(v - m[inv]) ** 2, minlength=len(epochs))
            sd = np.sqrt(np.divide(ss, n - 1, out=np.zeros_like(ss), where=n > 1))
            stats += [m, sd]
        ints = epochs.astype(np.int64)
        out[key] = MeanSeries(ints if np.array_equal(ints, epochs) else epochs, *stats, n)
    return out
