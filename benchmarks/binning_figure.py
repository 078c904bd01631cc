"""I(X;T) per layer over epochs: exact (k-bit run) beside each binning estimator (float run), one panel each.

    python benchmarks/binning_figure.py EXACT_RUN FLOAT_RUN [EXACT_RUN FLOAT_RUN ...] -o FIG.png

One row per pair of runs (e.g. tanh, then ReLU, same seed), one column per
estimator: exact first, then the float run's binnings in their order. Each
panel holds one estimator only, so no two estimators share an axis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ib_brevitas.rundir import RunDir  # noqa: E402


def series(records, estimator):
    by = {}
    for r in sorted((r for r in records if r.estimator == estimator), key=lambda r: (r.layer_index, r.epoch)):
        by.setdefault(r.layer, ([], []))
        by[r.layer][0].append(r.epoch)
        by[r.layer][1].append(r.i_xt)
    return by


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    if len(args.runs) % 2:
        p.error("give runs in pairs: EXACT_RUN FLOAT_RUN")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(RunDir(a).load(), RunDir(b).load()) for a, b in zip(args.runs[::2], args.runs[1::2])]
    labels = [["exact"] + list(dict.fromkeys(r.estimator for r in fl.records)) for _, fl in pairs]
    cols = max(map(len, labels))
    fig, axes = plt.subplots(len(pairs), cols, figsize=(3.2 * cols, 2.8 * len(pairs)), squeeze=False,
                             sharex=True, constrained_layout=True)
    for row, ((ex, fl), ests) in enumerate(zip(pairs, labels)):
        for col, est in enumerate(ests):
            ax = axes[row][col]
            run = ex if est == "exact" else fl
            for i, (layer, (e, x)) in enumerate(series(run.records, est).items()):
                ax.plot(e, x, color=f"C{i}", lw=1.2, label=layer)
            cfg = run.config or {}
            ax.set_title(f"{cfg.get('activation')} {cfg.get('bits')}-bit, {est.replace('binning-', '')}", fontsize=9)
            ax.set_xscale("symlog", linthresh=10)
            ax.set_ylim(0, 12.5)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("I(X;T) [bits]")
            if row == len(pairs) - 1:
                ax.set_xlabel("epoch")
        axes[row][0].legend(fontsize=7, ncol=2, loc="lower right")
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
