"""The matplotlib figure of `ib-brevitas plot`: information plane above I(X;T), I(T;Y) against epoch.

Readable the way the tab is: layers that end on the same point get one label
("T1-T4") and labels are placed where their boxes meet no other; lines that
coincide in an epoch plot are drawn and listed once; the bounds are named;
phase markers have one shape per kind and a legend; the mean view's spread
is a light band / light ellipses (switchable); long runs get a logarithmic
epoch axis and colour scale.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from ib_brevitas.files import atomic_savefig
from ib_brevitas.plots.panels import Panel, Series, load_runs, panels_for
from ib_brevitas.rundir import RunData

FORMATS = (".png", ".pdf", ".svg")
MARKERS = ("s", "^", "D", "o")  # per layer, cycling; the dashboard uses the same order
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# One marker per phase event kind (ib_brevitas.phases.EVENT_KINDS), as in the tab.
PHASE_MARKERS = {"fitting_ended": ("o", "fitting ended"), "compression_started": ("v", "compression started"),
                 "compression_confirmed": ("D", "compression confirmed"),
                 "compression_retracted": ("X", "compression retracted")}
LONG_RUN_EPOCHS = 1000  # as the tab: from here on the epoch axis is logarithmic by default
LABEL_PT = 9
MAX_ELLIPSES = 300
TITLE_CHARS = 60  # a plane panel's title line, 9 pt, beside its colour bar


def _plain():
    """Tick labels 1, 10, 100 instead of 10^0, 10^1 on a log epoch axis."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos=None: f"{v:g}")


def join_labels(series: Sequence[Series]) -> str:
    """'T1-T4' for consecutive layers of one estimator, else the labels joined by commas."""
    if len(series) == 1:
        return series[0].label
    if len({s.estimator for s in series}) > 1 or any(s.label != f"T{s.index + 1}" for s in series):
        return ", ".join(s.label for s in series)
    idx = sorted({s.index for s in series})
    parts, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(f"T{idx[i] + 1}\u2013T{idx[j] + 1}" if j > i else f"T{idx[i] + 1}")
        i = j + 1
    return ", ".join(parts)


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_labels(anchors: list[tuple[float, float, list[Series]]], area: tuple[float, float, float, float],
                 char_w: float, height: float) -> list[tuple[str, float, float, tuple]]:
    """Clusters of coincident anchors (in points) get one text; each takes the first candidate
    place around its anchor whose box (x, y, w, h) meets no placed box. Returns (text, ax, ay, box)."""
    clusters: list[list[tuple[float, float, Series]]] = []
    for x, y, ss in anchors:
        for s in ss:
            c = next((c for c in clusters if any(math.hypot(cx - x, cy - y) <= 4 for cx, cy, _ in c)), None)
            (c.append((x, y, s)) if c is not None else clusters.append([(x, y, s)]))
    placed = []
    x0, y0, x1, y1 = area
    for c in clusters:
        ss = sorted((s for _, _, s in c), key=lambda s: s.index)
        text = join_labels(ss)
        w = char_w * len(text) + 2
        ax = sum(p[0] for p in c) / len(c)
        ay = sum(p[1] for p in c) / len(c)
        best = None
        for r in (6, 12, 20, 30, 42, 56):
            for deg in (45, -45, 135, -135, 0, 180, 90, -90):
                a = math.radians(deg)
                cx, cy = ax + r * math.cos(a), ay + r * math.sin(a)
                bx = cx - w if math.cos(a) < -0.3 else cx if math.cos(a) > 0.3 else cx - w / 2
                by = cy - height if math.sin(a) < -0.3 else cy if math.sin(a) > 0.3 else cy - height / 2
                box = (bx, by, w, height)
                inside = bx >= x0 and by >= y0 and bx + w <= x1 and by + height <= y1
                if inside and not any(_overlaps(box, p[3]) for p in placed):
                    best = box
                    break
            if best:
                break
        placed.append((text, ax, ay, best or (ax + 5, ay + 5, w, height)))
    return placed


def _coincident_groups(series: Sequence[Series], key: str, tol: float) -> list[list[Series]]:
    """Series whose lines in an epoch plot are one line to the eye: same epochs and estimator,
    values within `tol` bits everywhere (half a percent of the axis)."""
    groups: list[list[Series]] = []
    for s in series:
        vals = getattr(s, key)
        for g in groups:
            t = g[0]
            if t.epochs == s.epochs and t.estimator == s.estimator and all(
                    abs(a - b) <= tol for a, b in zip(getattr(t, key), vals)):
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


def _epoch_norm(lo: float, hi: float, log: bool):
    from matplotlib.colors import FuncNorm, Normalize

    hi = hi if hi > lo else lo + 1
    if not log:
        return Normalize(vmin=lo, vmax=hi)
    return FuncNorm((lambda e: np.log10(np.maximum(e, 0) + 1), lambda v: 10 ** v - 1), vmin=lo, vmax=hi)


def plot_runs(run_dirs: Sequence[str | Path | RunData], out: str | Path | None = None, *, mean: bool = False, dpi: int = 150,
              log_epoch: bool | None = None, spread: bool = True, estimators: Sequence[str] | None = None):
    """Draw the information plane and MI-vs-epoch figure of runs; save it to `out` if given.

    Returns the matplotlib Figure. Artists carry the data: in the plane, one
    scatter per layer with `gid` = layer name and offsets (I(X;T), I(T;Y)); in
    the epoch plots one line per set of coinciding layers with gid = the first
    layer's name (and `coincident` = all of them); label texts have gid
    "label:<text>", bounds "bound:log2_n" / "bound:h_y", markers "phase:<layer>:<kind>".
    `log_epoch`: None = logarithmic for runs of 1000 epochs or more.
    `estimators`: draw only the series of these estimator labels (None: all).
    `run_dirs` may hold loaded `RunData` (a caller drawing several figures of the same runs).
    """
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"output file {out}: use one of {', '.join(FORMATS)} (-o/--output), or --html")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("ib-brevitas plot needs matplotlib: pip install 'ib-brevitas[plot]'") from None
    panels = panels_for(run_dirs, mean=mean, runs=load_runs(run_dirs, estimators))
    fig = Figure(figsize=(5.2 * len(panels), 10.2), layout="constrained", dpi=dpi)
    fig.suptitle("Information plane, exact MI on the probe set (bits)" if all(
        s.exact for p in panels for s in p.series) else "Information plane (bits; estimated series marked)",
        fontsize=11)
    grid = fig.add_gridspec(3, len(panels), height_ratios=[3, 1.6, 1.6])
    for col, panel in enumerate(panels):
        epochs = [e for s in panel.series for e in s.epochs]
        log = (max(epochs) >= LONG_RUN_EPOCHS) if log_epoch is None else log_epoch
        plane = fig.add_subplot(grid[0, col])
        _draw_plane(fig, plane, panel, log, spread)
        ax_xt = fig.add_subplot(grid[1, col])
        ax_ty = fig.add_subplot(grid[2, col], sharex=ax_xt)
        _draw_epochs(ax_xt, panel, "i_xt", "sd_xt", "I(X;T) [bits]", panel.log2_n, "log\u2082N", log, spread, True)
        _draw_epochs(ax_ty, panel, "i_ty", "sd_ty", "I(T;Y) [bits]", panel.h_y, "H(Y)", log, spread, False)
        ax_ty.set_xlabel("epoch (log scale)" if log else "epoch")
    if out is not None:
        atomic_savefig(fig, out, dpi=dpi)
    return fig


def _draw_plane(fig, ax, panel: Panel, log: bool, spread: bool) -> None:
    from matplotlib.collections import EllipseCollection

    epochs = [e for s in panel.series for e in s.epochs]
    norm = _epoch_norm(min(epochs), max(epochs), log)
    mappable = None
    for s in panel.series:
        color = LAYER_COLORS[s.index % len(LAYER_COLORS)]
        ax.plot(s.i_xt, s.i_ty, color=color if s.sd_xt else "0.6", lw=1.0 if s.sd_xt else 0.7, zorder=1,
                ls="-" if s.exact else "--")
        if spread and s.sd_xt and any(s.sd_xt + s.sd_ty):
            stride = max(1, math.ceil(len(s.epochs) / MAX_ELLIPSES))
            idx = range(0, len(s.epochs), stride)
            ax.add_collection(EllipseCollection(
                [2 * s.sd_xt[i] for i in idx], [2 * s.sd_ty[i] for i in idx], [0.0] * len(idx), units="xy",
                offsets=[(s.i_xt[i], s.i_ty[i]) for i in idx], offset_transform=ax.transData,
                facecolors=color, edgecolors="none", alpha=0.07, zorder=0, gid=f"spread:{s.layer}"))
        mappable = ax.scatter(s.i_xt, s.i_ty, c=s.epochs, cmap="viridis", norm=norm,
                              marker=MARKERS[s.index % len(MARKERS)], s=18, edgecolors="0.1", linewidths=0.25,
                              zorder=2, label=s.label, gid=s.layer)
    x_max = max([v + (d if d else 0) for s in panel.series for v, d in zip(s.i_xt, s.sd_xt or [0] * len(s.i_xt))]
                + [panel.log2_n or 0, 1e-9])
    y_max = max([v for s in panel.series for v in s.i_ty] + [panel.h_y or 0, 1e-9])
    ax.set_xlim(0, x_max * 1.06)
    ax.set_ylim(0, y_max * 1.12)
    if panel.log2_n is not None:
        ax.axvline(panel.log2_n, ls="--", color="0.35", lw=1, gid="bound:log2_n")
        ax.text(panel.log2_n, 0.02 * y_max, f" log\u2082N = {panel.log2_n:.3g} ", rotation=90, ha="right",
                va="bottom", fontsize=7.5, color="0.3", gid="bound-label:log2_n")
    if panel.h_y is not None:
        ax.axhline(panel.h_y, ls="--", color="0.35", lw=1, gid="bound:h_y")
        ax.text(0.01 * x_max, panel.h_y, f"H(Y) = {panel.h_y:.3g}", ha="left", va="bottom", fontsize=7.5,
                color="0.3", gid="bound-label:h_y")
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    lines = [panel.title, *([panel.subtitle] if panel.subtitle else [])]
    # Wrapped to the panel (~60 characters of 9 pt beside its colour bar): a long line ran off both edges.
    ax.set_title("\n".join(textwrap.fill(t, TITLE_CHARS, break_long_words=False) for t in lines), fontsize=9)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=ax, label="epoch (log scale)" if log else "epoch")
        if log:
            hi = max(epochs)
            bar.set_ticks(sorted({t for t in (0, 1, 10, 100, 1000, 10000, 100000) if min(epochs) <= t <= hi} | {hi}))
            bar.ax.yaxis.set_major_formatter(_plain())
    _label_layers(fig, ax, panel.series)  # last: the layout (colour bar included) fixes where the axes are


def _label_layers(fig, ax, series: Sequence[Series]) -> None:
    """One label per set of coincident end points, placed without overlap (in points)."""
    fig.draw_without_rendering()  # the layout fixes where the axes are
    to_pt = 72.0 / fig.dpi
    anchors = []
    for s in series:
        if s.epochs:
            x, y = ax.transData.transform((s.i_xt[-1], s.i_ty[-1]))
            anchors.append((x * to_pt, y * to_pt, [s]))
    bb = ax.get_window_extent()
    area = (bb.x0 * to_pt + 1, bb.y0 * to_pt + 1, bb.x1 * to_pt - 1, bb.y1 * to_pt - 1)
    for text, ax_pt, ay_pt, box in place_labels(anchors, area, 0.62 * LABEL_PT, LABEL_PT * 1.3):
        anchor = ax.transData.inverted().transform((ax_pt / to_pt, ay_pt / to_pt))
        far = math.hypot(box[0] + box[2] / 2 - ax_pt, box[1] + box[3] / 2 - ay_pt) > 14
        ax.annotate(text, anchor, xytext=(box[0] - ax_pt + 1, box[1] - ay_pt + 1), textcoords="offset points",
                    ha="left", va="bottom", fontsize=LABEL_PT, fontweight="bold", gid=f"label:{text}", zorder=4,
                    arrowprops=dict(arrowstyle="-", color="0.4", lw=0.6, shrinkA=0, shrinkB=2) if far else None)


def _draw_epochs(ax, panel: Panel, key: str, sd_key: str, ylabel: str, bound: float | None, bound_name: str,
                 log: bool, spread: bool, phase_legend: bool) -> None:
    from matplotlib.lines import Line2D

    top = max([v for s in panel.series for v in getattr(s, key)] + [bound or 0, 1e-9]) * 1.15
    for group in _coincident_groups(panel.series, key, 0.005 * top):
        s = group[0]
        color = LAYER_COLORS[s.index % len(LAYER_COLORS)]
        values, sd = getattr(s, key), getattr(s, sd_key)
        if spread and sd and any(sd):
            ax.fill_between(s.epochs, [v - d for v, d in zip(values, sd)], [v + d for v, d in zip(values, sd)],
                            color=color, alpha=0.18, lw=0)
        line, = ax.plot(s.epochs, values, color=color, lw=1.4, label=join_labels(group), gid=s.layer,
                        ls="-" if s.exact else "--", marker="o" if len(values) == 1 else None)
        line.coincident = [g.layer for g in group]
    kinds = []
    for s in panel.series:
        color = LAYER_COLORS[s.index % len(LAYER_COLORS)]
        values = getattr(s, key)
        for e in panel.events:
            if e.get("layer") == s.layer and isinstance(e.get("epoch"), (int, float)):
                y = e.get(key)
                if not isinstance(y, (int, float)):  # nearest measurement
                    y = values[min(range(len(values)), key=lambda i: abs(s.epochs[i] - e["epoch"]))]
                marker = PHASE_MARKERS.get(e.get("kind"), ("s", str(e.get("kind"))))[0]
                ax.plot([e["epoch"]], [y], marker=marker, color=color, markeredgecolor="0.1", ms=6.5, ls="none",
                        gid=f"phase:{s.layer}:{e.get('kind')}", zorder=3)
                if e.get("kind") not in kinds:
                    kinds.append(e.get("kind"))
    if bound is not None:
        ax.axhline(bound, ls="--", color="0.35", lw=1)
        ax.annotate(bound_name, (1, bound), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=7.5, color="0.3")
    if log:
        ax.set_xscale("symlog", linthresh=1)
        ax.xaxis.set_major_formatter(_plain())
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=top)
    layer_legend = ax.legend(fontsize=7, ncol=3, loc="lower right", title_fontsize=7)
    if phase_legend and kinds:
        ax.add_artist(layer_legend)
        handles = [Line2D([], [], marker=PHASE_MARKERS.get(k, ("s", str(k)))[0], ls="none", color="0.5",
                          markeredgecolor="0.1", label=PHASE_MARKERS.get(k, ("s", str(k)))[1]) for k in kinds]
        ax.legend(handles=handles, fontsize=7, loc="lower left", title="phase events", title_fontsize=7)
