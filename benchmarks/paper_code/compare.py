"""Our SYN runs next to the paper code's own: per-layer MI curves, information planes, ReLU ranges.

    .venv/bin/python benchmarks/paper_code/compare.py --paper-out ../paper-out \
        --ours runs/paper-syn [--img docs/img] [--markdown]

`--paper-out` holds what benchmarks/paper_code/run_paper_code.sh wrote (the paper's layout:
SYN-Tanh/8/mi/quantized_layer_8_bits/001.txt ..., qrange/001.csv); `--ours` a sweep directory
(or run directories) with syn-<act>-8b-s<k> runs. Only runs that reached `--epochs` are used
unless `--partial` (then every series is cut to the epochs all its runs have).

Epochs are put on one axis: ours are measured after e epochs (0 = before training), the paper
code's callback after epoch index e, i.e. after e + 1 epochs; both are shown as "epochs
trained". Writes paper-code-mi-{tanh,relu}.png, paper-code-plane-{tanh,relu}.png and
paper-code-relu-range.png into `--img`, and prints per layer the levels, drops and phase
verdicts (`ib_brevitas.phases.detect`, default thresholds, on both codes' series alike).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from ib_brevitas.formatting import format_table
from ib_brevitas.phases import detect
from ib_brevitas.rundir import RunDir
from ib_brevitas.seedmean import mean_sd

LAYERS = ("T1", "T2", "T3", "T4", "T5", "T6")
N_SAMPLES = 4096
ACTS = {"tanh": "SYN-Tanh", "relu": "SYN-ReLU"}
MARK_EPOCHS = (1, 100, 300, 1000, 3000, 8000)


def die(msg: str) -> None:
    sys.exit(f"compare.py: error: {msg}")


# ---------------------------------------------------------------- reading
def paper_runs(paper_out: str, act: str, bits: int = 8) -> list[dict]:
    """Each repetition: {"name", "mi": {layer: (epochs, ixt, ity)}, "acc": (epochs, train, test), "qrange"}."""
    base = os.path.join(paper_out, ACTS[act], str(bits))
    files = sorted(glob.glob(os.path.join(base, "mi", f"quantized_layer_{bits}_bits", "[0-9][0-9][0-9].txt")))
    runs = []
    for f in files:
        rep = os.path.basename(f)[:3]
        a = np.loadtxt(f, ndmin=2)
        if a.shape[1] != 1 + 2 * len(LAYERS):
            die(f"{f}: expected {1 + 2 * len(LAYERS)} columns (epoch, then I(X;T), I(T;Y) per layer), got {a.shape[1]}")
        e = a[:, 0] + 1.0  # the callback's epoch index e is measured after e + 1 epochs
        mi = {layer: (e, a[:, 1 + 2 * i], a[:, 2 + 2 * i]) for i, layer in enumerate(LAYERS)}
        acc = None
        acc_file = os.path.join(base, "accuracy", rep + ".csv")
        if os.path.exists(acc_file):
            c = np.genfromtxt(acc_file, delimiter=",", names=True)
            acc = (c["epoch"] + 1.0, c["train_acc"], c["test_acc"])
        qr = None
        q_file = os.path.join(base, "qrange", rep + ".csv")
        if os.path.exists(q_file):
            q = np.genfromtxt(q_file, delimiter=",", names=True)
            qr = {"epoch": q["epoch"] + 1.0}
            for i, layer in enumerate(LAYERS[:-1]):
                for end in ("min", "max"):
                    col = f"layer_{i + 1}_post_activation_{end}"
                    if col in q.dtype.names:
                        qr[(layer, end)] = q[col]
        runs.append({"name": f"paper rep {rep}", "mi": mi, "acc": acc, "qrange": qr})
    return runs


def our_runs(paths: list[str], act: str, bits: int = 8) -> list[dict]:
    dirs = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "config.json")):
            dirs.append(p)
        else:
            dirs += sorted(glob.glob(os.path.join(p, f"syn-{act}-{bits}b-s*")))
    runs = []
    for d in dirs:
        rd = RunDir(d)
        cfg = rd.read_config()
        if cfg.get("activation") != act or cfg.get("bits") != bits or cfg.get("net", "syn") != "syn":
            continue
        recs = [r for r in rd.read_records() if r.estimator == "exact"]
        mi, scale = {}, {}
        for layer in LAYERS:
            rs = sorted((r for r in recs if r.layer == layer), key=lambda r: r.epoch)
            if not rs:
                die(f"{d}: no exact records of layer {layer}")
            e = np.array([r.epoch for r in rs], float)
            mi[layer] = (e, np.array([r.i_xt for r in rs]), np.array([r.i_ty for r in rs]))
            scale[layer] = np.array([np.nan if r.scale is None else r.scale for r in rs])
        m = [row for row in rd.read_metrics() if row.get("train_acc") is not None]
        acc = (np.array([row["epoch"] for row in m], float), np.array([row["train_acc"] for row in m]),
               np.array([row["test_acc"] for row in m])) if m else None
        qr = {"epoch": mi["T1"][0]}
        for layer in LAYERS[:-1]:
            qr[(layer, "max")] = scale[layer] * (2 ** bits - 1)  # codes 0..2^k-1: range [0, scale (2^k-1)]
            qr[(layer, "min")] = np.zeros_like(scale[layer])
        runs.append({"name": os.path.basename(d.rstrip("/")), "mi": mi, "acc": acc, "qrange": qr,
                     "seed": cfg.get("seed")})
    return runs


def select(runs: list[dict], epochs: int, partial: bool, what: str) -> list[dict]:
    """Finished runs only (or, with partial, every run cut to the epochs all of them have)."""
    last = [r["mi"]["T1"][0][-1] for r in runs]
    if not partial:
        keep = [r for r, e in zip(runs, last) if e >= epochs - 5]
        return keep
    if not runs:
        return runs
    end = min(last)
    for r in runs:
        r["mi"] = {k: tuple(a[e <= end] for a in (e, x, y)) for k, (e, x, y) in r["mi"].items()}
    print(f"{what}: cut to epoch {end:g} (the shortest of {len(runs)} runs)")
    return runs


# ---------------------------------------------------------------- numbers
def at(e: np.ndarray, v: np.ndarray, epoch: float) -> float:
    """Value at the measurement nearest to `epoch` (nan past the end)."""
    if epoch > e[-1] + 5:
        return float("nan")
    return float(v[np.argmin(np.abs(e - epoch))])


def pm(vals: list[float]) -> str:
    v = np.array([x for x in vals if np.isfinite(x)])
    if not v.size:
        return "-"
    return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if v.size > 1 else "")


def verdicts(runs: list[dict], layer: str) -> tuple[str, str, list[float]]:
    fit, comp, drops = [0, 0, 0], [0, 0, 0], []
    for r in runs:
        e, x, y = r["mi"][layer]
        v = detect(e, x, y, layer=layer, n_samples=N_SAMPLES)
        fit[0 if v.fitting else (2 if v.fitting is None else 1)] += 1
        comp[0 if v.compression else (2 if v.compression is None else 1)] += 1
        drops.append(v.drop_bits)
    f = f"{fit[0]}/{fit[0] + fit[1]}" + (f" ({fit[2]} n/o)" if fit[2] else "")
    c = f"{comp[0]}/{comp[0] + comp[1]}" + (f" ({comp[2]} ?)" if comp[2] else "")
    return f, c, drops


def table(act: str, codes: dict[str, list[dict]], markdown: bool) -> str:
    head = ["layer", "code", "runs"] + [f"I(X;T) @{m}" for m in MARK_EPOCHS] + ["I(T;Y) @1", "I(T;Y) end",
                                                                                "fitting", "compression",
                                                                                "drop from peak"]
    rows = []
    for layer in LAYERS:
        for code, runs in codes.items():
            if not runs:
                continue
            cells = [layer, code, str(len(runs))]
            for m in MARK_EPOCHS:
                cells.append(pm([at(r["mi"][layer][0], r["mi"][layer][1], m) for r in runs]))
            cells.append(pm([r["mi"][layer][2][0] for r in runs]))
            cells.append(pm([r["mi"][layer][2][-1] for r in runs]))
            f, c, drops = verdicts(runs, layer)
            cells += [f, c, pm(drops)]
            rows.append(cells)
    return f"{act}, 8 bit: mean ± s.d. over runs (bits)\n" + format_table(head, rows, markdown=markdown)


def accuracy_line(act: str, codes: dict[str, list[dict]]) -> str:
    parts = []
    for code, runs in codes.items():
        acc = [r["acc"] for r in runs if r["acc"] is not None]
        if acc:
            parts.append(f"{code}: train {pm([a[1][-1] for a in acc])}, test {pm([a[2][-1] for a in acc])} "
                         f"(epoch {acc[0][0][-1]:g}, {len(acc)} runs)")
    return f"final accuracy, {act}: " + "; ".join(parts)


def range_table(codes: dict[str, list[dict]], markdown: bool) -> str:
    head = (["layer", "code"] + [f"max @{m}" for m in MARK_EPOCHS] + ["min @1", "min @300"]
            + ["I(X;T) peak epoch (median)", "width end / at peak (median)", "I(X;T) drop peak->end (median)"])
    rows = []
    for layer in LAYERS[:-1]:
        for code, runs in codes.items():
            runs = [r for r in runs if r["qrange"] is not None and (layer, "max") in r["qrange"]]
            qs = [r["qrange"] for r in runs]
            if not qs:
                continue
            cells = [layer, code] + [pm([at(q["epoch"], q[(layer, "max")], m) for q in qs]) for m in MARK_EPOCHS]
            cells += [pm([at(q["epoch"], q[(layer, "min")], m) for q in qs]) for m in (1, 300)]
            peaks, growth, drops = [], [], []
            for r, q in zip(runs, qs):  # how the grid's width changed after the layer's I(X;T) peak
                e, x, y = r["mi"][layer]
                v = detect(e, x, y, layer=layer, n_samples=N_SAMPLES)
                width = q[(layer, "max")] - q[(layer, "min")]
                peaks.append(v.peak_epoch)
                growth.append(width[-1] / at(q["epoch"], width, v.peak_epoch))
                drops.append(v.drop_bits)
            cells += [f"{np.median(peaks):g}", f"{np.median(growth):.2f}x", f"{np.median(drops):.2f}"]
            rows.append(cells)
    return ("ReLU, 8 bit: activation-quantizer range used at measurement (paper: TF-MOT moving-average "
            "min/max; ours: running max = scale x 255, min 0)\n" + format_table(head, rows, markdown=markdown))


# ---------------------------------------------------------------- figures
def _mean(runs: list[dict]):
    return mean_sd([{layer: r["mi"][layer] for layer in LAYERS} for r in runs])


def fig_mi(act: str, codes: dict[str, list[dict]], path: str, note: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(LAYERS), figsize=(3.0 * len(LAYERS), 5.6), sharex=True)
    colours = {"paper code": "tab:red", "ours": "tab:blue"}
    for code, runs in codes.items():
        if not runs:
            continue
        ms = _mean(runs)
        for j, layer in enumerate(LAYERS):
            s = ms[layer]
            e = np.maximum(s.epoch, 1)
            for i, (m, sd) in enumerate(((s.i_xt, s.sd_xt), (s.i_ty, s.sd_ty))):
                ax = axes[i, j]
                ax.plot(e, m, color=colours[code], lw=1.2, label=f"{code} ({len(runs)})")
                ax.fill_between(e, m - sd, m + sd, color=colours[code], alpha=0.2, lw=0)
    for j, layer in enumerate(LAYERS):
        axes[0, j].set_title(layer)
        axes[1, j].set_xlabel("epochs trained")
        for i in range(2):
            axes[i, j].set_xscale("log")
            axes[i, j].grid(alpha=0.3)
    axes[0, 0].set_ylabel("I(X;T) [bits]")
    axes[1, 0].set_ylabel("I(T;Y) [bits]")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"SYN {act}, 8 bit: the paper's code vs ours, mean ± s.d. over runs. {note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_plane(act: str, codes: dict[str, list[dict]], path: str, note: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True, sharey=True)
    norm = LogNorm(1, 8000)
    sc = None
    for ax, (code, runs) in zip(axes, codes.items()):
        ax.set_title(f"{code}: {len(runs)} runs", fontsize=10)
        if not runs:
            continue
        ms = _mean(runs)
        for layer in LAYERS:
            s = ms[layer]
            for r in runs:  # every run faintly, the mean coloured by epoch
                ax.plot(r["mi"][layer][1], r["mi"][layer][2], color="0.75", lw=0.4, zorder=1)
            sc = ax.scatter(s.i_xt, s.i_ty, c=np.maximum(s.epoch, 1), cmap="viridis", norm=norm, s=6, zorder=2)
            ax.annotate(layer, (s.i_xt[-1], s.i_ty[-1]), fontsize=8, xytext=(3, -10), textcoords="offset points")
        ax.set_xlabel("I(X;T) [bits]")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("I(T;Y) [bits]")
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="epochs trained")
    fig.suptitle(f"SYN {act}, 8 bit, information plane: points = mean over runs coloured by epoch, grey = each run."
                 f" {note}", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_range(codes: dict[str, list[dict]], path: str, note: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(15, 5.6), sharex=True)
    colours = {"paper code": "tab:red", "ours": "tab:blue"}
    for code, runs in codes.items():
        qs = [r for r in runs if r["qrange"] is not None]
        if not qs:
            continue
        for j, layer in enumerate(LAYERS[:-1]):
            if (layer, "max") not in qs[0]["qrange"]:
                continue
            n = min(len(r["qrange"]["epoch"]) for r in qs)
            e = np.maximum(qs[0]["qrange"]["epoch"][:n], 1)
            hi = np.array([r["qrange"][(layer, "max")][:n] for r in qs])
            lo = np.array([r["qrange"][(layer, "min")][:n] for r in qs])
            ax = axes[0, j]
            ax.plot(e, hi.mean(0), color=colours[code], label=f"{code} max ({len(qs)})")
            ax.fill_between(e, hi.min(0), hi.max(0), color=colours[code], alpha=0.2, lw=0)
            if code == "paper code":
                ax.plot(e, lo.mean(0), color=colours[code], ls="--", label=f"{code} min")
            # the MI the grid allows: I(X;T) of the same layer, for reading the two together
            x = np.array([r["mi"][layer][1][: len(e)] for r in qs if len(r["mi"][layer][1]) >= len(e)])
            if len(x):
                axes[1, j].plot(e[: x.shape[1]], x.mean(0), color=colours[code], label=code)
            ax.set_title(f"{layer}: quantizer range [min, max]")
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            axes[1, j].set_title(f"{layer}: I(X;T), mean")
            axes[1, j].set_xlabel("epochs trained")
            axes[1, j].set_xscale("log")
            axes[1, j].grid(alpha=0.3)
    axes[0, 0].set_ylabel("activation range")
    axes[1, 0].set_ylabel("I(X;T) [bits]")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"SYN ReLU, 8 bit: the layer quantizer's range (band: min-max over runs) and I(X;T). {note}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper-out", required=True, help="output dir of run_paper_code.sh")
    ap.add_argument("--ours", nargs="+", required=True, help="sweep dir(s) or run dirs of our SYN runs")
    ap.add_argument("--img", default="docs/img", help="where the PNGs go (default docs/img)")
    ap.add_argument("--epochs", type=int, default=8000, help="a finished run's length (default 8000)")
    ap.add_argument("--partial", action="store_true", help="use unfinished runs too, cut to common epochs")
    ap.add_argument("--max-ours", type=int, default=None, help="use at most this many of our seeds")
    ap.add_argument("--note", default="", help="text for the figure titles (e.g. the machine load)")
    ap.add_argument("--markdown", action="store_true", help="tables in Markdown")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.paper_out):
        die(f"--paper-out {a.paper_out}: no such directory")
    for p in a.ours:
        if not os.path.isdir(p):
            die(f"--ours {p}: no such directory")
    os.makedirs(a.img, exist_ok=True)
    relu_codes = None
    for act in ACTS:
        paper = select(paper_runs(a.paper_out, act), a.epochs, a.partial, f"paper code {act}")
        ours = our_runs(a.ours, act)
        ours.sort(key=lambda r: (r.get("seed") is None, r.get("seed")))
        ours = select(ours, a.epochs, a.partial, f"ours {act}")[: a.max_ours]
        if not paper and not ours:
            print(f"{act}: no runs on either side, skipped")
            continue
        codes = {"paper code": paper, "ours": ours}
        print(table(act, codes, a.markdown), "\n")
        print(accuracy_line(act, codes), "\n")
        fig_mi(act, codes, os.path.join(a.img, f"paper-code-mi-{act}.png"), a.note)
        fig_plane(act, codes, os.path.join(a.img, f"paper-code-plane-{act}.png"), a.note)
        if act == "relu":
            relu_codes = codes
    if relu_codes is not None:
        print(range_table(relu_codes, a.markdown))
        fig_range(relu_codes, os.path.join(a.img, "paper-code-relu-range.png"), a.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
