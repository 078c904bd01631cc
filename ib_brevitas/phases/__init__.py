"""Fitting and compression phases of information-plane trajectories, offline and online.

`detect` decides one layer's series; `PhaseTracker` is fed every measurement
during training, emits `PhaseEvent`s with hysteresis, and its verdicts are
`detect` on the series seen so far; `run_summary` is the end-of-run table.
The package is split by concern: `types` (thresholds, verdicts, events),
`series` (smoothing, noise, knee, saturation), `detector`, `tracker`, `io`
(files and text). Definitions, defaults and the data behind them:
docs/phases.md.

Only numpy and the standard library are imported (the TensorBoard plugin may
import this package).
"""

from ib_brevitas.phases.detector import detect
from ib_brevitas.phases.io import format_verdicts, read_events, run_summary, shown_events, write_events
from ib_brevitas.phases.series import hinge_breakpoint, noise_sigma, running_median
from ib_brevitas.phases.tracker import PhaseTracker, verdict_events
from ib_brevitas.phases.types import (
    COMPRESSION_CONFIRMED,
    COMPRESSION_RETRACTED,
    COMPRESSION_STARTED,
    EVENT_KINDS,
    FITTING_ENDED,
    PHASES_FILE,
    REASONS,
    THRESHOLD_NAMES,
    Episode,
    PhaseEvent,
    PhaseVerdict,
    Thresholds,
    make_thresholds,
)

__all__ = [
    "COMPRESSION_CONFIRMED", "COMPRESSION_RETRACTED", "COMPRESSION_STARTED", "EVENT_KINDS", "FITTING_ENDED",
    "PHASES_FILE", "REASONS", "THRESHOLD_NAMES", "Episode", "PhaseEvent", "PhaseTracker", "PhaseVerdict",
    "Thresholds", "detect", "format_verdicts", "hinge_breakpoint", "make_thresholds", "noise_sigma",
    "read_events", "run_summary", "running_median", "shown_events", "verdict_events", "write_events",
]
