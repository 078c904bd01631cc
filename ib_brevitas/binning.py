"""Binning estimators of I(X;T) and I(T;Y) for float activations: the baselines the paper argues against.

A float layer has no integer codes, so its MI can only be estimated: each
activation is put into one of `n_bins` bins and the rows of bin indices are
counted exactly (`ib_brevitas.bincount`, by the entropy definitions of
`ib_brevitas.functional`). The result depends on the binning - Lorenzen, Igel & Nielsen (ICLR
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

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ib_brevitas import bincount
from ib_brevitas.functional import PlanePoint, as_code_rows, unique_rows

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


def column_ranges(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every column's (min, max) of 2-D `rows`, as `rows.min(axis=0)`, `rows.max(axis=0)` give them.

    Reduced over row blocks of >= 512 values first: numpy's axis-0 reduction
    of a narrow array runs one short inner loop per row (~40x slower).
    """
    n, w = rows.shape
    k = max(1, 512 // max(1, w))
    m = (n // k) * k
    out = []
    for op in (np.minimum, np.maximum):
        r = op.reduce(op.reduce(rows[:m].reshape(m // k, k * w), axis=0).reshape(k, w), axis=0) if m else None
        if m < n:
            rest = op.reduce(rows[m:], axis=0)
            r = rest if r is None else op(r, rest)
        out.append(r)
    return out[0], out[1]


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

    Exactly `np.digitize(v, np.linspace(lo, hi, n_bins + 1)[1:-1])`: bin k
    holds e_k <= v < e_(k+1) for the float64 edges e_k that `np.linspace` makes
    (an edge belongs to the upper bin), v >= e_(n-1) the last bin, values below
    lo the first; a column with hi <= lo (constant) bin 0.
    """
    n_bins = _check_bins(n_bins)
    return _uniform_many(as_activation_rows(values), [n_bins], lo, hi)[0].astype(_code_dtype(n_bins))


_BLOCK_VALUES = 1 << 15  # values per block: the float64 temporaries stay in the CPU cache
_EPS = 2.0**-53
_clip = np._core.umath.clip  # the ufunc itself: np.clip's wrapper costs more than a block's clip
_CELLS = 1 << 16  # cells of [0, 1] in the table of where an edge is near


def linspace_edges(lo: np.ndarray, hi: np.ndarray, n_bins: int) -> np.ndarray:
    """(n_bins + 1, width): column j is `np.linspace(lo[j], hi[j], n_bins + 1)`, bit for bit.

    (One `np.linspace` call on arrays would switch every column to its
    denormal-step formula as soon as one column is constant.)
    """
    k = np.arange(n_bins + 1, dtype=np.float64)[:, None]
    delta = hi - lo
    step = delta / n_bins
    edges = k * step
    tiny = step == 0
    if tiny.any():
        edges[:, tiny] = (k / n_bins) * delta[tiny]
    edges += lo
    edges[-1] = hi
    return edges


@functools.lru_cache(maxsize=64)
def _near_edge_cells(bin_counts: tuple[int, ...], tol: float) -> np.ndarray:
    """Bool table over _CELLS cells of u in [0, 1]: True where u may lie within tol of an interior edge k/n."""
    table = np.zeros(_CELLS + 1, dtype=bool)
    for n in bin_counts:
        k = np.arange(1, n) / n
        lo = np.floor((k - tol) * _CELLS).astype(np.intp)
        hi = np.floor((k + tol) * _CELLS).astype(np.intp)
        for d in range(int((hi - lo).max(initial=0)) + 1):
            table[np.minimum(lo + d, hi)] = True
    return table


def _uniform_many(rows: np.ndarray, bin_counts: list[int], lo, hi,
                  weights: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """`uniform_codes` as float64 (N, width) for several bin counts sharing one pair of bounds;
    with `weights` (one (width, G) matrix per bin count) the codes @ weights (N, G) instead.

    Arithmetic, with np.digitize's exact edges: u = (v - lo) / (hi - lo) is
    computed once per block and clipped to [tol, 1 - tol] (tol: the rounding
    error of u and of the linspace edges, in units of the range), the bin of v
    is floor(u n) for all bin counts in one broadcast; a table of u's cells
    flags the values that may lie within tol of an interior edge of any of the
    bin counts, and only those are compared with the linspace edges themselves.
    Values at or beyond the bounds (ReLU zeros at lo, say) are never flagged.
    With weights, each block's codes are multiplied while in the CPU cache and
    the flagged values' corrections added to the products afterwards.
    """
    n_rows, width = rows.shape
    lo = np.array(np.broadcast_to(np.asarray(lo, dtype=np.float64), (width,)))
    hi = np.array(np.broadcast_to(np.asarray(hi, dtype=np.float64), (width,)))
    span = hi - lo
    live = span > 0  # constant columns: u = tol, bin 0
    inv = np.where(live, 1.0 / np.where(live, span, 1.0), 0.0)
    tol = 32 * _EPS * (2.0 + float((np.maximum(np.abs(lo), np.abs(hi))[live] / span[live]).max(initial=0.0)))
    if not (np.isfinite(inv).all() and 4 * tol * max(bin_counts) < 1):  # range at the float64 resolution
        outs = []
        for n in bin_counts:
            edges = linspace_edges(lo, hi, n)[1:-1]
            codes = np.zeros((n_rows, width))
            for j in np.flatnonzero(live):
                codes[:, j] = np.searchsorted(edges[:, j], rows[:, j], side="right")
            outs.append(codes)
        return outs if weights is None else [c @ w for c, w in zip(outs, weights)]
    outs = [np.empty((n_rows, width) if weights is None else (n_rows, w.shape[1])) for w in (weights or bin_counts)]
    table = _near_edge_cells(tuple(bin_counts), 2 * tol)
    block = max(1, _BLOCK_VALUES // max(1, width))
    u = np.empty((min(block, n_rows), width))
    t = np.empty_like(u)
    cell = np.empty(u.shape, dtype=np.intp)
    flagged = []
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        uu, tt = u[: stop - start], t[: stop - start]
        np.subtract(rows[start:stop], lo, out=uu)
        uu *= inv
        _clip(uu, tol, 1.0 - tol, out=uu)
        for i, n in enumerate(bin_counts):
            if weights is None:
                np.floor(np.multiply(uu, float(n), out=outs[i][start:stop]), out=outs[i][start:stop])
            else:
                np.floor(np.multiply(uu, float(n), out=tt), out=tt)
                np.matmul(tt, weights[i], out=outs[i][start:stop])
        cc = cell[: stop - start]
        np.multiply(uu, float(_CELLS), out=cc, casting="unsafe")
        hits = np.flatnonzero(table[cc])
        if hits.size:
            flagged.append(hits + start * width)
    if flagged:
        flat = np.concatenate(flagged)
        row, col = np.divmod(flat, width)
        v = rows[row, col].astype(np.float64)
        uf = np.clip((v - lo[col]) * inv[col], tol, 1.0 - tol)
        for i, n in enumerate(bin_counts):
            floor = np.floor(uf * float(n))  # as in the block: floor(u n), at most one bin off
            k = floor.astype(np.intp)
            edges = linspace_edges(lo, hi, n)
            k -= (k > 0) & (v < edges[k, col])
            k += (k < n - 1) & (v >= edges[np.minimum(k + 1, n), col])
            if weights is None:
                outs[i][row, col] = k
                continue
            delta = k - floor
            moved = np.flatnonzero(delta)
            for g in range(weights[i].shape[1]):
                w_g = weights[i][col[moved], g] * delta[moved]
                outs[i][:, g] += np.bincount(row[moved], weights=w_g, minlength=n_rows)
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
        lo, hi = self._bounds(*column_ranges(rows), global_range)
        return _uniform_many(rows, [self.n_bins], lo, hi)[0].astype(_code_dtype(self.n_bins))

    def _bounds(self, col_min: np.ndarray, col_max: np.ndarray, global_range):
        """(lo, hi) of uniform bins on rows with these column ranges: scalars, or one pair per column."""
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
            return float(col_min.min()), float(col_max.max())
        return col_min.astype(np.float64), col_max.astype(np.float64)

    def plane_point(self, values: Any, labels: Any, global_range: tuple[float, float] | None = None, *,
                    label_groups=None, name: str = "activations") -> PlanePoint:
        """Estimated I(X;T) (as h_t), I(T;Y), H(Y) and the count of distinct binned rows."""
        return plane_points(values, labels, [self], global_range, label_groups=label_groups, name=name)[0]


def plane_points(values: Any, labels: Any, estimators: Sequence["BinningEstimator"],
                 global_range: tuple[float, float] | None = None, *, label_groups=None,
                 name: str = "activations") -> list[PlanePoint]:
    """`est.plane_point(values, labels, global_range)` for each estimator, sharing the work they share.

    One check of the values and one pass for the column ranges; one set of
    bounds and one normalisation per bounds mode for all its uniform bin counts
    (`_uniform_many`); each binning counted as one mixed-radix number per row
    over the bins its columns use (`bincount.plane_point`).
    """
    rows = as_activation_rows(values, name)
    lab = as_code_rows(labels, "labels")
    if lab.shape[0] != rows.shape[0]:
        raise ValueError(f"{lab.shape[0]} labels for {rows.shape[0]} rows of {name}: pass one label per sample")
    y_ids, y_counts = unique_rows(lab) if label_groups is None else label_groups
    col_min, col_max = column_ranges(rows)
    ends = np.stack([col_min, col_max])  # the rows that hold every column's smallest and largest bin
    shared: dict[Any, list[BinningEstimator]] = {}
    for est in estimators:
        shared.setdefault(est.bounds if est.strategy == "uniform" else est, []).append(est)
    points: dict[BinningEstimator, PlanePoint] = {}
    for group in shared.values():
        if group[0].strategy == "uniform":
            lo, hi = group[0]._bounds(col_min, col_max, global_range)
            counts = [e.n_bins for e in group]
            layouts = [bincount.key_layout(e[0], e[1]) for e in _uniform_many(ends, counts, lo, hi)]
            parts = _uniform_many(rows, counts, lo, hi, weights=[layout[0] for layout in layouts])
            for est, p, (_, offsets, spaces) in zip(group, parts, layouts):
                points[est] = bincount.parts_point(p, offsets, spaces, y_ids, y_counts)
        else:
            c = group[0].codes(rows)
            points[group[0]] = bincount.plane_point(c, *column_ranges(c), y_ids, y_counts)
    return [points[e] for e in estimators]


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
