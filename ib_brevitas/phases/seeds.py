"""Phase verdicts across the seeds of one configuration: counts, intervals, a test, means.

Each run's `mi.jsonl` is replayed through `PhaseTracker` (its events) and
decided by `detect` (its verdicts). Per layer across runs: the share of runs
with a fitting phase; the share with compression and its exact
(Clopper-Pearson) 95 % interval; median onset and drop; a one-sided Wilcoxon
signed-rank test that I(X;T) falls after the peak; mean +- s.d. of the start,
peak and final readings; and the verdict on the mean curve. Why these
statistics: docs/phases.md. scipy is imported only when a test is computed.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ib_brevitas.phases.detector import detect
from ib_brevitas.phases.series import running_median
from ib_brevitas.phases.tracker import PhaseTracker
from ib_brevitas.phases.types import PhaseEvent, PhaseVerdict, Thresholds, make_thresholds
from ib_brevitas.records import EXACT, LayerMI
from ib_brevitas.rundir import IDENTITY_KEYS, RunData, load_run

# config.json keys that must agree for runs to be "one configuration" (seed may differ)
CONFIG_KEYS = (*IDENTITY_KEYS, "epochs")
INTERVAL = "Clopper-Pearson exact 95% interval over runs with a decided verdict"
TEST = (
    "one-sided Wilcoxon signed-rank test (H1: I(X;T) falls) on each run's drop from the "
    "epoch where the other runs' mean smoothed I(X;T) peaks to the last common epoch"
)
READINGS = ("start", "peak", "final")  # of smoothed I(X;T) and I(T;Y), as in the verdicts


@dataclass(frozen=True)
class RunPhases:
    """One run's verdicts (layer order) and the events its tracker emitted."""

    run_dir: str
    config: dict | None
    verdicts: dict[str, PhaseVerdict]
    events: list[PhaseEvent]
    layer_index: dict[str, int]
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # epochs, i_xt, i_ty
    n_samples: dict[str, int]
    h_y: dict[str, float]  # the labels' entropy, which scales the I(T;Y) tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "config": self.config,
            "verdicts": {k: v.to_dict() for k, v in self.verdicts.items()},
            "events": [e.to_dict() for e in self.events],
        }


@dataclass(frozen=True)
class LayerSummary:
    """Cross-seed statistics of one layer (see module docstring); flat, so it is a CSV row."""

    layer: str
    label: str
    n_runs: int
    n_fitting: int
    n_fitting_not_observable: int
    frac_fitting: float
    n_saturated: int
    n_compression: int
    n_no_compression: int
    n_undecided: int
    frac_compression: float | None  # over decided runs
    ci_low: float | None
    ci_high: float | None
    median_onset_epoch: float | None  # over runs with compression
    median_drop_bits: float
    median_drop_rel: float
    median_signed_drop_bits: float | None  # the test's statistic
    test_n: int  # runs with a non-zero signed drop
    p_value: float | None  # one-sided Wilcoxon signed-rank
    p_sign: float | None  # one-sided sign test, for comparison
    per_run_compression: str  # e.g. "yes yes no", in run order
    i_xt_start_mean: float
    i_xt_start_sd: float
    i_xt_peak_mean: float
    i_xt_peak_sd: float
    i_xt_final_mean: float
    i_xt_final_sd: float
    i_ty_start_mean: float
    i_ty_start_sd: float
    i_ty_peak_mean: float
    i_ty_peak_sd: float
    i_ty_final_mean: float
    i_ty_final_sd: float
    mean_curve_fitting: bool | None  # the verdict on the mean curve over the shared epochs
    mean_curve_compression: bool | None
    mean_curve_reason: str | None
    mean_curve_onset_epoch: float | None
    mean_curve_drop_bits: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PhaseSummary:
    thresholds: Thresholds
    runs: list[RunPhases]
    layers: list[LayerSummary]
    mean_verdicts: dict[str, PhaseVerdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.to_dict(),
            "interval": INTERVAL,
            "test": TEST,
            "layers": [s.to_dict() for s in self.layers],
            "mean_curve_verdicts": {k: v.to_dict() for k, v in self.mean_verdicts.items()},
            "runs": [r.to_dict() for r in self.runs],
        }


# ---------------------------------------------------------------- one run


def analyse_run(run_dir: str | Path | RunData, events: bool = True, estimator: str = EXACT,
                **thresholds: float) -> RunPhases:
    """Verdicts (and, unless `events=False`, replayed tracker events) of one run's `estimator` series.

    Exact and binned series are never mixed: only records of that estimator are read.
    `run_dir` may be a loaded `RunData` (as `report` passes, once per estimator).
    """
    th = make_thresholds(thresholds)
    run = load_run(run_dir)
    run_dir = run.path
    mi = run_dir / "mi.jsonl"
    records, config = [r for r in run.records if r.estimator == estimator], run.config
    if not records:
        have = sorted({r.estimator for r in run.records})
        raise ValueError(f"{mi} holds no {estimator!r} records (it has {', '.join(have)}); "
                         f"pass --estimator with one of those")
    by_layer: dict[str, list[LayerMI]] = {}
    for r in records:
        by_layer.setdefault(r.layer, []).append(r)
    series, index, sizes, h_y = {}, {}, {}, {}
    for name, rs in by_layer.items():
        rs.sort(key=lambda r: r.epoch)
        ep = np.array([r.epoch for r in rs], dtype=float)
        dup = np.flatnonzero(np.diff(ep) == 0)
        if dup.size:
            raise ValueError(f"{mi}: layer {name!r} has two records for epoch {rs[dup[0]].epoch}; the log is corrupt")
        n = {r.n_samples for r in rs}
        if len(n) > 1:
            raise ValueError(f"{mi}: layer {name!r} was measured on probe sets of sizes {sorted(n)}; one run, one probe set")
        series[name] = (ep, np.array([r.i_xt for r in rs]), np.array([r.i_ty for r in rs]))
        index[name], sizes[name], h_y[name] = rs[0].layer_index, rs[0].n_samples, rs[0].h_y
    order = sorted(series, key=lambda k: (index[k], k))
    try:
        verdicts = {k: detect(*series[k], layer=k, n_samples=sizes[k], h_y=h_y[k], **th.to_dict()) for k in order}
    except ValueError as e:
        raise ValueError(f"{mi}: {e}") from None
    evs: list[PhaseEvent] = []
    if events:
        tracker = PhaseTracker.from_records(records, **th.to_dict())
        tracker.finish()
        evs = tracker.events
    return RunPhases(str(run_dir), config, verdicts, evs, index, series, sizes, h_y)


# ---------------------------------------------------------------- statistics


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials (coverage >= confidence)."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def _common_epochs(epochs: Sequence[np.ndarray]) -> np.ndarray:
    common = epochs[0]
    for ep in epochs[1:]:
        common = np.intersect1d(common, ep)
    return common


def signed_drops(curves: Sequence[tuple[np.ndarray, np.ndarray]], smooth: int) -> np.ndarray | None:
    """Each run's I(X;T) fall from a reference epoch chosen without that run.

    The reference is where the mean smoothed I(X;T) of the *other* runs peaks
    (on the epochs all runs share), so a run's own noise cannot pick its peak:
    without compression the drop is symmetric about 0, with it positive.
    None when fewer than two runs or three shared epochs.
    """
    if len(curves) < 2:
        return None
    common = _common_epochs([ep for ep, _ in curves])
    if len(common) < 3:
        return None
    smoothed = np.array([running_median(x, smooth)[np.searchsorted(ep, common)] for ep, x in curves])
    total = smoothed.sum(axis=0)
    drops = []
    for i, s in enumerate(smoothed):
        ref = int(np.argmax((total - s) / (len(curves) - 1)))
        drops.append(s[ref] - s[-1])
    return np.array(drops)


def positive_drop_tests(d: np.ndarray) -> tuple[float, float, int]:
    """One-sided p-values (Wilcoxon signed-rank, sign test) that drops are positive; zeros dropped."""
    from scipy.stats import binomtest, wilcoxon

    nz = d[d != 0]
    if len(nz) == 0:
        return 1.0, 1.0, 0
    p_w = float(wilcoxon(nz, alternative="greater").pvalue)
    p_s = float(binomtest(int((nz > 0).sum()), len(nz), 0.5, alternative="greater").pvalue)
    return p_w, p_s, len(nz)


def mean_curve_verdict(runs: Sequence[RunPhases], layer: str, th: Thresholds) -> PhaseVerdict | None:
    """`detect` on the runs' mean raw I(X;T) and I(T;Y) over the epochs they all share (None: < 1 shared)."""
    series = [r.series[layer] for r in runs]
    common = _common_epochs([ep for ep, _, _ in series])
    if not len(common):
        return None
    at = [np.searchsorted(ep, common) for ep, _, _ in series]
    x = np.mean([s[1][i] for s, i in zip(series, at)], axis=0)
    y = np.mean([s[2][i] for s, i in zip(series, at)], axis=0)
    sizes, h_ys = {r.n_samples[layer] for r in runs}, [r.h_y[layer] for r in runs]
    return detect(common, x, y, layer=layer, n_samples=sizes.pop() if len(sizes) == 1 else None,
                  h_y=min(h_ys), **th.to_dict())


def _median(values: Iterable[float]) -> float | None:
    v = [float(x) for x in values]
    return float(np.median(v)) if v else None


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize_layer(layer: str, runs: Sequence[RunPhases], th: Thresholds,
                    mv: PhaseVerdict | None = None) -> LayerSummary:
    """One layer's statistics over the runs that have it; `mv`: the verdict on their mean curve."""
    vs = [r.verdicts[layer] for r in runs]
    n = len(vs)
    yes = [v for v in vs if v.compression is True]
    n_no = sum(v.compression is False for v in vs)
    decided = len(yes) + n_no
    ci = clopper_pearson(len(yes), decided) if decided else (None, None)
    d = signed_drops([r.series[layer][:2] for r in runs], int(th.smooth))
    p_w = p_s = None
    test_n = 0
    if d is not None:
        p_w, p_s, test_n = positive_drop_tests(d)
    readings = {}
    for mi in ("i_xt", "i_ty"):
        for k in READINGS:
            readings[f"{mi}_{k}_mean"], readings[f"{mi}_{k}_sd"] = _mean_sd([getattr(v, f"{k}_{mi}") for v in vs])
    n_fit = sum(v.fitting is True for v in vs)
    return LayerSummary(
        layer=layer,
        label=f"T{runs[0].layer_index[layer] + 1}",
        n_runs=n,
        n_fitting=n_fit,
        n_fitting_not_observable=sum(v.fitting is None for v in vs),
        frac_fitting=n_fit / n,
        n_saturated=sum(v.saturated for v in vs),
        n_compression=len(yes),
        n_no_compression=n_no,
        n_undecided=n - decided,
        frac_compression=len(yes) / decided if decided else None,
        ci_low=ci[0],
        ci_high=ci[1],
        median_onset_epoch=_median(v.onset_epoch for v in yes),
        median_drop_bits=float(np.median([v.drop_bits for v in vs])),
        median_drop_rel=float(np.median([v.drop_rel for v in vs])),
        median_signed_drop_bits=None if d is None else float(np.median(d)),
        test_n=test_n,
        p_value=p_w,
        p_sign=p_s,
        per_run_compression=" ".join({True: "yes", False: "no", None: "?"}[v.compression] for v in vs),
        **readings,
        mean_curve_fitting=None if mv is None else mv.fitting,
        mean_curve_compression=None if mv is None else mv.compression,
        mean_curve_reason=None if mv is None else mv.reason,
        mean_curve_onset_epoch=None if mv is None else mv.onset_epoch,
        mean_curve_drop_bits=None if mv is None else mv.drop_bits,
    )


def summarize_runs(run_dirs: Sequence[str | Path | RunData], events: bool = True, estimator: str = EXACT,
                   **thresholds: float) -> PhaseSummary:
    """Verdicts of every run and per-layer statistics across them (runs of one configuration;
    directories or loaded `RunData`)."""
    th = make_thresholds(thresholds)
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [analyse_run(d, events=events, estimator=estimator, **th.to_dict()) for d in run_dirs]
    _warn_mixed_configs(runs)
    layers: dict[str, int] = {}
    for r in runs:
        for name, i in r.layer_index.items():
            layers.setdefault(name, i)
    summaries, means = [], {}
    for name in sorted(layers, key=lambda k: (layers[k], k)):
        have = [r for r in runs if name in r.verdicts]
        mv = mean_curve_verdict(have, name, th)
        summaries.append(summarize_layer(name, have, th, mv))
        if mv is not None:
            means[name] = mv
    return PhaseSummary(th, runs, summaries, means)


def _warn_mixed_configs(runs: Sequence[RunPhases]) -> None:
    cfgs = [r.config for r in runs if r.config is not None]
    for key in CONFIG_KEYS:
        values = {json.dumps(c.get(key), sort_keys=True) for c in cfgs}
        if len(values) > 1:
            warnings.warn(
                f"the runs differ in {key!r} ({', '.join(sorted(values))}); cross-seed statistics "
                "assume runs of one configuration", RuntimeWarning, stacklevel=3,
            )
