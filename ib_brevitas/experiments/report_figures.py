"""The report's own figures: every seed's trajectory per layer, and accuracy across seeds.

The mean +- s.d. information plane with MI against epoch is `ib_brevitas.plots.plot_runs(mean=True)`,
the same figure as `ib-brevitas plot --mean`; these two add what a study needs beside it. Means and
s.d. come from `seedmean.mean_sd`, the one home of the seed statistics. Drawn with matplotlib's
object API (no pyplot state, no display), each saved as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ib_brevitas.files import atomic_savefig
from ib_brevitas.records import EXACT
from ib_brevitas.rundir import RunData
from ib_brevitas.seedmean import MeanSeries, mean_sd

FORMATS = (".png", ".pdf")
CMAP = "viridis"


def save(fig, stem: Path, dpi: int = 130) -> list[Path]:
    """`stem`.png and `stem`.pdf."""
    paths = [stem.with_suffix(s) for s in FORMATS]
    for p in paths:
        atomic_savefig(fig, p, dpi=dpi)
    return paths


def layer_series(runs: Sequence[RunData], estimator: str = EXACT) -> tuple[list[tuple[int, str]], list[dict[str, tuple]]]:
    """Layers in network order ((index, name)), and per run layer -> (epochs, i_xt, i_ty) of its `estimator`'s records."""
    layers: dict[str, int] = {}
    per_run = []
    for run in runs:
        cols: dict[str, tuple[list, list, list]] = {}
        for r in sorted(run.records, key=lambda r: r.epoch):
            if r.estimator != estimator:
                continue
            layers.setdefault(r.layer, r.layer_index)
            e, x, y = cols.setdefault(r.layer, ([], [], []))
            e.append(r.epoch)
            x.append(r.i_xt)
            y.append(r.i_ty)
        per_run.append(cols)
    return sorted((i, name) for name, i in layers.items()), per_run


def seeds_figure(runs: Sequence[RunData], title: str, estimator: str = EXACT):
    """One panel per layer: each seed's path in the information plane coloured by epoch, the mean in black
    (of `estimator`'s series; a binning's figure says it is an estimate)."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    layers, per_run = layer_series(runs, estimator)
    means = mean_sd(per_run)
    epochs = [e for cols in per_run for s in cols.values() for e in s[0]]
    norm = Normalize(vmin=min(epochs), vmax=max(max(epochs), min(epochs) + 1))
    n_cols = min(3, len(layers))
    n_rows = -(-len(layers) // n_cols)
    fig = Figure(figsize=(4.2 * n_cols + 0.8, 3.6 * n_rows + 0.6), layout="constrained")
    what = "" if estimator == EXACT else f", {estimator} (an estimate, not exact MI)"
    fig.suptitle(f"{title}{what}: every seed ({len(runs)}), coloured by epoch; black: mean over seeds", fontsize=11)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    log2_n = max(r.log2_n for run in runs for r in run.records)
    h_y = max(r.h_y for run in runs for r in run.records)
    sc = None
    for ax, (index, name) in zip(axes.flat, layers):
        for cols in per_run:
            if name in cols:
                e, x, y = (np.asarray(v) for v in cols[name])
                ax.plot(x, y, color="0.75", lw=0.5, zorder=1)
                sc = ax.scatter(x, y, c=e, cmap=CMAP, norm=norm, s=5, lw=0, alpha=0.7, zorder=2, gid=f"seeds:{name}")
        m = means[name]
        ax.plot(m.i_xt, m.i_ty, color="black", lw=1.4, zorder=3, gid=f"mean:{name}")
        ax.axvline(log2_n, color="0.5", ls="--", lw=0.8)
        ax.axhline(h_y, color="0.5", ls=":", lw=0.8)
        label = f"T{index + 1}"
        ax.set_title(label if name == label else f"{label} ({name})", fontsize=10)
        ax.set_xlabel("I(X;T) [bits]")
        ax.set_ylabel("I(T;Y) [bits]")
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]), right=log2_n * 1.04)
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=h_y * 1.06)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="epoch", shrink=0.8)
    return fig


def accuracy_series(runs: Sequence[RunData], metrics: Sequence[list[dict]]) -> MeanSeries | None:
    """Mean +- s.d. over seeds of train (i_xt field) and test (i_ty field) accuracy per measured epoch."""
    per_run = []
    for rows in metrics:
        rows = [r for r in rows if "train_acc" in r and "test_acc" in r]
        if rows:
            per_run.append({"accuracy": ([r["epoch"] for r in rows], [r["train_acc"] for r in rows],
                                         [r["test_acc"] for r in rows])})
    return mean_sd(per_run).get("accuracy") if per_run else None


def accuracy_figure(acc: MeanSeries, title: str, n_runs: int):
    """Train and test accuracy against epoch: mean over seeds with a +- 1 s.d. band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, m, sd, color in (("train", acc.i_xt, acc.sd_xt, "#1f77b4"), ("test", acc.i_ty, acc.sd_ty, "#d62728")):
        ax.plot(acc.epoch, m, color=color, lw=1.3, label=f"{label} (mean)", gid=f"acc:{label}")
        ax.fill_between(acc.epoch, m - sd, m + sd, color=color, alpha=0.2, lw=0, label=f"{label} \u00b1 s.d.")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: accuracy, {n_runs} seed{'s' if n_runs != 1 else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig
