"""The paper's MNIST protocol at full size: each figure a timed part of the real command, projected.

    .venv/bin/python benchmarks/bench_mnist.py [--quick] [--dataset fashion-mnist | --dataset mnist --data-dir DIR]

Default data: the full Fashion-MNIST (Debian's dataset-fashion-mnist, `make fashion-mnist`):
training on its 60,000 training images, MI of every layer on all 70,000 every 2 epochs, the
paper's settings otherwise (Adam 1e-4, batch 256, 8 bit).

1. mnist-bottleneck-2, 20 seeds batched as `ib-brevitas sweep` trains them (2 local workers, one
   batch of 10 seeds each), all files written: the command for E0 and E1 epochs in fresh
   directories; (t1 - t0) / (E1 - E0) is an epoch (half a measurement included) and the paper's
   3000 epochs are t0 + (3000 - E0) epochs of it. Target: <= 15 minutes per seed (20 seeds <= 5 h).
2. The baseline, the same net one seed at a time (`ib-brevitas train`, S = 1 on the same engine),
   projected the same way, for 20 seeds on 2 cores (two runs at a time): the batching's gain.
3. mnist-conv, one seed through Brevitas (`ib-brevitas train`), projected the same way, beside the
   paper code's statement of more than 12 hours per repetition of its conv net.
Wall-clock times on a possibly shared machine (load averages printed before and after); the
projection assumes later epochs cost what these do (the measurement's cost barely depends on the
weights).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS, SEEDS, WORKERS = 3000, 20, 2
PAPER_CONV_H = 12.0  # the paper code's README: "more than 12 hours" per repetition of its conv net


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ib_brevitas", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_mnist: {' '.join(args[:3])} ... failed:\n{done.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def projected(run, e0: int, e1: int) -> tuple[float, float, float]:
    """(t0, seconds per epoch, seconds for the paper's 3000 epochs) of `run(epochs)`."""
    t0, t1 = run(e0), run(e1)
    per = (t1 - t0) / (e1 - e0)
    return t0, per, t0 + (EPOCHS - e0) * per


def _hm(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    return "%d:%02d h" % (h, rest // 60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed epochs")
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    ap.add_argument("--data-dir", type=Path, default=None, help="IDX folder for --dataset mnist")
    args, _ = ap.parse_known_args()
    data = ["--dataset", args.dataset] + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
    e0, e1 = (2, 4) if args.quick else (2, 8)
    print(f"start: {load()}; {args.dataset}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(1000))

        def sweep(epochs: int) -> float:
            return timed(["sweep", "--sweep-dir", f"{tmp}/sweep{next(n)}", "--net", "mnist-bottleneck-2", *data,
                          "--seeds", f"0-{SEEDS - 1}", "--epochs", str(epochs), "--workers", str(WORKERS),
                          "--no-progress"])

        def train(net: str):
            return lambda epochs: timed(["train", "--net", net, *data, "--epochs", str(epochs), "--seed", "0",
                                         "--run-dir", f"{tmp}/train{next(n)}"])

        t0, per, total = projected(sweep, e0, e1)
        seed_min = total / SEEDS / 60
        print(f"1. mnist-bottleneck-2, {SEEDS} seeds batched ({WORKERS} workers): {e0} epochs {t0:.1f} s, "
              f"{per:.2f} s per further epoch -> {EPOCHS} epochs {_hm(total)} for {SEEDS} seeds, {seed_min:.1f} min "
              f"per seed (target <= 15: {'met' if seed_min <= 15 else 'not met'})")
        s0, s_per, s_total = projected(train("mnist-bottleneck-2"), e0, e1)
        alone = s_total * SEEDS / WORKERS  # two single runs at a time on the 2 cores
        print(f"2. baseline, one seed at a time: {e0} epochs {s0:.1f} s, {s_per:.2f} s per further epoch -> "
              f"{EPOCHS} epochs {_hm(s_total)} per seed; {SEEDS} seeds two at a time {_hm(alone)}: batching is "
              f"{alone / total:.1f}x faster")
        c0, c_per, c_total = projected(train("mnist-conv"), 1, 2 if args.quick else 3)
        print(f"3. mnist-conv through Brevitas, one seed: 1 epoch {c0:.1f} s, {c_per:.1f} s per further epoch -> "
              f"{EPOCHS} epochs {_hm(c_total)} (the paper's code: more than {PAPER_CONV_H:.0f} h; "
              f"{PAPER_CONV_H * 3600 / c_total:.2f}x that lower bound)")
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
