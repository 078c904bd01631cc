"""Figures of docs/phases.md: real SYN runs' I(X;T) with the detector's reading drawn on it.

    python benchmarks/phase_figures.py RUN_DIR:LAYER[,LAYER...] ... -o docs/img/phases-NAME.png

Per panel: raw I(X;T) (thin), its running median (thick), the global peak
(dot), the compression onset (dashed line), each episode shaded from onset to
trough, and log2 N (dotted). What it shows is exactly `detect` with the
default thresholds on the run's mi.jsonl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ib_brevitas.phases import detect, running_median  # noqa: E402
from ib_brevitas.rundir import RunDir  # noqa: E402


def panel(ax, run_dir: str, layer: str) -> None:
    recs = sorted((r for r in RunDir(run_dir).load().records if r.label == layer or r.layer == layer),
                  key=lambda r: r.epoch)
    if not recs:
        raise SystemExit(f"{run_dir} has no layer {layer}")
    e = np.array([r.epoch for r in recs], float)
    x, y = np.array([r.i_xt for r in recs]), np.array([r.i_ty for r in recs])
    v = detect(e, x, y, n_samples=recs[0].n_samples)
    ax.plot(e, x, color="0.7", lw=0.6, label="I(X;T)")
    ax.plot(e, running_median(x, 5), color="C0", lw=1.6, label="running median")
    for ep in v.episodes:
        ax.axvspan(ep.start_epoch, ep.end_epoch, color="C1" if ep.recovered else "C3", alpha=0.15, lw=0)
    ax.plot([v.peak_epoch], [v.peak_i_xt], "o", color="k", ms=5, label=f"peak {v.peak_i_xt:.2f}")
    if v.onset_epoch is not None:
        ax.axvline(v.onset_epoch, color="C3", ls="--", lw=1, label=f"onset {v.onset_epoch}")
    if v.log2_n is not None and x.max() > v.log2_n - 1:
        ax.axhline(v.log2_n, color="0.3", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(0, e[-1] * 1.05)
    comp = {True: "compression", False: "no compression", None: "undecided"}[v.compression]
    ax.set_title(f"{Path(run_dir).name} {recs[0].label}: {comp}, drop {v.drop_bits:.2f} bit, "
                 f"{len(v.episodes)} episode(s)", fontsize=9)
    ax.set_ylabel("bits")
    ax.legend(fontsize=7, loc="best")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("panels", nargs="+", metavar="RUN_DIR:LAYER[,LAYER]")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    items = [(d, layer) for spec in args.panels for d, layers in [spec.rsplit(":", 1)] for layer in layers.split(",")]
    fig, axes = plt.subplots(len(items), 1, figsize=(7, 2.3 * len(items)), squeeze=False)
    for ax, (d, layer) in zip(axes[:, 0], items):
        panel(ax, d, layer)
    axes[-1, 0].set_xlabel("epoch (linear to 100, then log)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
