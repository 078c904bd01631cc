"""The phase detector's value types: thresholds, verdicts, compression episodes, events.

Everything here is plain data that round-trips through JSON (`to_dict` /
`from_dict`), so run directories, TensorBoard and checkpoints can carry it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ib_brevitas.records import dataclass_from_dict

PHASES_FILE = "phases.jsonl"  # the events' file, beside mi.jsonl in a run directory

FITTING_ENDED = "fitting_ended"
COMPRESSION_STARTED = "compression_started"
COMPRESSION_CONFIRMED = "compression_confirmed"
COMPRESSION_RETRACTED = "compression_retracted"
EVENT_KINDS = (FITTING_ENDED, COMPRESSION_STARTED, COMPRESSION_CONFIRMED, COMPRESSION_RETRACTED)

# Why a verdict's `compression` is what it is.
REASONS = {
    "compressed": "I(X;T) fell from its global peak by at least the threshold and stayed down",
    "tentative": "I(X;T) fell by the threshold but not yet for min_sustain measurements",
    "i_ty_dropped": "I(X;T) fell, but I(T;Y) fell by more than the tolerance during the fall",
    "recovered": "I(X;T) fell by the threshold, but came back to within it of its peak",
    "no_drop": "I(X;T) did not fall from its peak by the threshold",
    "saturated": "I(X;T) stays at log2 N: the layer is injective on the probe set all run",
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
    max_ty_drop_rel: float = _knob(0.05, "or this share of H(Y), if larger (10 classes: 0.17 bit)")
    min_gain_bits: float = _knob(0.05, "fitting: least rise of I(T;Y), bits")
    fit_end_frac: float = _knob(0.95, "fitting ends when I(T;Y) has made this share of its gain")
    peak_tol_frac: float = _knob(0.02, "'at the peak' = within this share of the rise")
    min_sustain: int = _knob(5, "compression needs this many measurements down")
    min_after_peak: int = _knob(10, "fewer measurements after the peak (or in all): undecided")
    release_frac: float = _knob(0.5, "events: retract when the fall shrinks below this x threshold")
    min_dwell: int = _knob(3, "events: a start or retraction needs its condition this many measurements in a row")
    saturation_tol_bits: float = _knob(0.01, "saturated: I(X;T) within this of log2 N, bits")
    saturated_frac: float = _knob(0.95, "a layer is saturated when this share of its measurements is")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"threshold {f.name} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"threshold {f.name} must be >= 0, got {v!r}")
        for name in ("smooth", "min_sustain", "min_after_peak", "min_dwell"):
            v = getattr(self, name)
            if v != int(v):
                raise ValueError(f"threshold {name} counts measurements: give an integer, not {v!r}")
        if int(self.smooth) < 1 or int(self.smooth) % 2 == 0:
            raise ValueError(f"threshold smooth must be an odd window >= 1, got {self.smooth!r}")
        for name in ("min_sustain", "min_dwell"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"threshold {name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.fit_end_frac <= 1:
            raise ValueError(f"threshold fit_end_frac must lie in (0, 1], got {self.fit_end_frac!r}")
        for name in ("release_frac", "saturated_frac"):
            if getattr(self, name) > 1:
                raise ValueError(f"threshold {name} must lie in [0, 1], got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


THRESHOLD_NAMES = tuple(f.name for f in dataclasses.fields(Thresholds))


def make_thresholds(kw: Mapping[str, Any]) -> Thresholds:
    """`Thresholds` from keyword arguments; an unknown name is a TypeError listing the known ones."""
    unknown = sorted(set(kw) - set(THRESHOLD_NAMES))
    if unknown:
        raise TypeError(f"unknown phase thresholds {unknown}; known: {', '.join(THRESHOLD_NAMES)}")
    return Thresholds(**kw)


@dataclass(frozen=True)
class Episode:
    """One fall of smoothed I(X;T) by at least the threshold from a local top.

    `start_epoch` is the fall's onset (the knee), `end_epoch` its trough (the
    lowest point before I(X;T) rose again by the threshold), or the last
    epoch when `recovered` is False (the fall lasts to the end of the series;
    its depth is then top - final, as a verdict's drop).
    """

    start_epoch: int | float
    end_epoch: int | float
    top_i_xt: float
    bottom_i_xt: float
    depth_bits: float
    recovered: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PhaseVerdict:
    """One layer's phases. I(X;T) values are of the smoothed series, in bits.

    `peak_i_xt` is the global maximum of smoothed I(X;T); `peak_epoch` is when
    I(X;T) reached it (the first epoch within the peak tolerance of it, so
    noise on a plateau does not move it);
    `drop_bits` = peak - final. `start_*`, `peak_*`, `final_*` of I(X;T) and
    I(T;Y) are the first value, global maximum and last value of the smoothed
    series (the start is the first measurement itself). `onset_epoch` is the knee of the first fall by
    the threshold from that peak; `episodes` lists every such fall of the run.
    `fitting` is True, False, or None ("not observable": the layer was
    injective on the probe set at the start or all run, so I(T;Y) = H(Y)
    could not rise). `compression` is True, False, or None (undecided;
    `reason` says why). Over the stretch from the onset (else the peak) to the
    end, `i_ty_change` is the net change of smoothed I(T;Y) and
    `i_ty_fall_bits` its largest fall, allowed up to `ty_tolerance_bits`
    (the largest of `max_ty_drop_bits`, `max_ty_drop_rel` x H(Y) and the noise).
    Epochs are those of the input series.
    """

    fitting: bool | None
    compression: bool | None
    reason: str
    saturated: bool
    saturated_frac: float
    log2_n: float | None
    n_measurements: int
    first_epoch: int | float
    last_epoch: int | float
    fit_end_epoch: int | float | None
    fit_gain_bits: float
    fit_i_xt_change: float | None
    start_i_xt: float
    start_i_ty: float
    peak_i_ty: float
    final_i_ty: float
    peak_epoch: int | float
    peak_i_xt: float
    final_i_xt: float
    drop_bits: float
    drop_rel: float
    threshold_bits: float
    onset_epoch: int | float | None
    episodes: tuple[Episode, ...]
    i_ty_change: float
    i_ty_fall_bits: float
    noise_i_xt: float
    noise_i_ty: float
    ty_tolerance_bits: float | None = None  # the most I(T;Y) could fall and still be compression

    @property
    def fitting_text(self) -> str:
        return {True: "yes", False: "no", None: "not observable"}[self.fitting]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["episodes"] = [dataclasses.asdict(e) for e in self.episodes]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseVerdict":
        v = dataclass_from_dict(cls, d)
        try:
            episodes = tuple(dataclass_from_dict(Episode, e) for e in v.episodes)
        except TypeError as e:
            raise ValueError(f"{dict(d)!r}: episodes are not a list of episodes ({e})") from None
        return dataclasses.replace(v, episodes=episodes)


@dataclass(frozen=True)
class PhaseEvent:
    """A phase change as it became known during training, or as the final verdict has it.

    `epoch` is the epoch the event refers to (fitting end, compression onset,
    or the retracting measurement) and `i_xt`, `i_ty` are the raw measured
    values there, so a UI can mark that point of the trajectory;
    `detected_epoch` is the measurement at which the event was decided.
    `provisional` events come from the series seen so far (their epochs may
    move later); the tracker's `finish()` adds the final ones, whose epochs
    are the final verdict's. `detail` holds the numbers behind it (plus
    `reason` on retractions).
    """

    layer: str
    kind: str
    epoch: int | float
    i_xt: float
    i_ty: float
    detected_epoch: int | float
    detail: Mapping[str, Any] = field(default_factory=dict)
    provisional: bool = False

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
