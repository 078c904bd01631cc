"""`ib-brevitas plot RUN_DIR... -o FILE.{png,pdf,svg}`: information-plane figures for papers.

The same two views as the TensorBoard tab, as one static matplotlib figure:
per run (or, with --mean, per group of seeds) a column with the information
plane (x = I(X;T), y = I(T;Y) in bits, points coloured by epoch, dashed bounds
at log2 N and H(Y), layers labelled T1..Tn) above I(X;T) and I(T;Y) against
epoch with phase markers. Data comes from the run's `mi.jsonl` (and
`phases.jsonl`), or from its TensorBoard event files when there is no
`mi.jsonl`. Needs matplotlib (`pip install 'ib-brevitas[plot]'`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ib_brevitas.records import LayerMI
from ib_brevitas.rundir import RunDir

FORMATS = (".png", ".pdf", ".svg")
MARKERS = ("s", "^", "D", "o")  # per layer, cycling; the dashboard uses the same order
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class Series:
    """One layer's trajectory in one panel: values per epoch (means and s.d. with --mean)."""

    layer: str
    label: str
    index: int
    epochs: list[int]
    i_xt: list[float]
    i_ty: list[float]
    sd_xt: list[float] = field(default_factory=list)
    sd_ty: list[float] = field(default_factory=list)


@dataclass
class Panel:
    title: str
    series: list[Series]
    log2_n: float | None
    h_y: float | None
    events: list[dict[str, Any]]


def _series(records: list[LayerMI]) -> list[Series]:
    by_layer: dict[str, list[LayerMI]] = defaultdict(list)
    for r in records:
        by_layer[r.layer].append(r)
    out = []
    for layer, rs in by_layer.items():
        rs.sort(key=lambda r: r.epoch)
        out.append(Series(layer, rs[0].label, rs[0].layer_index, [r.epoch for r in rs],
                          [r.i_xt for r in rs], [r.i_ty for r in rs]))
    return sorted(out, key=lambda s: (s.index, s.layer))


def _mean_series(runs: list[list[LayerMI]]) -> list[Series]:
    """Average runs per layer and epoch (over the runs that measured that epoch); spread = s.d."""
    cells: dict[str, dict[int, list[LayerMI]]] = defaultdict(lambda: defaultdict(list))
    for records in runs:
        for r in records:
            cells[r.layer][r.epoch].append(r)
    out = []
    for layer, by_epoch in cells.items():
        first = next(iter(by_epoch.values()))[0]
        s = Series(layer, first.label, first.layer_index, [], [], [])
        for epoch in sorted(by_epoch):
            rs = by_epoch[epoch]
            s.epochs.append(epoch)
            for values, means, sds in (([r.i_xt for r in rs], s.i_xt, s.sd_xt), ([r.i_ty for r in rs], s.i_ty, s.sd_ty)):
                m = sum(values) / len(values)
                means.append(m)
                sds.append(math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)
        out.append(s)
    return sorted(out, key=lambda s: (s.index, s.layer))


def _bounds(records: list[LayerMI]) -> tuple[float | None, float | None]:
    if not records:
        return None, None
    return max(r.log2_n for r in records), max(r.h_y for r in records)


def panels_for(run_dirs: Sequence[str | Path], mean: bool = False) -> list[Panel]:
    """What `plot_runs` draws: one panel per run, or per group of seeds with `mean`."""
    from ib_brevitas.tensorboard.plugin import group_of

    if not run_dirs:
        raise ValueError("give at least one run directory")
    loaded = []
    for d in run_dirs:
        run = RunDir(d).load()
        loaded.append((run.path, run.records, [e.to_dict() for e in run.events]))
    if not mean:
        return [Panel(d.name, _series(recs), *_bounds(recs), events) for d, recs, events in loaded]
    groups: dict[str, list[tuple[Path, list[LayerMI]]]] = defaultdict(list)
    for d, recs, _ in loaded:
        groups[group_of(d.name)].append((d, recs))
    panels = []
    for name, members in groups.items():
        every = [r for _, recs in members for r in recs]
        title = f"{name} (mean \u00b1 s.d. of {len(members)} run{'s' if len(members) > 1 else ''})"
        panels.append(Panel(title, _mean_series([recs for _, recs in members]), *_bounds(every), []))
    return panels


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None, *, mean: bool = False, dpi: int = 150):
    """Draw the information plane and MI-vs-epoch figure of runs; save it to `out` if given.

    Returns the matplotlib Figure. Artists carry the data: in the plane, one
    scatter per layer with `gid` = layer name and offsets (I(X;T), I(T;Y)); in
    the epoch plots one line per layer with the same gid.
    """
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"output file {out}: use one of {', '.join(FORMATS)} (-o/--output)")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("ib-brevitas plot needs matplotlib: pip install 'ib-brevitas[plot]'") from None
    panels = panels_for(run_dirs, mean=mean)
    fig = Figure(figsize=(5.0 * len(panels), 9.5), layout="constrained")
    grid = fig.add_gridspec(3, len(panels), height_ratios=[3, 1.6, 1.6])
    for col, panel in enumerate(panels):
        plane = fig.add_subplot(grid[0, col])
        _draw_plane(fig, plane, panel)
        ax_xt = fig.add_subplot(grid[1, col])
        ax_ty = fig.add_subplot(grid[2, col], sharex=ax_xt)
        _draw_epochs(ax_xt, panel, "i_xt", "sd_xt", "I(X;T) [bits]", panel.log2_n)
        _draw_epochs(ax_ty, panel, "i_ty", "sd_ty", "I(T;Y) [bits]", panel.h_y)
        ax_ty.set_xlabel("epoch")
    if out is not None:
        fig.savefig(out, dpi=dpi)
    return fig


def _draw_plane(fig, ax, panel: Panel) -> None:
    epochs = [e for s in panel.series for e in s.epochs]
    lo, hi = min(epochs), max(epochs)
    mappable = None
    for s in panel.series:
        ax.plot(s.i_xt, s.i_ty, color="0.55", lw=0.7, zorder=1)
        if s.sd_xt and any(s.sd_xt + s.sd_ty):
            ax.errorbar(s.i_xt, s.i_ty, xerr=s.sd_xt, yerr=s.sd_ty, fmt="none", ecolor="0.45", elinewidth=0.6, zorder=1)
        mappable = ax.scatter(s.i_xt, s.i_ty, c=s.epochs, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1,
                              marker=MARKERS[s.index % len(MARKERS)], s=18, edgecolors="0.1", linewidths=0.25,
                              zorder=2, label=s.label, gid=s.layer)
        ax.annotate(s.label, (s.i_xt[-1], s.i_ty[-1]), xytext=(5, 5), textcoords="offset points",
                    fontsize=9, fontweight="bold")
    if panel.log2_n is not None:
        ax.axvline(panel.log2_n, ls="--", color="0.35", lw=1, gid="bound:log2_n")
    if panel.h_y is not None:
        ax.axhline(panel.h_y, ls="--", color="0.35", lw=1, gid="bound:h_y")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(panel.title, fontsize=10)
    if mappable is not None:
        fig.colorbar(mappable, ax=ax, label="epoch")


def _draw_epochs(ax, panel: Panel, key: str, sd_key: str, ylabel: str, bound: float | None) -> None:
    for s in panel.series:
        color = LAYER_COLORS[s.index % len(LAYER_COLORS)]
        values, sd = getattr(s, key), getattr(s, sd_key)
        if sd and any(sd):
            ax.fill_between(s.epochs, [v - d for v, d in zip(values, sd)], [v + d for v, d in zip(values, sd)],
                            color=color, alpha=0.2, lw=0)
        ax.plot(s.epochs, values, color=color, lw=1.4, label=s.label, gid=s.layer,
                marker="o" if len(values) == 1 else None)
        for e in panel.events:
            if e.get("layer") == s.layer and isinstance(e.get("epoch"), (int, float)):
                y = e.get(key)
                if not isinstance(y, (int, float)):  # nearest measurement
                    y = values[min(range(len(values)), key=lambda i: abs(s.epochs[i] - e["epoch"]))]
                ax.plot([e["epoch"]], [y], marker="v", color=color, markeredgecolor="0.1", ms=7,
                        gid=f"phase:{s.layer}:{e.get('kind')}")
    if bound is not None:
        ax.axhline(bound, ls="--", color="0.35", lw=1)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, ncol=2, loc="lower right")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories (mi.jsonl, or TensorBoard event files)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                        help="figure file: .png, .pdf or .svg")
    parser.add_argument("--mean", action="store_true",
                        help="average runs of one configuration (names differing only in a -seedN/-sN suffix)")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of a .png (default 150)")


def run(args: argparse.Namespace) -> int:
    try:
        plot_runs(args.run_dirs, args.output, mean=args.mean, dpi=args.dpi)
    except (ValueError, ImportError) as e:
        print(f"ib-brevitas plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0
