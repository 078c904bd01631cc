"""The streaming tracker: feed it every measurement, get typed `PhaseEvent`s that do not flap.

Its verdicts are exactly `detect` on each layer's series so far. Live events
are provisional (`provisional=True`, the epochs as known then); `finish()`
adds the final ones, built from the final verdicts by `verdict_events`, so a
run's last word per layer is the offline verdict. State and bound on the
number of events: docs/phases.md.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping

import numpy as np

from ib_brevitas.phases.detector import Analysis, check_h_y, decide, log2_n
from ib_brevitas.phases.series import epoch_value, window_at
from ib_brevitas.phases.types import (
    COMPRESSION_CONFIRMED,
    COMPRESSION_RETRACTED,
    COMPRESSION_STARTED,
    FITTING_ENDED,
    PhaseEvent,
    PhaseVerdict,
    make_thresholds,
)
from ib_brevitas.records import LayerMI

_STATE_VERSION = 1


class _Layer:
    """One layer's series (raw and smoothed) in growing buffers, plus its event state.

    Appending a point changes only the running medians whose window holds it,
    so those are recomputed and the rest kept: each update costs O(window)
    for smoothing instead of O(n), with values identical to `running_median`.
    """

    def __init__(self, index: int, window: int, n_samples: int | None, h_y: float | None = None) -> None:
        self.index, self.window, self.n_samples, self.n = index, window, n_samples, 0
        self.h_y = h_y
        self.buf = np.empty((5, 64))  # epochs, i_xt, i_ty, smoothed i_xt, smoothed i_ty
        self.state = "none"  # none | started | confirmed
        self.entry_threshold = 0.0  # the threshold when compression started (fixes the release level)
        self.fit_reported = False
        self.streak = 0  # measurements in a row the pending state change has held
        self.finished_n = 0  # measurements seen at the last finish(): no new final events without new data

    def append(self, epoch: float, i_xt: float, i_ty: float) -> None:
        if self.n == self.buf.shape[1]:
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)], axis=1)
        n, h = self.n + 1, self.window // 2
        self.buf[:3, n - 1] = epoch, i_xt, i_ty
        lo = max(0, n - 1 - h)  # first index whose window holds the new point
        start = max(0, lo - h)
        for raw, smooth in ((1, 3), (2, 4)):
            tail = self.buf[raw, start:n].tolist()
            self.buf[smooth, lo:n] = [statistics.median(window_at(tail, i - start, h)) for i in range(lo, n)]
        self.n = n

    def series(self) -> tuple[np.ndarray, ...]:
        return tuple(self.buf[:, : self.n])

    @property
    def epochs(self) -> np.ndarray:
        return self.buf[0, : self.n]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "n_samples": self.n_samples, "h_y": self.h_y, "epochs": self.buf[0, : self.n].tolist(),
                "i_xt": self.buf[1, : self.n].tolist(), "i_ty": self.buf[2, : self.n].tolist(),
                "state": self.state, "entry_threshold": self.entry_threshold,
                "fit_reported": self.fit_reported, "streak": self.streak, "finished_n": self.finished_n}


class PhaseTracker:
    """Streaming phase detector: feed it every measurement's records, all layers.

    `update` returns the events that measurement triggered (provisional).
    Compression is "started" once I(X;T) has been down by the threshold from
    its global peak for `min_dwell` measurements in a row, "confirmed" when
    `detect` says compression, and "retracted" only when, for `min_dwell`
    measurements in a row, the fall has shrunk below `release_frac` x the
    threshold or I(T;Y) has dropped (hysteresis and dwell: noise about the
    threshold cannot make events flap). `verdicts()` is exactly `detect` on
    each layer's series so far. Call `finish()` once at the end of training:
    it adds the final events (`verdict_events` of the final verdicts).
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

    # -- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Everything the tracker knows, as plain JSON-able data (for a checkpoint)."""
        return {"version": _STATE_VERSION, "thresholds": self.thresholds.to_dict(),
                "events": [e.to_dict() for e in self.events],
                "layers": {name: s.to_dict() for name, s in self._layers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output; the tracker then continues exactly where that one was."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a PhaseTracker state of version {_STATE_VERSION} "
                             f"(got version {state.get('version') if isinstance(state, Mapping) else state!r})")
        try:
            fresh = PhaseTracker(**state["thresholds"])
            for name, d in state["layers"].items():
                s = fresh._layers[name] = _Layer(int(d["index"]), int(fresh.thresholds.smooth), d["n_samples"],
                                                 check_h_y(d.get("h_y"), name))
                for point in zip(d["epochs"], d["i_xt"], d["i_ty"], strict=True):
                    s.append(*map(float, point))
                if d["state"] not in ("none", "started", "confirmed"):
                    raise ValueError(f"layer {name!r} has event state {d['state']!r}")
                s.state, s.entry_threshold = d["state"], float(d["entry_threshold"])
                s.fit_reported, s.streak = bool(d["fit_reported"]), int(d["streak"])
                s.finished_n = int(d.get("finished_n", 0))
            fresh.events = [PhaseEvent.from_dict(e) for e in state["events"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a valid PhaseTracker state ({type(e).__name__}: {e}); "
                             "rebuild the tracker with PhaseTracker.from_records instead") from None
        self.__dict__.update(fresh.__dict__)

    # -- feeding

    @property
    def layers(self) -> list[str]:
        return sorted(self._layers, key=lambda k: self._layers[k].index)

    def update(self, records: Iterable[LayerMI]) -> list[PhaseEvent]:
        """Add one measurement (records of any number of layers) and return new events."""
        records = list(records)
        _check_records(records)
        records.sort(key=lambda r: r.epoch)
        last = {name: float(s.epochs[-1]) for name, s in self._layers.items() if s.n}
        sizes = {name: s.n_samples for name, s in self._layers.items()}
        for r in records:  # check everything first: a bad record leaves the tracker as it was
            if r.layer in last and not r.epoch > last[r.layer]:
                raise ValueError(
                    f"layer {r.layer!r}: epoch {r.epoch} is not after its last measured epoch "
                    f"{epoch_value(last[r.layer])}; feed each measurement once and in order "
                    "(on resume rebuild the tracker with PhaseTracker.from_records)"
                )
            for name in ("i_xt", "i_ty"):
                v = getattr(r, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"layer {r.layer!r} at epoch {r.epoch}: {name} is {v!r}, not a finite number")
            log2_n(r.n_samples, r.layer)
            check_h_y(r.h_y, r.layer)
            if sizes.setdefault(r.layer, r.n_samples) != r.n_samples:
                raise ValueError(f"layer {r.layer!r} at epoch {r.epoch}: n_samples {r.n_samples} differs from the "
                                 f"{sizes[r.layer]} measured before; one tracker follows one probe set")
            last[r.layer] = r.epoch
        for r in records:
            s = self._layers.get(r.layer)
            if s is None:
                s = self._layers[r.layer] = _Layer(int(r.layer_index), int(self.thresholds.smooth), r.n_samples,
                                                   float(r.h_y))
            elif s.h_y is None:  # restored from a state of a version that did not keep H(Y)
                s.h_y = float(r.h_y)
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
        """End of training: retract what the final verdicts do not hold, then add the final events.

        Calling it again without new measurements adds nothing.
        """
        new: list[PhaseEvent] = []
        for name in self.layers:
            s = self._layers[name]
            if s.finished_n == s.n:
                continue
            s.finished_n = s.n
            a = self._analyse(name)
            if s.state != "none" and a.verdict.compression is not True:
                s.state = "none"
                detail = {**_compression_detail(a.verdict), "reason": "final_verdict_" + a.verdict.reason}
                new.append(_event(name, s, COMPRESSION_RETRACTED, s.n - 1, detail, provisional=False))
            new += verdict_events(name, a, s.series())
        self.events += new
        return new

    # -- internals

    def _analyse(self, name: str) -> Analysis:
        s = self._layers[name]
        return decide(*s.series(), self.thresholds, log2_n(s.n_samples), s.h_y)

    def _step(self, name: str, s: _Layer) -> list[PhaseEvent]:
        th = self.thresholds
        a = self._analyse(name)
        v = a.verdict
        out: list[PhaseEvent] = []
        last = s.n - 1
        if v.fitting and not s.fit_reported and last - a.fit_end_index >= th.min_after_peak:
            s.fit_reported = True
            out.append(_event(name, s, FITTING_ENDED, a.fit_end_index, _fit_detail(v), provisional=True))
        was = s.state
        if s.state == "none":
            s.streak = s.streak + 1 if v.reason in ("tentative", "compressed") else 0
            if s.streak >= th.min_dwell:
                s.state, s.entry_threshold, s.streak = "started", v.threshold_bits, 0
                out.append(_event(name, s, COMPRESSION_STARTED, a.onset_index, _compression_detail(v), True))
        if s.state == "started" and v.compression is True:
            s.state = "confirmed"
            out.append(_event(name, s, COMPRESSION_CONFIRMED, a.onset_index, _compression_detail(v), True))
        if was != "none":  # a compression started before this measurement: may it end?
            reason = None
            if v.reason == "i_ty_dropped":
                reason = "i_ty_dropped"
            elif v.drop_bits < th.release_frac * min(s.entry_threshold, v.threshold_bits):
                reason = "recovered"
            s.streak = s.streak + 1 if reason else 0
            if s.streak >= th.min_dwell:
                s.state, s.streak = "none", 0
                detail = {**_compression_detail(v), "reason": reason}
                out.append(_event(name, s, COMPRESSION_RETRACTED, last, detail, provisional=True))
        return out


def verdict_events(layer: str, analysis: Analysis, series: tuple[np.ndarray, ...]) -> list[PhaseEvent]:
    """The final (non-provisional) events of a verdict: its fitting end and its compression onset.

    `series` is (epochs, i_xt, i_ty, ...) of the analysed layer; each event marks
    the measured point at the verdict's epoch and is dated at the last one.
    """
    v, (e, x, y) = analysis.verdict, series[:3]
    out = []
    for kind, index, detail in ((FITTING_ENDED, analysis.fit_end_index, _fit_detail(v)),
                                (COMPRESSION_CONFIRMED, analysis.onset_index, _compression_detail(v))):
        if index is not None and (kind == FITTING_ENDED or v.compression is True):
            out.append(PhaseEvent(layer=layer, kind=kind, epoch=epoch_value(e[index]), i_xt=float(x[index]),
                                  i_ty=float(y[index]), detected_epoch=epoch_value(e[-1]), detail=detail,
                                  provisional=False))
    return out


def _event(name: str, s: _Layer, kind: str, index: int, detail: dict, provisional: bool) -> PhaseEvent:
    return PhaseEvent(
        layer=name, kind=kind, epoch=epoch_value(s.buf[0, index]), i_xt=float(s.buf[1, index]),
        i_ty=float(s.buf[2, index]), detected_epoch=epoch_value(s.buf[0, s.n - 1]), detail=detail,
        provisional=provisional,
    )


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
        "episodes": [ep.to_dict() for ep in v.episodes],
    }
