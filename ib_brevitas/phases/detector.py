"""The offline detector: one layer's series -> `PhaseVerdict`.

With exact MI a layer's series (epoch, I(X;T), I(T;Y)) has no estimator
noise, only training noise, so the phases of the information bottleneck can be
decided by rule instead of by eye. Definitions and the data behind the
defaults: docs/phases.md. The streaming tracker decides with `decide` on the
same smoothed series, so its verdicts are `detect`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ib_brevitas.phases.series import (
    as_series,
    epoch_value,
    hinge_breakpoint,
    largest_fall,
    noise_sigma,
    running_median,
    saturated_mask,
    smoothed_noise,
)
from ib_brevitas.phases.types import Episode, PhaseVerdict, Thresholds, make_thresholds

KNEE_SPAN = 3  # thresholds of fall the onset's knee fit covers at most


@dataclass(frozen=True)
class Analysis:
    """A verdict plus the indices into the series that the tracker's events point at."""

    verdict: PhaseVerdict
    fit_end_index: int | None
    onset_index: int | None


def detect(
    epochs: Sequence[float] | np.ndarray,
    i_xt: Sequence[float] | np.ndarray,
    i_ty: Sequence[float] | np.ndarray,
    *,
    layer: str | None = None,
    n_samples: int | None = None,
    h_y: float | None = None,
    **thresholds: float,
) -> PhaseVerdict:
    """Fitting and compression verdict of one layer's series (epochs strictly increasing).

    `n_samples` (the probe set's size N, `LayerMI.n_samples`) lets the verdict
    mark a layer saturated at log2 N; without it nothing is. `h_y` (the
    labels' entropy, `LayerMI.h_y`) scales the I(T;Y) tolerance
    (`max_ty_drop_rel`); without it only `max_ty_drop_bits` applies. `thresholds` are
    the fields of `Thresholds`; `layer` only names the layer in error messages.
    """
    return analyse(epochs, i_xt, i_ty, make_thresholds(thresholds), layer, n_samples, h_y).verdict


def analyse(epochs: Any, i_xt: Any, i_ty: Any, th: Thresholds, layer: str | None,
            n_samples: int | None = None, h_y: float | None = None) -> Analysis:
    """`detect` with checked input and the indices behind the verdict."""
    where = f" of layer {layer!r}" if layer is not None else ""
    e = as_series("epochs", epochs, layer)
    x = as_series("i_xt", i_xt, layer)
    y = as_series("i_ty", i_ty, layer)
    if not (len(e) == len(x) == len(y)):
        raise ValueError(
            f"epochs, i_xt and i_ty{where} must have the same length, got {len(e)}, {len(x)}, {len(y)}"
        )
    if len(e) == 0:
        raise ValueError(f"the series{where} is empty: give at least one measurement")
    back = np.flatnonzero(np.diff(e) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise ValueError(
            f"epochs{where} must increase strictly, but epoch {e[i]:g} at position {i} follows "
            f"{e[i - 1]:g}; sort the measurements and drop duplicates"
        )
    w = int(th.smooth)
    return decide(e, x, y, running_median(x, w), running_median(y, w), th, log2_n(n_samples, layer),
                  check_h_y(h_y, layer))


def log2_n(n_samples: Any, layer: str | None = None) -> float | None:
    """log2 of the probe set's size, checked (None stays None: saturation unknown)."""
    if n_samples is None:
        return None
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        where = f" of layer {layer!r}" if layer is not None else ""
        raise ValueError(f"n_samples{where} must be a positive integer (the probe set's size), got {n_samples!r}")
    return float(np.log2(int(n_samples)))


def check_h_y(h_y: Any, layer: str | None = None) -> float | None:
    """The labels' entropy H(Y) in bits, checked (None stays None: the I(T;Y) tolerance is absolute)."""
    if h_y is None:
        return None
    if isinstance(h_y, bool) or not isinstance(h_y, (int, float, np.floating, np.integer)) \
            or not math.isfinite(h_y) or h_y < 0:
        where = f" of layer {layer!r}" if layer is not None else ""
        raise ValueError(f"h_y{where} must be the labels' entropy in bits (a number >= 0, LayerMI.h_y), got {h_y!r}")
    return float(h_y)


def zigzag(sx: list[float], thr: float, sustain: int = 1) -> list[tuple[int, int, int, bool]]:
    """Falls of at least `thr` from a local top: (rise start, top, trough, recovered) indices.

    A fall begins when the series is `thr` below the highest point since the
    last trough and ends at its lowest point once the series has been `thr`
    above it at `sustain` points (hysteresis of one threshold both ways, so
    noise below the threshold neither starts nor ends one). A fall that
    recovers after fewer than `sustain` points `thr` below its top is a dip,
    not an episode: it is dropped and the top kept. The last fall may be open
    (not recovered). Tops are first maxima.
    """
    out, seg, hi, lo, down, below, above = [], 0, 0, 0, False, 0, 0
    for i in range(1, len(sx)):
        v = sx[i]
        if not down:
            if v > sx[hi]:
                hi = i
            elif v <= sx[hi] - thr:
                down, lo, below, above = True, i, 1, 0
            continue
        below += v <= sx[hi] - thr
        if v < sx[lo]:
            lo, above = i, 0
        elif v >= sx[lo] + thr:
            above += 1
            if above < sustain and v <= sx[hi]:  # not yet sustained, and not above the old top
                continue
            down, top = False, lo + 1 + max(range(i - lo), key=lambda k: sx[lo + 1 + k])
            if below >= sustain:
                out.append((seg, hi, lo, True))
                seg, hi = lo, top
            elif sx[top] > sx[hi]:
                hi = top
    if down:
        out.append((seg, hi, lo, False))
    return out


def _knee(e: np.ndarray, sx: np.ndarray, seg: int, top: int, trough: int, noise: float, thr: float,
          th: Thresholds) -> int:
    # the onset of a fall: the knee of a flat-then-falling fit from where I(X;T)
    # reached its top (within the peak tolerance) to where the fall has gone half
    # its depth or KNEE_SPAN thresholds, whichever comes first (a fall that levels
    # off and falls again later is fitted on its first descent), so a top held for
    # a while starts falling at its end
    rise = float(sx[top] - sx[seg : top + 1].min())
    eps = max(th.noise_k * noise, th.peak_tol_frac * rise)
    reach = seg + int(np.argmax(sx[seg : top + 1] >= sx[top] - eps))
    depth = min(0.5 * (sx[top] - sx[trough]), KNEE_SPAN * thr)
    half = top + int(np.argmax(sx[top : trough + 1] <= sx[top] - depth))
    # a fall from the top starts no earlier than the top (a rounded dome's knee can lie before it)
    return max(top, reach + hinge_breakpoint(e[reach : half + 1], sx[reach : half + 1]))


def decide(e: np.ndarray, x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray,
           th: Thresholds, log2n: float | None = None, h_y: float | None = None) -> Analysis:
    """The verdict from validated raw series and their running medians."""
    n = len(e)
    sig_x, sig_y = noise_sigma(x), noise_sigma(y)
    sig_sx = smoothed_noise(sig_x, int(th.smooth))

    # Saturation: I(X;T) at log2 N means every probe sample has its own code.
    sat = saturated_mask(x, log2n, th.saturation_tol_bits) if log2n is not None else np.zeros(n, bool)
    sat_frac = float(sat.mean())
    saturated = bool(log2n is not None and sat_frac >= th.saturated_frac)

    # Fitting: I(T;Y) rises from the start; it ends when most of the gain is made.
    fit_gain = float(sy.max() - sy[0])
    fitting: bool | None = bool(fit_gain >= max(th.min_gain_bits, th.noise_k * sig_y) and fit_gain > 0)
    fit_end = int(np.argmax(sy >= sy[0] + th.fit_end_frac * fit_gain)) if fitting else None
    if not fitting and (sat[0] or saturated):  # injective from the start: I(T;Y) = H(Y) cannot rise
        fitting = None

    # Compression: a sustained fall from the global peak of smoothed I(X;T).
    thr = max(th.min_drop_bits, th.min_drop_rel * abs(float(sx.max())), th.noise_k * sig_x)
    imax = int(np.argmax(sx))
    peak, final = float(sx[imax]), float(sx[-1])
    drop = peak - final
    ty_tol = max(th.max_ty_drop_bits, th.max_ty_drop_rel * (h_y or 0.0), th.noise_k * sig_y)
    eps_peak = max(th.noise_k * sig_sx, th.peak_tol_frac * (peak - float(sx[: imax + 1].min())))
    reach = int(np.argmax(sx[: imax + 1] >= peak - eps_peak))
    falls = zigzag(sx.tolist(), thr, int(th.min_sustain))
    knees = [_knee(e, sx, *f[:3], sig_sx, thr, th) for f in falls]
    # an open fall lasts to the end: its depth so far is top - final, as the verdict's drop;
    # one that is back within the threshold of its top by then counts as recovered at its trough
    if falls and not falls[-1][3] and sx[-1] > sx[falls[-1][1]] - thr:
        falls[-1] = (*falls[-1][:3], True)
    ends = [lo if rec else n - 1 for _, _, lo, rec in falls]
    episodes = tuple(
        Episode(epoch_value(e[k]), epoch_value(e[end]), float(sx[top]), float(sx[end]), float(sx[top] - sx[end]), rec)
        for k, end, (_, top, _, rec) in zip(knees, ends, falls)
    )
    # the fall from the global peak: the first from a top within the peak tolerance of it
    # (two tops equal up to noise: the earlier one; a peak held from the start: its end)
    head = next((i for i, f in enumerate(falls) if sx[f[1]] >= peak - eps_peak), None)
    onset = None
    if drop >= thr and drop > 0:
        onset = knees[head]
        j = int(np.flatnonzero(sx > peak - thr)[-1]) + 1  # start of the final run of measurements down
        ty_change, ty_fall = float(sy[-1] - sy[onset]), largest_fall(sy[onset:])
        if n < th.min_after_peak:  # too few points to know the noise, let alone a trend
            compression, reason = None, "too_few_measurements"
        elif ty_fall > ty_tol:
            compression, reason = False, "i_ty_dropped"
        elif n - j >= th.min_sustain:
            compression, reason = True, "compressed"
        else:
            compression, reason = None, "tentative"
    else:
        ty_change, ty_fall = float(sy[-1] - sy[imax]), largest_fall(sy[imax:])
        if saturated:
            compression, reason = False, "saturated"
        elif n - 1 - reach < th.min_after_peak:
            compression, reason = None, "too_short_after_peak"
        elif head is not None and falls[head][3]:
            compression, reason = False, "recovered"
        else:
            compression, reason = False, "no_drop"

    verdict = PhaseVerdict(
        fitting=fitting,
        compression=compression,
        reason=reason,
        saturated=saturated,
        saturated_frac=sat_frac,
        log2_n=log2n,
        n_measurements=n,
        first_epoch=epoch_value(e[0]),
        last_epoch=epoch_value(e[-1]),
        fit_end_epoch=None if fit_end is None else epoch_value(e[fit_end]),
        fit_gain_bits=fit_gain,
        fit_i_xt_change=None if fit_end is None else float(sx[fit_end] - sx[0]),
        start_i_xt=float(sx[0]),
        start_i_ty=float(sy[0]),
        peak_i_ty=float(sy.max()),
        final_i_ty=float(sy[-1]),
        peak_epoch=epoch_value(e[reach]),
        peak_i_xt=peak,
        final_i_xt=final,
        drop_bits=float(drop),
        drop_rel=float(drop / peak) if peak > 0 else 0.0,
        threshold_bits=float(thr),
        onset_epoch=None if onset is None else epoch_value(e[onset]),
        episodes=episodes,
        i_ty_change=ty_change,
        i_ty_fall_bits=ty_fall,
        noise_i_xt=sig_x,
        noise_i_ty=sig_y,
        ty_tolerance_bits=float(ty_tol),
    )
    return Analysis(verdict, fit_end, onset)
