"""`ib-brevitas plot RUN_DIR... -o FILE.{png,pdf,svg} | --html FILE.html`: information-plane figures.

The same views as the TensorBoard tab. A static matplotlib figure (`figure`):
per run (or, with --mean, per group of seeds) a column with the information
plane (x = I(X;T), y = I(T;Y) in bits, points coloured by epoch, named bounds
at log2 N and H(Y), layers labelled T1..Tn without overlap) above I(X;T) and
I(T;Y) against epoch with phase markers. Or one self-contained HTML file
(`html`): the tab itself with the runs' data inside, for sharing and
supplementary material (no server, no network). Data comes from each run's
`mi.jsonl` (and `phases.jsonl`), or its TensorBoard event files when there is
no `mi.jsonl`. The figure needs matplotlib (`pip install 'ib-brevitas[plot]'`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ib_brevitas.plots.figure import FORMATS, LAYER_COLORS, MARKERS, plot_runs
from ib_brevitas.plots.panels import Panel, Series, panels_for

__all__ = ["FORMATS", "LAYER_COLORS", "MARKERS", "Panel", "Series", "add_arguments", "panels_for", "plot_runs",
           "run", "write_html"]


def write_html(run_dirs, out, estimators=None):
    from ib_brevitas.plots.html import write_html as _write

    return _write(run_dirs, out, estimators)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories (mi.jsonl, or TensorBoard event files)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", type=Path, metavar="FILE", help="figure file: .png, .pdf or .svg")
    out.add_argument("--html", type=Path, metavar="FILE",
                     help="one self-contained .html file with the Information Plane tab's views (no network)")
    parser.add_argument("--mean", action="store_true",
                        help="average runs of one configuration (names differing only in a -seedN/-sN suffix)")
    parser.add_argument("--log-epoch", choices=["auto", "on", "off"], default="auto",
                        help="logarithmic epoch axis and colours (auto: for runs of 1000 epochs or more)")
    parser.add_argument("--estimator", nargs="+", default=None, metavar="LABEL", dest="estimators",
                        help="draw only these series: 'exact' and/or binning labels such as "
                             "binning-uniform-30-global (default: every series; a float run holds one per estimator)")
    parser.add_argument("--no-spread", action="store_true", help="with --mean: no s.d. bands and ellipses")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of a .png (default 150)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.html is not None:
            if args.html.suffix.lower() not in (".html", ".htm"):
                raise ValueError(f"--html {args.html}: the file name must end in .html")
            write_html(args.run_dirs, args.html, args.estimators)
            out = args.html
        else:
            log = {"auto": None, "on": True, "off": False}[args.log_epoch]
            plot_runs(args.run_dirs, args.output, mean=args.mean, dpi=args.dpi, log_epoch=log,
                      spread=not args.no_spread, estimators=args.estimators)
            out = args.output
    except (ValueError, ImportError, OSError) as e:
        print(f"ib-brevitas plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
