"""Fitting and compression phases of information-plane trajectories, offline and online.

With exact MI a layer's series (epoch, I(X;T), I(T;Y)) has no estimator
noise, only training noise, so the phases of the information bottleneck can be
decided by rule instead of by eye. `detect` decides one layer's series;
`PhaseTracker` is fed every measurement during training, emits `PhaseEvent`s
with hysteresis, and its verdicts are `detect` on the series seen so far.
Definitions, defaults and the data behind them: docs/phases.md.

Only numpy and the standard library are imported (the TensorBoard plugin may
import this module).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ib_brevitas.files import read_jsonl, write_jsonl
from ib_brevitas.formatting import fmt as _fmt, format_table
from ib_brevitas.records import LayerMI, dataclass_from_dict

PHASES_FILE = "phases.jsonl"  # the events' file, beside mi.jsonl in a run directory

FITTING_ENDED = "fitting_ended"
COMPRESSION_STARTED = "compression_started"
COMPRESSION_CONFIRMED = "compression_confirmed"
COMPRESSION_RETRACTED = "compression_retracted"
EVENT_KINDS = (FITTING_ENDED, COMPRESSION_STARTED, COMPRESSION_CONFIRMED, COMPRESSION_RETRACTED)

# Why a verdict's `compression` is what it is.
REASONS = {
    "compressed": "I(X;T) fell from its peak by at least the threshold and stayed down",
    "tentative": "I(X;T) fell by the threshold but not yet for min_sustain measurements",
    "i_ty_dropped": "I(X;T) fell, but I(T;Y) fell by more than the tolerance during the fall",
    "no_drop": "I(X;T) did not fall from its peak by the threshold",
    "too_short_after_peak": "too few measurements after I(X;T) reached its peak to tell",
    "too_few_measurements": "I(X;T) fell, but fewer than min_after_peak measurements exist in all",
}


def _knob(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Thresholds:
    """Knobs of the detector (all documented with their defaults in docs/phases.md)."""

    smooth: int = _knob(5, "running-median window, in measurements (odd)")
    min_drop_bits: float = _knob(0.1, "compression: least fall of I(X;T) from its peak, bits")
    min_drop_rel: float = _knob(0.01, "compression: least fall relative to the peak")
    noise_k: float = _knob(4.0, "falls and gains must exceed this many noise sd")
    max_ty_drop_bits: float = _knob(0.05, "most I(T;Y) may fall during compression, bits")
    min_gain_bits: float = _knob(0.05, "fitting: least rise of I(T;Y), bits")
    fit_end_frac: float = _knob(0.95, "fitting ends when I(T;Y) has made this share of its gain")
    peak_tol_frac: float = _knob(0.02, "'at the peak' = within this share of the rise")
    min_sustain: int = _knob(5, "compression needs this many measurements down")
    min_after_peak: int = _knob(10, "fewer measurements after the peak (or in all): undecided")
    release_frac: float = _knob(0.5, "events: retract when the fall shrinks below this x threshold")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"threshold {f.name} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"threshold {f.name} must be >= 0, got {v!r}")
        for name in ("smooth", "min_sustain", "min_after_peak"):
            v = getattr(self, name)
            if v != int(v):
                raise ValueError(f"threshold {name} counts measurements: give an integer, not {v!r}")
        if int(self.smooth) < 1 or int(self.smooth) % 2 == 0:
            raise ValueError(f"threshold smooth must be an odd window >= 1, got {self.smooth!r}")
        if int(self.min_sustain) < 1:
            raise ValueError(f"threshold min_sustain must be >= 1, got {self.min_sustain!r}")
        if not 0 < self.fit_end_frac <= 1:
            raise ValueError(f"threshold fit_end_frac must lie in (0, 1], got {self.fit_end_frac!r}")
        if self.release_frac > 1:
            raise ValueError(f"threshold release_frac must lie in [0, 1], got {self.release_frac!r}")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


THRESHOLD_NAMES = tuple(f.name for f in dataclasses.fields(Thresholds))


@dataclass(frozen=True)
class PhaseVerdict:
    """One layer's phases. I(X;T) values are of the smoothed series, in bits.

    The peak is that of I(X;T)'s last rise (from `rise_start_epoch`: the
    start, or the trough after a transient that I(X;T) rebounded from).
    `compression` is True, False, or None (undecided; `reason` says why).
    `onset_epoch` is set whenever I(X;T) is down by the threshold at the end.
    Over the stretch from the onset (else the peak) to the end, `i_ty_change`
    is the net change of smoothed I(T;Y) and `i_ty_fall_bits` its largest fall
    (what `max_ty_drop_bits` bounds). Epochs are those of the input series.
    """

    fitting: bool
    compression: bool | None
    reason: str
    n_measurements: int
    first_epoch: int | float
    last_epoch: int | float
    fit_end_epoch: int | float | None
    fit_gain_bits: float
    fit_i_xt_change: float | None
    rise_start_epoch: int | float
    peak_epoch: int | float
    peak_reached_epoch: int | float
    peak_i_xt: float
    final_i_xt: float
    drop_bits: float
    drop_rel: float
    threshold_bits: float
    onset_epoch: int | float | None
    i_ty_change: float
    i_ty_fall_bits: float
    noise_i_xt: float
    noise_i_ty: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseVerdict":
        return dataclass_from_dict(cls, d)


@dataclass(frozen=True)
class PhaseEvent:
    """A phase change as it became known during training.

    `epoch` is the epoch the event refers to (fitting end, compression onset,
    or the retracting measurement) and `i_xt`, `i_ty` are the raw measured
    values there, so a UI can mark that point of the trajectory;
    `detected_epoch` is the measurement at which the event was decided.
    `detail` holds the numbers behind it (plus `reason` on retractions).
    """

    layer: str
    kind: str
    epoch: int | float
    i_xt: float
    i_ty: float
    detected_epoch: int | float
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown phase event kind {self.kind!r}; expected one of {EVENT_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["detail"] = dict(self.detail)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseEvent":
        return dataclass_from_dict(cls, d)


# ---------------------------------------------------------------- series tools


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
            out[i] = statistics.median(_window(head, i, h) if i < h else _window(tail, i - max(0, n - 2 * h), h))
    return out


def _window(x: list, i: int, h: int) -> list:
    # running_median's window at position i: symmetric, shrinking at the start,
    # losing its future half at the end (slicing clips it)
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


def _last_rise_start(sx: np.ndarray, size: float) -> int:
    """Start of I(X;T)'s last rise: 0, or the trough before a rebound.

    A rebound is a dip by >= size below an earlier point followed by a rise of
    >= size (e.g. the transient of the first epochs of ReLU nets); the peak that
    compression falls from is then that of the rise after the last trough.
    """
    if len(sx) < 3:
        return 0
    before = np.maximum.accumulate(sx)[:-2]  # max of sx[:i], i = 1 .. n-2
    after = np.maximum.accumulate(sx[::-1])[::-1][2:]  # max of sx[i + 1:]
    mid = sx[1:-1]
    dips = np.flatnonzero((before - mid >= size) & (after - mid >= size))
    if not dips.size:
        return 0
    t = int(dips[-1]) + 1
    p = int(np.argmax(sx[:t]))  # the earlier peak
    return p + int(np.argmin(sx[p : t + 1]))


def _largest_fall(y: np.ndarray) -> float:
    # largest decrease from an earlier to a later point (0 for a rising series)
    return float(np.max(np.maximum.accumulate(y) - y))


def _smoothed_noise(sigma: float, window: int) -> float:
    # sd of the median of `window` iid normal values (asymptotic sqrt(pi / 2w))
    return sigma * min(1.0, math.sqrt(math.pi / (2 * int(window))))


def _epoch_value(e: float) -> int | float:
    return int(e) if float(e).is_integer() else float(e)


def _as_series(name: str, values: Any, layer: str | None) -> np.ndarray:
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


@dataclass(frozen=True)
class _Analysis:
    verdict: PhaseVerdict
    fit_end_index: int | None


def _analyse(epochs: Any, i_xt: Any, i_ty: Any, th: Thresholds, layer: str | None) -> _Analysis:
    where = f" of layer {layer!r}" if layer is not None else ""
    e = _as_series("epochs", epochs, layer)
    x = _as_series("i_xt", i_xt, layer)
    y = _as_series("i_ty", i_ty, layer)
    if not (len(e) == len(x) == len(y)):
        raise ValueError(
            f"epochs, i_xt and i_ty{where} must have the same length, got {len(e)}, {len(x)}, {len(y)}"
        )
    n = len(e)
    if n == 0:
        raise ValueError(f"the series{where} is empty: give at least one measurement")
    back = np.flatnonzero(np.diff(e) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise ValueError(
            f"epochs{where} must increase strictly, but epoch {e[i]:g} at position {i} follows "
            f"{e[i - 1]:g}; sort the measurements and drop duplicates"
        )
    w = int(th.smooth)
    return _decide(e, x, y, running_median(x, w), running_median(y, w), th)


def _decide(e: np.ndarray, x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray,
            th: Thresholds) -> _Analysis:
    """The verdict from validated raw series and their running medians."""
    n, w = len(e), int(th.smooth)
    sig_x, sig_y = noise_sigma(x), noise_sigma(y)
    sig_sx = _smoothed_noise(sig_x, w)

    # Fitting: I(T;Y) rises from the start; it ends when most of the gain is made.
    fit_gain = float(sy.max() - sy[0])
    fitting = bool(fit_gain >= max(th.min_gain_bits, th.noise_k * sig_y) and fit_gain > 0)
    fit_end = None
    if fitting:
        fit_end = int(np.argmax(sy >= sy[0] + th.fit_end_frac * fit_gain))

    # Compression: after the peak of its last rise, I(X;T) falls by the threshold and stays down.
    thr = max(th.min_drop_bits, th.min_drop_rel * abs(float(sx.max())), th.noise_k * sig_x)
    r0 = _last_rise_start(sx, 2 * thr)  # 2 x: noise within a fall is no rebound
    imax = r0 + int(np.argmax(sx[r0:]))
    peak = float(sx[imax])
    eps_peak = max(th.noise_k * sig_sx, th.peak_tol_frac * (peak - sx[r0]))
    reach = r0 + int(np.argmax(sx[r0:] >= peak - eps_peak))
    final = float(sx[-1])
    drop = peak - final
    onset = None
    if drop >= thr and drop > 0:
        below = sx <= peak - thr
        above = np.flatnonzero(~below)  # imax is among them
        j = int(above[-1]) + 1  # start of the final run of measurements down
        # onset: the knee of a flat-then-falling fit from reaching the peak until
        # I(X;T) is down for good by half the drop
        half = int(np.flatnonzero(sx > peak - 0.5 * drop)[-1]) + 1
        onset = reach + hinge_breakpoint(e[reach : half + 1], sx[reach : half + 1])
        ty_change, ty_fall = float(sy[-1] - sy[onset]), _largest_fall(sy[onset:])
        ty_tol = max(th.max_ty_drop_bits, th.noise_k * sig_y)
        if n < th.min_after_peak:  # too few points to know the noise, let alone a trend
            compression, reason = None, "too_few_measurements"
        elif ty_fall > ty_tol:
            compression, reason = False, "i_ty_dropped"
        elif n - j >= th.min_sustain:
            compression, reason = True, "compressed"
        else:
            compression, reason = None, "tentative"
    else:
        ty_change, ty_fall = float(sy[-1] - sy[imax]), _largest_fall(sy[imax:])
        if n - 1 - reach < th.min_after_peak:
            compression, reason = None, "too_short_after_peak"
        else:
            compression, reason = False, "no_drop"

    verdict = PhaseVerdict(
        fitting=fitting,
        compression=compression,
        reason=reason,
        n_measurements=n,
        first_epoch=_epoch_value(e[0]),
        last_epoch=_epoch_value(e[-1]),
        fit_end_epoch=None if fit_end is None else _epoch_value(e[fit_end]),
        fit_gain_bits=fit_gain,
        fit_i_xt_change=None if fit_end is None else float(sx[fit_end] - sx[0]),
        rise_start_epoch=_epoch_value(e[r0]),
        peak_epoch=_epoch_value(e[imax]),
        peak_reached_epoch=_epoch_value(e[reach]),
        peak_i_xt=peak,
        final_i_xt=final,
        drop_bits=float(drop),
        drop_rel=float(drop / peak) if peak > 0 else 0.0,
        threshold_bits=float(thr),
        onset_epoch=None if onset is None else _epoch_value(e[onset]),
        i_ty_change=ty_change,
        i_ty_fall_bits=ty_fall,
        noise_i_xt=sig_x,
        noise_i_ty=sig_y,
    )
    return _Analysis(verdict, fit_end)


def detect(
    epochs: Sequence[float] | np.ndarray,
    i_xt: Sequence[float] | np.ndarray,
    i_ty: Sequence[float] | np.ndarray,
    *,
    layer: str | None = None,
    **thresholds: float,
) -> PhaseVerdict:
    """Fitting and compression verdict of one layer's series (epochs strictly increasing).

    `thresholds` are the fields of `Thresholds`; `layer` only names the layer
    in error messages.
    """
    return _analyse(epochs, i_xt, i_ty, make_thresholds(thresholds), layer).verdict


def make_thresholds(kw: Mapping[str, Any]) -> Thresholds:
    """`Thresholds` from keyword arguments; an unknown name is a TypeError listing the known ones."""
    unknown = sorted(set(kw) - set(THRESHOLD_NAMES))
    if unknown:
        raise TypeError(f"unknown phase thresholds {unknown}; known: {', '.join(THRESHOLD_NAMES)}")
    return Thresholds(**kw)


# ---------------------------------------------------------------- online


class _Layer:
    """One layer's series (raw and smoothed) in growing buffers, plus its event state.

    Appending a point changes only the running medians whose window holds it,
    so those are recomputed and the rest kept: each update costs O(window)
    for smoothing instead of O(n), with values identical to `running_median`.
    """

    def __init__(self, index: int, window: int) -> None:
        self.index, self.window, self.n = index, window, 0
        self.buf = np.empty((5, 64))  # epochs, i_xt, i_ty, smoothed i_xt, smoothed i_ty
        self.state = "none"  # none | tentative | confirmed
        self.entry_threshold = 0.0  # the threshold when compression started (fixes the release level)
        self.fit_reported = False

    def append(self, epoch: float, i_xt: float, i_ty: float) -> None:
        if self.n == self.buf.shape[1]:
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)], axis=1)
        n, h = self.n + 1, self.window // 2
        self.buf[:3, n - 1] = epoch, i_xt, i_ty
        lo = max(0, n - 1 - h)  # first index whose window holds the new point
        start = max(0, lo - h)
        for raw, smooth in ((1, 3), (2, 4)):
            tail = self.buf[raw, start:n].tolist()
            self.buf[smooth, lo:n] = [statistics.median(_window(tail, i - start, h)) for i in range(lo, n)]
        self.n = n

    def series(self) -> tuple[np.ndarray, ...]:
        return tuple(self.buf[:, : self.n])

    @property
    def epochs(self) -> np.ndarray:
        return self.buf[0, : self.n]


class PhaseTracker:
    """Streaming phase detector: feed it every measurement's records, all layers.

    `update` returns the events that measurement triggered. Compression is
    "started" (tentative) as soon as I(X;T) is down by the threshold,
    "confirmed" when `detect` says compression, and "retracted" only when the
    fall shrinks below `release_frac` x the threshold (the smaller of the one
    it started with and the current one, as the noise estimate moves) or
    I(T;Y) drops, so noise around the threshold cannot make events flap.
    `verdicts()` is exactly `detect` on each layer's series so far. Call
    `finish()` once at the end of training so the last events agree with the
    final verdicts.
    """

    def __init__(self, **thresholds: float) -> None:
        self.thresholds = make_thresholds(thresholds)
        self.events: list[PhaseEvent] = []  # everything emitted so far, in order
        self._layers: dict[str, _Layer] = {}

    @classmethod
    def from_records(cls, records: Iterable[LayerMI], **thresholds: float) -> "PhaseTracker":
        """Rebuild a tracker (e.g. on resume) by replaying records in epoch order.

        Replay is deterministic: `.events` then holds exactly the events the
        live tracker emitted for these records, so a resumed run can rewrite
        phases.jsonl from it; nothing is returned to be emitted again.
        """
        tracker = cls(**thresholds)
        records = list(records)
        _check_records(records)
        by_epoch: dict[Any, list[LayerMI]] = {}
        for r in sorted(records, key=lambda r: r.epoch):
            by_epoch.setdefault(r.epoch, []).append(r)
        for group in by_epoch.values():
            tracker.update(group)
        return tracker

    @property
    def layers(self) -> list[str]:
        return sorted(self._layers, key=lambda k: self._layers[k].index)

    def update(self, records: Iterable[LayerMI]) -> list[PhaseEvent]:
        """Add one measurement (records of any number of layers) and return new events."""
        records = list(records)
        _check_records(records)
        records.sort(key=lambda r: r.epoch)
        last = {name: float(s.epochs[-1]) for name, s in self._layers.items() if s.n}
        for r in records:  # check everything first: a bad record leaves the tracker as it was
            if r.layer in last and not r.epoch > last[r.layer]:
                raise ValueError(
                    f"layer {r.layer!r}: epoch {r.epoch} is not after its last measured epoch "
                    f"{_epoch_value(last[r.layer])}; feed each measurement once and in order "
                    "(on resume rebuild the tracker with PhaseTracker.from_records)"
                )
            for name in ("i_xt", "i_ty"):
                v = getattr(r, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"layer {r.layer!r} at epoch {r.epoch}: {name} is {v!r}, not a finite number")
            last[r.layer] = r.epoch
        for r in records:
            s = self._layers.get(r.layer)
            if s is None:
                s = self._layers[r.layer] = _Layer(int(r.layer_index), int(self.thresholds.smooth))
            s.append(float(r.epoch), float(r.i_xt), float(r.i_ty))
        new: list[PhaseEvent] = []
        for name in sorted({r.layer for r in records}, key=lambda k: self._layers[k].index):
            new += self._step(name, self._layers[name])
        self.events += new
        return new

    def verdicts(self) -> dict[str, PhaseVerdict]:
        """`detect` on every layer's series so far, in layer order."""
        return {name: self._analyse(name).verdict for name in self.layers}

    def finish(self) -> list[PhaseEvent]:
        """End of training: emit what makes the events agree with the final verdicts.

        A pending fitting end is reported, and a started or confirmed
        compression the final verdict does not hold is retracted.
        """
        new: list[PhaseEvent] = []
        for name in self.layers:
            s = self._layers[name]
            a = self._analyse(name)
            v = a.verdict
            if v.fitting and not s.fit_reported:
                s.fit_reported = True
                new.append(self._event(name, s, FITTING_ENDED, a.fit_end_index, _fit_detail(v)))
            if s.state != "none" and v.compression is not True:
                s.state = "none"
                detail = {**_compression_detail(v), "reason": "final_verdict_" + v.reason}
                new.append(self._event(name, s, COMPRESSION_RETRACTED, s.n - 1, detail))
        self.events += new
        return new

    # -- internals

    def _analyse(self, name: str) -> _Analysis:
        return _decide(*self._layers[name].series(), self.thresholds)

    def _event(self, name: str, s: _Layer, kind: str, index: int, detail: dict) -> PhaseEvent:
        return PhaseEvent(
            layer=name,
            kind=kind,
            epoch=_epoch_value(s.buf[0, index]),
            i_xt=float(s.buf[1, index]),
            i_ty=float(s.buf[2, index]),
            detected_epoch=_epoch_value(s.buf[0, s.n - 1]),
            detail=detail,
        )

    def _step(self, name: str, s: _Layer) -> list[PhaseEvent]:
        th = self.thresholds
        a = self._analyse(name)
        v = a.verdict
        out: list[PhaseEvent] = []
        last = s.n - 1
        if v.fitting and not s.fit_reported and last - a.fit_end_index >= th.min_after_peak:
            s.fit_reported = True
            out.append(self._event(name, s, FITTING_ENDED, a.fit_end_index, _fit_detail(v)))
        onset = None if v.onset_epoch is None else int(np.searchsorted(s.epochs, float(v.onset_epoch)))
        if s.state == "none" and v.reason in ("tentative", "compressed"):
            s.state, s.entry_threshold = "tentative", v.threshold_bits
            out.append(self._event(name, s, COMPRESSION_STARTED, onset, _compression_detail(v)))
        if s.state == "tentative" and v.compression is True:
            s.state = "confirmed"
            out.append(self._event(name, s, COMPRESSION_CONFIRMED, onset, _compression_detail(v)))
        if s.state != "none":
            reason = None
            if v.reason == "i_ty_dropped":
                reason = "i_ty_dropped"
            elif v.drop_bits < th.release_frac * min(s.entry_threshold, v.threshold_bits):
                reason = "recovered"
            if reason is not None:
                s.state = "none"
                detail = {**_compression_detail(v), "reason": reason}
                out.append(self._event(name, s, COMPRESSION_RETRACTED, last, detail))
        return out


def _check_records(records: list) -> None:
    for r in records:
        if not isinstance(r, LayerMI):
            raise TypeError(
                f"PhaseTracker takes LayerMI records (as InformationPlane.measure returns), "
                f"got {type(r).__name__}; convert dicts with LayerMI.from_dict"
            )


def _fit_detail(v: PhaseVerdict) -> dict[str, Any]:
    return {"fit_gain_bits": v.fit_gain_bits, "fit_i_xt_change": v.fit_i_xt_change}


def _compression_detail(v: PhaseVerdict) -> dict[str, Any]:
    return {
        "peak_epoch": v.peak_epoch,
        "peak_i_xt": v.peak_i_xt,
        "final_i_xt": v.final_i_xt,
        "drop_bits": v.drop_bits,
        "drop_rel": v.drop_rel,
        "threshold_bits": v.threshold_bits,
        "i_ty_change": v.i_ty_change,
        "i_ty_fall_bits": v.i_ty_fall_bits,
    }


# ---------------------------------------------------------------- files and text


def write_events(path: str | os.PathLike, events: Iterable[PhaseEvent]) -> None:
    """Atomically replace a phases.jsonl with `events` (e.g. a resumed tracker's `.events`).

    On resume this makes the file exactly the replayed history, whatever a
    crash left in it; later events are appended with `append_jsonl`.
    """
    write_jsonl(path, [e.to_dict() for e in events])


def read_events(path: str | os.PathLike) -> list[PhaseEvent]:
    """All events of a phases.jsonl file, in file order."""
    rows = read_jsonl(path)
    try:
        return [PhaseEvent.from_dict(r) for r in rows]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a phase-event log ({e})") from None


def format_verdicts(verdicts: Mapping[str, PhaseVerdict], markdown: bool = False) -> str:
    """Per-layer verdict table: plain text for a terminal, or Markdown for TensorBoard's text tab."""
    head = ["layer", "fitting", "fit end", "I(T;Y) gain", "compression", "onset",
            "peak I(X;T)", "final I(X;T)", "drop", "I(T;Y) change"]
    rows = []
    for name, v in verdicts.items():
        comp = {True: "yes", False: "no", None: "undecided"}[v.compression]
        rows.append([
            name, "yes" if v.fitting else "no", _fmt(v.fit_end_epoch), _fmt(v.fit_gain_bits),
            f"{comp} ({v.reason})", _fmt(v.onset_epoch), _fmt(v.peak_i_xt), _fmt(v.final_i_xt),
            _fmt(v.drop_bits), _fmt(v.i_ty_change, "+.3f"),
        ])
    return format_table(head, rows, markdown)
