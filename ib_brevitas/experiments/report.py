"""`ib-brevitas report SWEEP_DIR [-o DIR]`: a sweep's results as one Markdown page with figures.

Per configuration: the information plane mean +- s.d. over seeds with I(X;T)
and I(T;Y) against epoch (`plots.plot_runs(mean=True)`, as `plot --mean`),
every seed's trajectory per layer coloured by epoch, train/test accuracy, and
the verdict table per layer (`phases.seeds.summarize_runs`: share of seeds
fitting and compressing with exact 95 % intervals, median onset and drop, the
one-sided Wilcoxon test, saturation at log2 N); then the sweep's run time and
seeds/hour from its manifest's sessions. Figures are PNG (in the page) and PDF.
Works on an unfinished sweep: it reports the runs measured so far and says so.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from ib_brevitas.experiments.sweep_plan import UsageError, read_manifest
from ib_brevitas.files import atomic_savefig
from ib_brevitas.formatting import fmt, format_table
from ib_brevitas.records import EXACT
from ib_brevitas.rundir import RunDir, RunDirError

PROG = "ib-brevitas report"
REPORT = "report.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a directory written by ib-brevitas sweep")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="where report.md and figures/ go (default: SWEEP_DIR/report)")
    p.add_argument("--dpi", type=int, default=130, help="PNG resolution (default: 130)")
    p.add_argument("--finished-only", action="store_true",
                   help="leave out runs still training (default: every run with measurements, to its last epoch)")


def run(args: argparse.Namespace) -> int:
    try:
        path = write_report(args.sweep_dir, args.output, dpi=args.dpi, finished_only=args.finished_only)
    except (UsageError, RunDirError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def write_report(sweep_dir: Path, out: Path | None = None, dpi: int = 130, finished_only: bool = False) -> Path:
    """Write out/report.md and out/figures/*.{png,pdf}; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    manifest = read_manifest(sweep_dir)
    if manifest is None:
        raise UsageError(f"{sweep_dir} holds no sweep.json; pass a directory written by ib-brevitas sweep")
    out = out if out is not None else sweep_dir / "report"
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    fixed = manifest.get("fixed", {})
    sections, summaries = [], {}
    for cname, point in manifest["configurations"].items():
        names = [n for n, c in manifest["runs"].items() if c == cname]
        lines, summaries[cname] = configuration_section(sweep_dir, cname, point, names, figures, out, fixed, dpi,
                                                        finished_only)
        sections += lines
    parts = [f"# Sweep report: {sweep_dir.resolve().name}", "", _grid_text(manifest), "",
             *overview(summaries), *sections, *timing_section(manifest)]
    path = out / REPORT
    from ib_brevitas.files import atomic_write

    atomic_write(path, "\n".join(parts).rstrip() + "\n")
    return path


def _grid_text(manifest: dict[str, Any]) -> str:
    grid = ", ".join(f"{k} {' '.join(map(str, v))}" for k, v in manifest["grid"].items())
    seeds = manifest["seeds"]
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else " ".join(map(str, seeds))
    th = manifest.get("fixed", {}).get("phase_thresholds") or {}
    fixed = manifest.get("fixed", {})
    data = "" if fixed.get("dataset") is None else f"; data set of the mnist nets {fixed['dataset']}" + (
        f" ({fixed['data_dir']})" if fixed.get("data_dir") else "")
    return (f"Grid: {grid}{data}; seeds {span} ({len(seeds)} per configuration); training step "
            f"{manifest.get('fixed', {}).get('engine', 'fast')}; phase thresholds "
            f"{', '.join(f'{k}={v}' for k, v in th.items()) or 'the defaults (docs/phases.md)'}. "
            "MI in bits on the whole probe set: exact, except the series labelled binning-..., which are "
            "estimates (float nets, or --estimators).")


def configuration_section(sweep_dir: Path, cname: str, point: dict[str, Any], names: list[str], figures: Path,
                          out: Path, fixed: dict[str, Any], dpi: int, finished_only: bool = False
                          ) -> tuple[list[str], Any]:
    """The page's part for one configuration (figures and verdict table per estimator, accuracy), and its
    PhaseSummary per estimator (exact, and each binning a float or binned run holds, labelled as estimates)."""
    from ib_brevitas.experiments.report_figures import accuracy_figure, accuracy_series, save, seeds_figure
    from ib_brevitas.experiments.sweep_engines import is_done
    from ib_brevitas.phases.seeds import summarize_runs
    from ib_brevitas.plots import plot_runs

    dirs = [RunDir(sweep_dir / n) for n in names]
    done = [d for d in dirs if is_done(d, point["epochs"])]
    measured = done if finished_only else [d for d in dirs if d.records_path.exists() and d.records_path.stat().st_size]
    used = "the finished ones" if finished_only else "each run with measurements, to its last measured epoch"
    lines = [f"## {cname}", "", ", ".join(f"{k} {v}" for k, v in point.items()) + f"; {len(done)} of {len(dirs)} "
             "seeds finished" + ("" if len(done) == len(dirs) else f", {len(measured)} reported here "
                                  f"({used})"), ""]
    if not measured:
        return lines + ["No measurements yet.", ""], {}
    runs = [d.load() for d in measured]
    rel = figures.relative_to(out)
    summaries = {}
    for est in estimators_of(runs):
        stem = cname if est == EXACT else f"{cname}-{est}"
        if est != EXACT:
            lines += [f"### {est}: an estimate by binning, not exact MI", ""]
        fig = plot_runs(runs, figures / f"{stem}-mean.png", mean=True, dpi=dpi, estimators=[est])
        atomic_savefig(fig, figures / f"{stem}-mean.pdf")
        save(seeds_figure(runs, cname, est), figures / f"{stem}-seeds", dpi=dpi)
        lines += [f"![{stem}: mean over seeds]({rel}/{stem}-mean.png)", "",
                  f"Mean \u00b1 s.d. over seeds ([PDF]({rel}/{stem}-mean.pdf)).", "",
                  f"![{stem}: every seed]({rel}/{stem}-seeds.png)", "",
                  f"Every seed's trajectory per layer, coloured by epoch; black: the mean ([PDF]({rel}/{stem}-seeds.pdf)).",
                  ""]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runs of one configuration at different lengths
            summaries[est] = summarize_runs(runs, events=False, estimator=est, **(fixed.get("phase_thresholds") or {}))
        lines += ["Verdicts per layer" + ("" if est == EXACT else f" of the {est} series (an estimate)") + ":", "",
                  verdict_table(summaries[est]), "", VERDICT_NOTES, ""]
    scales = scale_table(runs)
    if scales:
        lines += ["Quantizer scale of each layer's output (the code's step; a growing ReLU range makes each code "
                  "cover more of the activation), median over seeds:", "", scales, ""]
    acc = accuracy_series(runs, [d.read_metrics() for d in measured])
    if acc is not None:
        save(accuracy_figure(acc, cname, len(runs)), figures / f"{cname}-accuracy", dpi=dpi)
        lines += [f"![{cname}: accuracy]({rel}/{cname}-accuracy.png)", "",
                  f"Final accuracy (epoch {acc.epoch[-1]}, {int(acc.n_runs[-1])} seeds): train "
                  f"{acc.i_xt[-1]:.4f} \u00b1 {acc.sd_xt[-1]:.4f}, test {acc.i_ty[-1]:.4f} \u00b1 {acc.sd_ty[-1]:.4f}.",
                  ""]
    return lines, summaries


def estimators_of(runs: list[Any]) -> list[str]:
    """The estimators the runs' records hold: exact first, then the binnings in label order."""
    natural = lambda e: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in e.split("-")]  # 30 < 100 < 256
    return sorted({r.estimator for run in runs for r in run.records}, key=lambda e: (e != EXACT, natural(e)))


def scale_table(runs: list[Any]) -> str | None:
    """Markdown: per layer the median over seeds of the quantizer scale at the first and last measurement."""
    import numpy as np

    per: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for run in runs:
        by: dict[str, list] = {}
        for r in run.records:
            if r.estimator == "exact" and r.scale is not None:
                by.setdefault(r.layer, []).append(r)
        for layer, rs in by.items():
            rs.sort(key=lambda r: r.epoch)
            per.setdefault((rs[0].layer_index, layer), []).append((rs[0].scale, rs[-1].scale))
    if not per:
        return None
    rows = []
    for (index, layer), pairs in sorted(per.items()):
        first, last = (np.array(v, dtype=float) for v in zip(*pairs))
        ratio = np.divide(last, first, out=np.full_like(last, np.nan), where=first > 0)
        rows.append([f"T{index + 1}", f"{np.median(first):.4g}", f"{np.median(last):.4g}",
                     f"{np.nanmedian(ratio):.2f}x" if np.isfinite(ratio).any() else "-", str(len(pairs))])
    return format_table(["layer", "scale at start", "at end", "end / start", "seeds"], rows, markdown=True)


def overview(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """One row per configuration and estimator: per layer, seeds fitting / compressing of those observable / decided."""
    done = {(c, est): s for c, per in summaries.items() for est, s in per.items()}
    if not done:
        return []
    labels = sorted({s.label for summ in done.values() for s in summ.layers}, key=lambda x: int(x[1:]))
    rows = []
    for (cname, est), summ in done.items():
        by = {s.label: s for s in summ.layers}
        cells = []
        for label in labels:
            s = by.get(label)
            if s is None:
                cells.append("-")
                continue
            obs = s.n_runs - s.n_fitting_not_observable
            fit = f"{s.n_fitting}/{obs}" if obs else "n/o"
            cells.append(f"{fit}, {s.n_compression}/{s.n_compression + s.n_no_compression}"
                         + (" sat" if 2 * s.n_saturated > s.n_runs else ""))
        rows.append([cname, est if est == EXACT else f"{est} (estimate)", str(max(s.n_runs for s in summ.layers)),
                     *cells])
    return ["## Overview", "", "Per layer: seeds with a fitting phase / where it is observable, seeds with "
            "compression / with a decided verdict (sat: most seeds saturated at log2 N). Binning rows are "
            "estimates of a float (or binned) series, not exact MI.", "",
            format_table(["configuration", "MI", "seeds", *labels], rows, markdown=True), ""]


VERDICT_NOTES = (
    "fitting, compression: seeds with the phase, share and exact (Clopper-Pearson) 95 % interval; fitting over "
    "the seeds where it is observable (n/o: I(X;T) at log2 N from the start), compression over the seeds with a "
    "decided verdict. onset: median epoch where compression starts (compressing seeds); "
    "drop: median fall of smoothed I(X;T) from its peak to the end, bits; signed drop and p: each seed's fall "
    "from the epoch where the other seeds peak, and the one-sided Wilcoxon signed-rank p-value that it is > 0. "
    "saturated: seeds whose I(X;T) stays within the tolerance of log2 N (the layer is injective on the probe set, "
    "so its I(X;T) cannot show compression); **SATURATED** flags a layer where most seeds are. Details: docs/phases.md."
)


def _share(k: int, n: int) -> str:
    from ib_brevitas.phases.seeds import clopper_pearson

    if n == 0:
        return "-"
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} ({k / n:.0%}) [{lo:.2f}, {hi:.2f}]"


def verdict_table(summary: Any) -> str:
    """Markdown: per layer the shares fitting / compressing with 95 % intervals, onset, drop, test, saturation."""
    head = ["layer", "seeds", "fitting [95% CI]", "compression [95% CI]", "undecided", "median onset",
            "median drop", "signed drop", "p (one-sided)", "saturated"]
    rows = []
    for s in summary.layers:
        sat = f"{s.n_saturated}/{s.n_runs}" + (" **SATURATED**" if 2 * s.n_saturated > s.n_runs else "")
        n_o = s.n_fitting_not_observable
        fit = _share(s.n_fitting, s.n_runs - n_o) + (f" ({n_o} n/o)" if n_o else "")
        rows.append([s.label, str(s.n_runs), fit, _share(s.n_compression, s.n_compression + s.n_no_compression),
                     str(s.n_undecided), fmt(s.median_onset_epoch, "g"), fmt(s.median_drop_bits, ".3f"),
                     fmt(s.median_signed_drop_bits, "+.3f"), fmt(s.p_value, ".3g"), sat])
    return format_table(head, rows, markdown=True)


def timing_section(manifest: dict[str, Any]) -> list[str]:
    """Each session's start, end, engine and seeds trained; total wall time and seeds/hour."""
    sessions = manifest.get("sessions", [])
    rows, wall, trained = [], 0.0, 0
    for s in sessions:
        w = s.get("wall_s")
        if w is not None:
            wall += w
            trained += s.get("trained", 0)
        rate = f"{s['trained'] / w * 3600:.1f}" if w and s.get("trained") else "-"
        workers = f"{s.get('workers')} worker{'' if s.get('workers') == 1 else 's'}"
        rows.append([s.get("started", "-"), s.get("ended") or "running or killed", f"{s.get('engine')} ({workers})",
                     str(s.get("skipped", "-")), str(s.get("trained", "-")), str(s.get("failed", "-")), fmt(w, ".1f"),
                     rate])
    lines = ["## Run time", ""]
    if rows:
        lines += [format_table(["started (UTC)", "ended", "engine", "skipped", "trained", "failed", "wall s",
                                "seeds/hour"], rows, markdown=True), ""]
    total = f"{trained / wall * 3600:.1f} seeds/hour" if wall > 0 and trained else "no seeds trained yet"
    lines += [f"In all: {trained} seed runs trained in {wall:.1f} s of sweep wall time ({total}); "
              f"report written {datetime.now().astimezone().isoformat(timespec='seconds')}.", ""]
    return lines
