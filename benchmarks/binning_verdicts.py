"""Compression verdicts per layer across seeds, exact and binned side by side, from run directories.

    python benchmarks/binning_verdicts.py RUN_DIR ... [--markdown]

Reads each run's summary.json (written by `ib-brevitas train`: exact verdicts
under "layers", each binning estimator's under "binned"; the same offline
detector and thresholds) and prints, per configuration (net, dataset,
activation) and estimator, how many seeds show compression in each layer
(Y = compressed, n = not, ? = undecided), then, for every binned estimator,
in how many seeds its verdict equals the exact verdict of the same seed
(float and quantized runs paired by net, dataset, activation and seed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ib_brevitas.formatting import format_table  # noqa: E402

MARK = {True: "Y", False: "n", None: "?"}


def load(run_dirs: list[Path]) -> list[dict]:
    runs = []
    for d in run_dirs:
        if not (d / "summary.json").exists() or not (d / "config.json").exists():
            sys.exit(f"binning_verdicts: {d} has no summary.json/config.json (not a finished run); pass finished runs")
        config = json.loads((d / "config.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        groups = {"exact": summary["layers"], **summary.get("binned", {})}
        key = (config.get("net", "syn"), config.get("dataset", "syn"), config["activation"])
        for estimator, verdicts in groups.items():
            if verdicts:
                runs.append({"config": key, "bits": config["bits"], "seed": config["seed"], "estimator": estimator,
                             "epochs": config["epochs"], "verdicts": {v["layer"]: v["compression"] for v in verdicts},
                             "acc": summary.get("final_metrics", {}).get("test_acc")})
    return runs


def _order(config: tuple, bits: int, estimator: str) -> tuple:
    """Configurations together; exact first, then the binnings by bin count."""
    parts = estimator.split("-")
    return (config, estimator != "exact", parts[1] if len(parts) > 2 else "", int(parts[2]) if len(parts) > 2 else 0,
            estimator, bits)


def tables(runs: list[dict], markdown: bool) -> str:
    layers = sorted({layer for r in runs for layer in r["verdicts"]}, key=lambda s: int(s[1:]))
    by = defaultdict(list)
    for r in runs:
        by[(r["config"], r["bits"], r["estimator"])].append(r)
    head = ["net", "activation", "bits", "estimator", "seeds", "epochs", *layers]
    rows = []
    for (config, bits, estimator), rs in sorted(by.items(), key=lambda kv: _order(*kv[0])):
        cells = []
        for layer in layers:
            marks = [MARK[r["verdicts"][layer]] for r in rs if layer in r["verdicts"]]
            cells.append(f"{marks.count('Y')}Y {marks.count('n')}n" + (f" {marks.count('?')}?" if "?" in marks else ""))
        epochs = sorted({r["epochs"] for r in rs})
        rows.append([config[0], config[2], str(bits), estimator, str(len(rs)), "/".join(map(str, epochs)), *cells])
    out = [format_table(head, rows, markdown)]
    exact = {(r["config"], r["seed"]): r for r in runs if r["estimator"] == "exact"}
    agree = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in runs:
        ref = exact.get((r["config"], r["seed"]))
        if r["estimator"] == "exact" or ref is None:
            continue
        for layer, v in r["verdicts"].items():
            cell = agree[(r["config"], r["bits"], r["estimator"])][layer]
            cell[0] += v == ref["verdicts"].get(layer)
            cell[1] += 1
    if agree:
        head = ["net", "activation", "bits", "estimator", *layers]
        rows = [[c[0], c[2], str(bits), est, *(f"{agree[(c, bits, est)][la][0]}/{agree[(c, bits, est)][la][1]}"
                                               for la in layers)]
                for (c, bits, est) in sorted(agree, key=lambda k: _order(*k))]
        out += ["", "same verdict as the exact run of the same seed (seeds agreeing / seeds):",
                format_table(head, rows, markdown)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    print(tables(load(args.run_dirs), args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
