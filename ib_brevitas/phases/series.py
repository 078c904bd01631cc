"""Series statistics the detector stands on: smoothing, noise, the knee of a fall, saturation.

All of them take plain 1-D arrays; `as_series` checks and converts user input.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np


def running_median(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Centred running median of `window` points, shrinking at the ends.

    A median of `window` points ignores up to window // 2 consecutive outliers,
    so single-measurement wiggles never move the smoothed series. At the end
    the window keeps its past half (median of the last h + 1 points), so the
    newest point alone cannot move it either (the online detector's edge). At
    the start it shrinks symmetrically: the first value stays the untrained
    network's own measurement instead of borrowing later ones during a fast rise.
    """
    x = np.asarray(values, dtype=float)
    n, h = len(x), int(window) // 2
    if h == 0 or n == 0:
        return x.copy()
    out = np.empty(n)
    if n > 2 * h:
        windows = np.stack([x[k : n - 2 * h + k] for k in range(2 * h + 1)])
        out[h : n - h] = np.partition(windows, h, axis=0)[h]
    edges = [*range(min(h, n)), *range(max(n - h, min(h, n)), n)]
    if edges:
        head, tail = x[: 3 * h].tolist(), x[max(0, n - 2 * h) :].tolist()
        for i in edges:
            out[i] = statistics.median(window_at(head, i, h) if i < h else window_at(tail, i - max(0, n - 2 * h), h))
    return out


def window_at(x: list, i: int, h: int) -> list:
    """running_median's window at position i: symmetric, shrinking at the start, losing its future half at the end."""
    return x[: 2 * i + 1] if i < h else x[i - h : i + h + 1]


def noise_sigma(values: Sequence[float] | np.ndarray) -> float:
    """Robust standard deviation of measurement-to-measurement noise.

    From the MAD of second differences, which cancel any locally linear trend
    (a smooth rise or decline) and are barely moved by a few jumps.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 4:
        return 0.0
    d2 = x[2:] - 2 * x[1:-1] + x[:-2]
    mad = _median(np.abs(d2 - _median(d2)))
    return 1.4826 * mad / math.sqrt(6.0)


def _median(a: np.ndarray) -> float:
    # np.median without its per-call overhead (called at every online update)
    m = len(a)
    p = np.partition(a, (m - 1) // 2 if m % 2 else (m // 2 - 1, m // 2))
    return float(p[m // 2]) if m % 2 else float(0.5 * (p[m // 2 - 1] + p[m // 2]))


def smoothed_noise(sigma: float, window: int) -> float:
    """sd of the median of `window` iid normal values (asymptotic sqrt(pi / 2w))."""
    return sigma * min(1.0, math.sqrt(math.pi / (2 * int(window))))


def hinge_breakpoint(t: np.ndarray, y: np.ndarray) -> int:
    """Index of the break of the least-squares "flat, then linear fall" fit to (t, y).

    Locates where a decline starts without a tolerance band (which would put
    the onset late by band / slope). O(n) through suffix sums.
    """
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    m = len(t)
    if m < 3:
        return 0
    t = t - t[0]
    suf = lambda v: np.cumsum(v[::-1])[::-1]  # noqa: E731  suffix sums
    # breakpoint at t[i]: h_j = t_j - t[i] for j > i, else 0
    cnt = suf(np.ones(m))[1:]
    s1, s2 = suf(t)[1:], suf(t * t)[1:]
    sty, sy = suf(t * y)[1:], suf(y)[1:]
    tau = t[:-1]
    sh = s1 - tau * cnt
    shh = s2 - 2 * tau * s1 + tau * tau * cnt - sh * sh / m
    shy = sty - tau * sy - sh * y.sum() / m
    gain = np.where((shy < 0) & (shh > 0), shy * shy / np.where(shh > 0, shh, 1), -1.0)
    return int(np.argmax(gain))


def largest_fall(y: np.ndarray) -> float:
    """Largest decrease from an earlier to a later point (0 for a rising series)."""
    return float(np.max(np.maximum.accumulate(y) - y)) if len(y) else 0.0


def saturated_mask(i_xt: np.ndarray, log2_n: float, tol_bits: float) -> np.ndarray:
    """Measurements at log2 N within `tol_bits`: every probe sample had (nearly) its own code.

    One merged pair of N samples lowers H(T) by about 2/N bits (0.0005 for
    N = 4096), so a tolerance of 0.01 bit allows about 20 collisions.
    """
    return np.asarray(i_xt, dtype=float) >= log2_n - tol_bits


def epoch_value(e: float) -> int | float:
    return int(e) if float(e).is_integer() else float(e)


def as_series(name: str, values: Any, layer: str | None) -> np.ndarray:
    """A checked float array: 1-D, real, finite (a one-line error naming the layer otherwise)."""
    where = f" of layer {layer!r}" if layer is not None else ""
    try:
        arr = np.asarray(values)
    except Exception as e:  # ragged input and the like
        raise TypeError(f"{name}{where} must be a 1-D sequence of numbers ({e})") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}{where} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}{where} must be 1-D, got shape {arr.shape}")
    arr = arr.astype(float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name}{where} has a non-finite value ({arr[bad[0]]}) at position {bad[0]}; "
            "exact MI is always finite, so the series is corrupt"
        )
    return arr
