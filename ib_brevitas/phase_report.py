"""`ib-brevitas phases RUN_DIR...`: phase verdicts per layer, and how they hold up across seeds.

The statistics live in `ib_brevitas.phases.seeds` (re-exported here); this
module prints them (the verdict table, mean +- s.d. of the start, peak and
final readings with the mean curve's verdict beside the per-seed ones) and
writes --json / --csv. Why these statistics: docs/phases.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
import textwrap
import warnings
from pathlib import Path

from ib_brevitas.files import atomic_write, atomic_write_json
from ib_brevitas.formatting import fmt, format_table
from ib_brevitas.phases import Thresholds, format_verdicts
from ib_brevitas.phases.io import PEAK_NOTE
from ib_brevitas.phases.seeds import (  # noqa: F401  re-exported: the names this module always had
    CONFIG_KEYS,
    INTERVAL,
    TEST,
    LayerSummary,
    PhaseSummary,
    RunPhases,
    analyse_run,
    clopper_pearson,
    mean_curve_verdict,
    positive_drop_tests,
    signed_drops,
    summarize_layer,
    summarize_runs,
)

NOTES = textwrap.fill(
    "fitting: runs with a fitting phase (n/o: not observable, the layer injective at log2 N from the start). "
    "compression: runs with compression / runs decided (undecided ones apart), 95% CI: Clopper-Pearson exact. "
    "median onset: over compressing runs. median drop: peak - final smoothed I(X;T), bits. signed drop, p: "
    "I(X;T) fall from the epoch where the other runs peak, and the one-sided Wilcoxon signed-rank p-value "
    f"that it is > 0. Readings: mean +- s.d. over runs; {PEAK_NOTE}. mean curve: the verdict on the runs' "
    "mean I(X;T) and I(T;Y) over their shared epochs.", width=100)


def format_summary_table(summary: PhaseSummary) -> str:
    head = ["layer", "runs", "fitting", "saturated", "compression", "95% CI", "undecided",
            "median onset", "median drop", "signed drop", "p (Wilcoxon)"]
    rows = []
    for s in summary.layers:
        comp = "-" if s.frac_compression is None else f"{s.n_compression}/{s.n_compression + s.n_no_compression}"
        ci = "-" if s.ci_low is None else f"[{s.ci_low:.2f}, {s.ci_high:.2f}]"
        fit = f"{s.n_fitting}/{s.n_runs}" + (f" ({s.n_fitting_not_observable} n/o)" if s.n_fitting_not_observable else "")
        rows.append([
            _name(s), str(s.n_runs), fit, f"{s.n_saturated}/{s.n_runs}", comp, ci, str(s.n_undecided),
            fmt(s.median_onset_epoch, "g"), fmt(s.median_drop_bits, ".3f"),
            fmt(s.median_signed_drop_bits, "+.3f"), fmt(s.p_value, ".3g"),
        ])
    return format_table(head, rows)


def format_readings_table(summary: PhaseSummary) -> str:
    """Mean +- s.d. over runs of start / peak / final I(X;T) and I(T;Y), and the mean curve's verdict."""
    head = ["layer", "I(X;T) start", "peak", "final", "I(T;Y) start", "peak", "final",
            "compression per run", "mean curve", "onset", "drop"]
    rows = []
    for s in summary.layers:
        cells = [f"{getattr(s, f'{mi}_{k}_mean'):.3f} +- {getattr(s, f'{mi}_{k}_sd'):.3f}"
                 for mi in ("i_xt", "i_ty") for k in ("start", "peak", "final")]
        mean = "-" if s.mean_curve_reason is None else (
            f"{ {True: 'yes', False: 'no', None: 'undecided'}[s.mean_curve_compression]} ({s.mean_curve_reason})")
        rows.append([_name(s), *cells, s.per_run_compression, mean,
                     fmt(s.mean_curve_onset_epoch, "g"), fmt(s.mean_curve_drop_bits, ".3f")])
    return format_table(head, rows)


def _name(s: LayerSummary) -> str:
    return f"{s.label} {s.layer}" if s.label != s.layer else s.layer


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
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write thresholds, per-layer statistics, mean-curve and per-run verdicts, events")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write the per-layer statistics")
    p.add_argument("--per-run", action="store_true", help="also print every run's verdict table and events")
    p.add_argument("--no-events", action="store_true", help="skip replaying the online tracker (faster on long runs)")
    p.add_argument("--estimator", default="exact", metavar="LABEL",
                   help="which series to decide: 'exact' (default) or a binning estimator's label, "
                        "e.g. binning-uniform-30-global; exact and binned series are never mixed")
    add_threshold_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            summary = summarize_runs(args.run_dirs, events=not args.no_events, estimator=args.estimator,
                                     **thresholds_from_args(args))
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
                when = "provisional, known at" if e.provisional else "final, at"
                print(f"  epoch {e.epoch} ({when} {e.detected_epoch}): {e.layer} {e.kind.replace('_', ' ')}", file=out)
            print(file=out)
    n_events = sum(len(r.events) for r in summary.runs)
    print(f"{len(summary.runs)} run(s)" + ("" if args.no_events else f", {n_events} phase event(s)"), file=out)
    print(format_summary_table(summary), file=out)
    print(file=out)
    print(format_readings_table(summary), file=out)
    print(NOTES, file=out)
    if args.json:
        write_json(summary, args.json)
        print(f"wrote {args.json}", file=out)
    if args.csv:
        write_csv(summary, args.csv)
        print(f"wrote {args.csv}", file=out)
    return 0
