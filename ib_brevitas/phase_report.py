"""`ib-brevitas phases RUN_DIR...`: phase verdicts per layer, and how they hold up across seeds.

Each run's `mi.jsonl` is replayed through `PhaseTracker` (its events) and
decided by `detect` (its verdicts). Across runs of one configuration, per
layer: the share of runs with a fitting phase; the share with compression and
its exact (Clopper-Pearson) 95 % interval; median onset and drop; and a
one-sided Wilcoxon signed-rank test that I(X;T) falls after the peak. Why these
statistics: docs/phases.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ib_brevitas.phases import (
    PhaseEvent,
    PhaseTracker,
    PhaseVerdict,
    Thresholds,
    detect,
    format_verdicts,
    running_median,
    make_thresholds,
)
from ib_brevitas.files import atomic_write, atomic_write_json
from ib_brevitas.formatting import fmt, format_table
from ib_brevitas.records import LayerMI
from ib_brevitas.rundir import IDENTITY_KEYS, RunDir

# config.json keys that must agree for runs to be "one configuration" (seed may differ)
CONFIG_KEYS = (*IDENTITY_KEYS, "epochs")
INTERVAL = "Clopper-Pearson exact 95% interval over runs with a decided verdict"
TEST = (
    "one-sided Wilcoxon signed-rank test (H1: I(X;T) falls) on each run's drop from the "
    "epoch where the other runs' mean smoothed I(X;T) peaks to the last common epoch"
)


NOTES = """\
fitting: runs with a fitting phase. compression: runs with compression / runs decided
(undecided ones apart), 95% CI: Clopper-Pearson exact. median onset: over compressing runs.
median drop: peak - final smoothed I(X;T), bits. signed drop, p: I(X;T) fall from the epoch
where the other runs peak, and the one-sided Wilcoxon signed-rank p-value that it is > 0."""


@dataclass(frozen=True)
class RunPhases:
    """One run's verdicts (layer order) and the events its tracker emitted."""

    run_dir: str
    config: dict | None
    verdicts: dict[str, PhaseVerdict]
    events: list[PhaseEvent]
    layer_index: dict[str, int]
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # epochs, i_xt, i_ty

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "config": self.config,
            "verdicts": {k: v.to_dict() for k, v in self.verdicts.items()},
            "events": [e.to_dict() for e in self.events],
        }


@dataclass(frozen=True)
class LayerSummary:
    """Cross-seed statistics of one layer (see module docstring)."""

    layer: str
    label: str
    n_runs: int
    n_fitting: int
    frac_fitting: float
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PhaseSummary:
    thresholds: Thresholds
    runs: list[RunPhases]
    layers: list[LayerSummary]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.to_dict(),
            "interval": INTERVAL,
            "test": TEST,
            "layers": [s.to_dict() for s in self.layers],
            "runs": [r.to_dict() for r in self.runs],
        }


# ---------------------------------------------------------------- one run


def analyse_run(run_dir: str | Path, events: bool = True, **thresholds: float) -> RunPhases:
    """Verdicts (and, unless `events=False`, replayed tracker events) of one run."""
    th = make_thresholds(thresholds)
    run = RunDir(run_dir).load()
    records, config = run.records, run.config
    mi = Path(run_dir) / "mi.jsonl"
    by_layer: dict[str, list[LayerMI]] = {}
    for r in records:
        by_layer.setdefault(r.layer, []).append(r)
    series, index = {}, {}
    for name, rs in by_layer.items():
        rs.sort(key=lambda r: r.epoch)
        ep = np.array([r.epoch for r in rs], dtype=float)
        dup = np.flatnonzero(np.diff(ep) == 0)
        if dup.size:
            raise ValueError(f"{mi}: layer {name!r} has two records for epoch {rs[dup[0]].epoch}; the log is corrupt")
        series[name] = (ep, np.array([r.i_xt for r in rs]), np.array([r.i_ty for r in rs]))
        index[name] = rs[0].layer_index
    order = sorted(series, key=lambda k: (index[k], k))
    try:
        verdicts = {k: detect(*series[k], layer=k, **th.to_dict()) for k in order}
    except ValueError as e:
        raise ValueError(f"{mi}: {e}") from None
    evs: list[PhaseEvent] = []
    if events:
        tracker = PhaseTracker.from_records(records, **th.to_dict())
        tracker.finish()
        evs = tracker.events
    return RunPhases(str(run_dir), config, verdicts, evs, index, series)


# ---------------------------------------------------------------- statistics


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials (coverage >= confidence)."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def signed_drops(curves: Sequence[tuple[np.ndarray, np.ndarray]], smooth: int) -> np.ndarray | None:
    """Each run's I(X;T) fall from a reference epoch chosen without that run.

    The reference is where the mean smoothed I(X;T) of the *other* runs peaks
    (on the epochs all runs share), so a run's own noise cannot pick its peak:
    without compression the drop is symmetric about 0, with it positive.
    None when fewer than two runs or three shared epochs.
    """
    if len(curves) < 2:
        return None
    common = curves[0][0]
    for ep, _ in curves[1:]:
        common = np.intersect1d(common, ep)
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


def _median(values: Iterable[float]) -> float | None:
    v = [float(x) for x in values]
    return float(np.median(v)) if v else None


def summarize_layer(layer: str, runs: Sequence[RunPhases], smooth: int) -> LayerSummary:
    vs = [r.verdicts[layer] for r in runs]
    n = len(vs)
    yes = [v for v in vs if v.compression is True]
    n_no = sum(v.compression is False for v in vs)
    decided = len(yes) + n_no
    ci = clopper_pearson(len(yes), decided) if decided else (None, None)
    d = signed_drops([r.series[layer][:2] for r in runs], smooth)
    p_w = p_s = None
    test_n = 0
    if d is not None:
        p_w, p_s, test_n = positive_drop_tests(d)
    return LayerSummary(
        layer=layer,
        label=f"T{runs[0].layer_index[layer] + 1}",
        n_runs=n,
        n_fitting=sum(v.fitting for v in vs),
        frac_fitting=sum(v.fitting for v in vs) / n,
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
    )


def summarize_runs(run_dirs: Sequence[str | Path], events: bool = True, **thresholds: float) -> PhaseSummary:
    """Verdicts of every run and per-layer statistics across them (runs of one configuration)."""
    th = make_thresholds(thresholds)
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [analyse_run(d, events=events, **th.to_dict()) for d in run_dirs]
    _warn_mixed_configs(runs)
    layers: dict[str, int] = {}
    for r in runs:
        for name, i in r.layer_index.items():
            layers.setdefault(name, i)
    summaries = []
    for name in sorted(layers, key=lambda k: (layers[k], k)):
        have = [r for r in runs if name in r.verdicts]
        summaries.append(summarize_layer(name, have, int(th.smooth)))
    return PhaseSummary(th, runs, summaries)


def _warn_mixed_configs(runs: Sequence[RunPhases]) -> None:
    cfgs = [r.config for r in runs if r.config is not None]
    for key in CONFIG_KEYS:
        values = {json.dumps(c.get(key), sort_keys=True) for c in cfgs}
        if len(values) > 1:
            warnings.warn(
                f"the runs differ in {key!r} ({', '.join(sorted(values))}); cross-seed statistics "
                "assume runs of one configuration", RuntimeWarning, stacklevel=3,
            )


# ---------------------------------------------------------------- output


def format_summary_table(summary: PhaseSummary) -> str:
    head = ["layer", "runs", "fitting", "compression", "95% CI", "undecided",
            "median onset", "median drop", "signed drop", "p (Wilcoxon)"]
    rows = []
    for s in summary.layers:
        comp = "-" if s.frac_compression is None else f"{s.n_compression}/{s.n_compression + s.n_no_compression}"
        ci = "-" if s.ci_low is None else f"[{s.ci_low:.2f}, {s.ci_high:.2f}]"
        rows.append([
            f"{s.label} {s.layer}" if s.label != s.layer else s.layer, str(s.n_runs),
            f"{s.n_fitting}/{s.n_runs}", comp, ci, str(s.n_undecided),
            fmt(s.median_onset_epoch, "g"), fmt(s.median_drop_bits, ".3f"),
            fmt(s.median_signed_drop_bits, "+.3f"), fmt(s.p_value, ".3g"),
        ])
    return format_table(head, rows)


def write_csv(summary: PhaseSummary, path: str | Path) -> None:
    fields = [f.name for f in dataclasses.fields(LayerSummary)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for s in summary.layers:
        w.writerow({k: ("" if v is None else v) for k, v in s.to_dict().items()})
    atomic_write(path, buf.getvalue())


def write_json(summary: PhaseSummary, path: str | Path) -> None:
    atomic_write_json(path, summary.to_dict())


# ---------------------------------------------------------------- CLI


def add_threshold_arguments(p: argparse.ArgumentParser) -> None:
    """One `--flag` per `Thresholds` field (e.g. --min-drop-bits); unset flags keep the defaults."""
    g = p.add_argument_group("phase thresholds (docs/phases.md)")
    for f in dataclasses.fields(Thresholds):
        g.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=None,
            metavar="N" if isinstance(f.default, int) else "X",
            help=f"{f.metadata['help']} (default: {f.default})",
        )


def thresholds_from_args(args: argparse.Namespace) -> dict[str, float]:
    """The threshold flags the user set, as keyword arguments for detect/PhaseTracker."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Thresholds)
            if getattr(args, f.name, None) is not None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (one configuration, several seeds)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write thresholds, per-layer statistics, per-run verdicts and events")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write the per-layer statistics")
    p.add_argument("--per-run", action="store_true", help="also print every run's verdict table and events")
    p.add_argument("--no-events", action="store_true", help="skip replaying the online tracker (faster on long runs)")
    add_threshold_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            summary = summarize_runs(args.run_dirs, events=not args.no_events, **thresholds_from_args(args))
    except (ValueError, TypeError) as e:
        print(f"ib-brevitas phases: error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"ib-brevitas phases: warning: {w.message}", file=sys.stderr)
    out = sys.stdout
    if args.per_run:
        for r in summary.runs:
            print(f"== {r.run_dir}", file=out)
            print(format_verdicts(r.verdicts), file=out)
            for e in r.events:
                print(f"  epoch {e.epoch} (known at {e.detected_epoch}): {e.layer} {e.kind.replace('_', ' ')}", file=out)
            print(file=out)
    n_events = sum(len(r.events) for r in summary.runs)
    print(f"{len(summary.runs)} run(s)" + ("" if args.no_events else f", {n_events} phase event(s)"), file=out)
    print(format_summary_table(summary), file=out)
    print(NOTES, file=out)
    if args.json:
        write_json(summary, args.json)
        print(f"wrote {args.json}", file=out)
    if args.csv:
        write_csv(summary, args.csv)
        print(f"wrote {args.csv}", file=out)
    return 0
