"""Binning estimators of I(X;T) and I(T;Y) for float activations: the baselines the paper argues against.

A float layer has no integer codes, so its MI can only be estimated: each
activation is put into one of `n_bins` bins and the bin indices are counted as
if they were codes (`ib_brevitas.functional`, exact counting of the binned
rows). The result depends on the binning - Lorenzen, Igel & Nielsen (ICLR
2022) show that different binnings support or refute the same IB conjecture -
so every number made here carries its estimator's label
(e.g. "binning-uniform-30-global"), never "exact".

Strategies and bounds (`BinningEstimator`):
- uniform: `n_bins` equal-width bins between bounds that are
  "global" (one range over every layer and measurement of the run, known post
  hoc: pass it as `global_range`), "layer" (the layer's range in this
  measurement), "neuron" (each neuron's range in this measurement) or fixed
  `(lo, hi)` (e.g. (-1, 1) for tanh; values outside go to the first or last bin);
- adaptive: equal-mass bins, edges at the quantiles of the layer's pooled values
  ("layer") or of each neuron's values ("neuron") in this measurement.

Pure functions on float arrays (N, ...) - one row per probe sample, numpy or
torch - never models; `ib_brevitas.binned` gathers a model's activations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ib_brevitas.functional import PlanePoint, as_code_rows, information_plane_point, unique_rows

STRATEGIES = ("uniform", "adaptive")
BOUNDS = ("global", "layer", "neuron")
MAX_BINS = 65536
_LABEL = re.compile(r"binning-(uniform|adaptive)-(\d+)-(global|layer|neuron|fixed\[([^,\]]+),([^\]]+)\])$")


def as_activation_rows(values: Any, name: str = "activations") -> np.ndarray:
    """`values` as a 2-D float array (N, width), floats kept as given, integers as float64.

    NaN/inf, a non-numeric dtype or no rows is a one-line error naming `name`.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1 rows (one per sample), got {arr.shape}")
    rows = arr.reshape(arr.shape[0], -1)
    if rows.dtype.kind != "f":
        rows = rows.astype(np.float64)
    if rows.size and not np.isfinite(rows.sum()) and not np.isfinite(rows).all():
        raise ValueError(
            f"{name} contain NaN or inf: the network has diverged (check the learning rate and the "
            "inputs); no binning of such values is meaningful"
        )
    return rows


def value_range(values: Any, name: str = "activations") -> tuple[float, float]:
    """(min, max) of all values: one layer's part of a global range."""
    rows = as_activation_rows(values, name)
    return float(rows.min()), float(rows.max())


def global_range(ranges: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The range covering every (lo, hi) given: the paper's post-hoc global bounds of a run."""
    ranges = list(ranges)
    if not ranges:
        raise ValueError("global_range needs at least one (lo, hi) range: measure the run's activations first")
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def _code_dtype(n_bins: int) -> np.dtype:
    return np.dtype(np.uint8) if n_bins <= 256 else np.dtype(np.uint16)


def uniform_codes(values: Any, n_bins: int, lo, hi) -> np.ndarray:
    """Bin indices 0..n_bins-1 of equal-width bins over [lo, hi] (scalars, or one pair per column).

    In float64, u = (v - lo) * (1 / (hi - lo)) and v goes to bin
    min(floor(u * n_bins), n_bins - 1): bin k holds lo + k w <= v < lo + (k+1) w
    (w = (hi - lo) / n_bins, up to an ulp at an edge), v = hi the last bin.
    Values below lo / above hi go to the first / last bin; a column with
    hi <= lo (constant) to bin 0.
    """
    return _uniform_many(as_activation_rows(values), [_check_bins(n_bins)], lo, hi)[0]


_BLOCK_VALUES = 1 << 16  # values per block: the float64 temporaries stay in the CPU cache
# u is clipped to [0, _U_MAX]: then u * n < n for any n < 2^40, so the truncating cast of u * n
# is min(floor(u * n), n - 1) without a clip per bin count (every u >= _U_MAX is in the last bin anyway).
_U_MAX = 1.0 - 2.0**-40


def _uniform_many(rows: np.ndarray, bin_counts: list[int], lo, hi) -> list[np.ndarray]:
    """`uniform_codes` for several bin counts sharing one pair of bounds, u computed once per block."""
    width = rows.shape[1]
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (width,))
    span = np.broadcast_to(np.asarray(hi, dtype=np.float64), (width,)) - lo
    inv = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)  # constant columns: u = 0
    outs = [np.empty(rows.shape, dtype=_code_dtype(n)) for n in bin_counts]
    block = max(1, _BLOCK_VALUES // max(1, width))
    u = np.empty((min(block, rows.shape[0]), width))
    for start in range(0, rows.shape[0], block):
        stop = min(start + block, rows.shape[0])
        uu = u[: stop - start]
        np.subtract(rows[start:stop], lo, out=uu)
        uu *= inv
        np.clip(uu, 0.0, _U_MAX, out=uu)
        for n, out in zip(bin_counts, outs):
            np.multiply(uu, float(n), out=out[start:stop], casting="unsafe")  # truncation = floor, u >= 0
    return outs


def _equal_mass_edges(sorted_values: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges splitting sorted values into n_bins bins of equal count (the first ones one larger)."""
    m = sorted_values.shape[0]
    size, excess = divmod(m, n_bins)
    cuts = np.cumsum(np.where(np.arange(n_bins) < excess, size + 1, size))[:-1]
    cuts = np.unique(cuts[(cuts > 0) & (cuts < m)])
    return (sorted_values[cuts - 1] + sorted_values[cuts]) / 2


def adaptive_codes(values: Any, n_bins: int, per_neuron: bool = False) -> np.ndarray:
    """Bin indices of equal-mass bins: edges midway between the sorted values at each 1/n_bins quantile.

    Pooled over the whole layer, or per column when `per_neuron`; a value equal
    to an edge goes to the upper bin. Ties (e.g. ReLU zeros) can leave bins empty.
    """
    rows = as_activation_rows(values)
    n_bins = _check_bins(n_bins)
    dtype = _code_dtype(n_bins)
    if not per_neuron:
        edges = _equal_mass_edges(np.sort(rows, axis=None), n_bins)
        return np.searchsorted(edges, rows, side="right").astype(dtype)
    codes = np.empty(rows.shape, dtype=dtype)
    for j in range(rows.shape[1]):
        column = rows[:, j]
        codes[:, j] = np.searchsorted(_equal_mass_edges(np.sort(column), n_bins), column, side="right")
    return codes


def _number(x: float) -> str:
    """Shortest text that reads back as the same float ("-1" for -1.0): labels round-trip exactly."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)):
        raise TypeError(f"n_bins must be an int, got {n_bins!r}")
    if not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins must lie in 1..{MAX_BINS}, got {n_bins}")
    return int(n_bins)


@dataclass(frozen=True)
class BinningEstimator:
    """One binning of float activations; `label` is what records carry in their `estimator` field."""

    strategy: str = "uniform"
    n_bins: int = 30
    bounds: str | tuple[float, float] = "global"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        _check_bins(self.n_bins)
        if isinstance(self.bounds, str):
            if self.bounds not in BOUNDS:
                raise ValueError(f"bounds must be one of {BOUNDS} or a (lo, hi) pair, got {self.bounds!r}")
            if self.strategy == "adaptive" and self.bounds == "global":
                raise ValueError(
                    "adaptive binning takes bounds 'layer' or 'neuron': global equal-mass edges would need "
                    "every activation of the run sorted at once"
                )
        else:
            lo, hi = (float(b) for b in self.bounds)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"fixed bounds must be finite with lo < hi, got {self.bounds!r}")
            if self.strategy != "uniform":
                raise ValueError("fixed bounds apply to uniform binning only")
            object.__setattr__(self, "bounds", (lo, hi))

    @property
    def fixed(self) -> bool:
        return not isinstance(self.bounds, str)

    @property
    def needs_global_range(self) -> bool:
        return self.bounds == "global"

    @property
    def label(self) -> str:
        where = f"fixed[{_number(self.bounds[0])},{_number(self.bounds[1])}]" if self.fixed else self.bounds
        return f"binning-{self.strategy}-{self.n_bins}-{where}"

    def codes(self, values: Any, global_range: tuple[float, float] | None = None, name: str = "activations") -> np.ndarray:
        """The bin index of every activation, (N, width) unsigned ints."""
        rows = as_activation_rows(values, name)
        if self.strategy == "adaptive":
            return adaptive_codes(rows, self.n_bins, per_neuron=self.bounds == "neuron")
        lo, hi = self._bounds(rows, global_range)
        return _uniform_many(rows, [self.n_bins], lo, hi)[0]

    def _bounds(self, rows: np.ndarray, global_range):
        """(lo, hi) of uniform bins on these rows: scalars, or one pair per column for 'neuron'."""
        if self.fixed:
            return self.bounds
        if self.bounds == "global":
            if global_range is None:
                raise ValueError(
                    f"{self.label} needs the run's global range (global_range=(lo, hi), e.g. from "
                    "binning.global_range over every measurement); it is known only after the run"
                )
            return global_range
        if self.bounds == "layer":
            return float(rows.min()), float(rows.max())
        return rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64)

    def plane_point(self, values: Any, labels: Any, global_range: tuple[float, float] | None = None, *,
                    label_groups=None, name: str = "activations") -> PlanePoint:
        """Estimated I(X;T) (as h_t), I(T;Y), H(Y) and the count of distinct binned rows."""
        return plane_points(values, labels, [self], global_range, label_groups=label_groups, name=name)[0]


def compact_codes(codes: np.ndarray, n_bins: int, label_bits: int = 0) -> np.ndarray:
    """Bin indices as the fewest bytes per row: the row read as a base-`n_bins` number.

    A bijection per row (as `codes.PackedCodes` packs exact codes at their bit
    width), so the distinct rows and their counts do not change. Done only when
    it lets `functional` count a row and its label as one 64-bit key (one sort
    instead of two); otherwise `codes` come back as they are.
    """
    width = codes.shape[1]
    nbytes = -(-((n_bins ** width - 1).bit_length()) // 8)
    if nbytes >= width * codes.itemsize or 8 * nbytes + label_bits > 64:
        return codes
    key = np.zeros(codes.shape[0], dtype=np.uint64)
    base = np.uint64(n_bins)
    for j in range(width):
        key *= base
        key += codes[:, j]
    return key.view(np.uint8).reshape(-1, 8)[:, :nbytes]  # little-endian low bytes hold the number


def plane_points(values: Any, labels: Any, estimators: Sequence["BinningEstimator"],
                 global_range: tuple[float, float] | None = None, *, label_groups=None,
                 name: str = "activations") -> list[PlanePoint]:
    """`est.plane_point(values, labels, global_range)` for each estimator, sharing the work they share.

    One check of the values, one set of bounds and one normalisation per
    bounds mode for all uniform bin counts, and each binning counted as
    compact rows (`compact_codes`).
    """
    rows = as_activation_rows(values, name)
    lab = as_code_rows(labels, "labels")
    if label_groups is None:
        label_groups = unique_rows(lab)
    label_bits = (label_groups[1].shape[0] - 1).bit_length()
    shared: dict[Any, list[BinningEstimator]] = {}
    for est in estimators:
        shared.setdefault(est.bounds if est.strategy == "uniform" else est, []).append(est)
    codes: dict[BinningEstimator, np.ndarray] = {}
    for key, group in shared.items():
        if group[0].strategy == "uniform":
            lo, hi = group[0]._bounds(rows, global_range)
            for est, c in zip(group, _uniform_many(rows, [e.n_bins for e in group], lo, hi)):
                codes[est] = c
        else:
            codes[group[0]] = group[0].codes(rows)
    return [information_plane_point(compact_codes(codes[e], e.n_bins, label_bits), lab, label_groups=label_groups)
            for e in estimators]


def parse_estimator(label: str) -> BinningEstimator:
    """The estimator a label names, e.g. "binning-uniform-30-global" or "binning-uniform-256-fixed[-1,1]"."""
    m = _LABEL.match(label) if isinstance(label, str) else None
    if m is None:
        raise ValueError(
            f"{label!r} is not a binning estimator; write binning-<uniform|adaptive>-<bins>-"
            "<global|layer|neuron|fixed[lo,hi]>, e.g. binning-uniform-30-global"
        )
    strategy, n_bins, where, lo, hi = m.groups()
    bounds = (float(lo), float(hi)) if where.startswith("fixed") else where
    return BinningEstimator(strategy, int(n_bins), bounds)


# The paper's appendix: uniform bins over the run's global range, three resolutions.
PAPER_ESTIMATORS = tuple(BinningEstimator("uniform", n, "global") for n in (30, 100, 256))
