"""Seed-batched training (`experiments.engine.SeedBatch`): time per seed, memory, the SYN study projected.

    .venv/bin/python benchmarks/bench_seeds.py [--quick] [--epochs N] [--repeat R]

1. One training epoch of the SYN protocol (13 steps of 256; every seed its own
   split, initialisation and data order), one thread: the plain Brevitas loop
   of one seed (what the batch falls back to), and SeedBatch at S = 1, 10, 50;
   ms per batch epoch and per seed-epoch.
2. One measurement of every seed at S = 50 (and S = 1): train/test loss and
   accuracy (one batched eval), the codes of all 6 layers on all 4096 samples
   (one batched forward, handed to each seed's InformationPlane as its
   codes_fn) and the MI of the 6 layers per seed (packing and counting; no
   sinks, no files).
3. Memory: peak RSS (VmHWM) of a child process that builds a 50-seed batch, checks it,
   trains 3 epochs and measures every seed, against a child that only imports.
4. The paper's SYN study projected from 1 and 2: tanh + ReLU x 50 seeds x 8000
   epochs, MI every 5 epochs (1601 measurements per run), in one process and on
   2 worker processes (one batch each), as wall time and seeds/hour, next to
   the single-run figure (S = 1, the same formula) and the paper code's
   recorded figure (docs/performance.md: 6 min 42 s / 6 min 47 s per run),
   against the target of 15 minutes on 2 workers.
5. `ib-brevitas sweep` end to end on 1 and on 2 local workers at equal work
   (tanh at 2 learning rates x 10 seeds: one batch per worker), the ratio against >= 1.8x.
Times are wall-clock medians of R repeats; the machine may be shared (load
averages printed before and after).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from bench_core import median_time  # this folder is on sys.path when run as a script

PAPER_RUN_S = {"tanh": 6 * 60 + 42, "relu": 6 * 60 + 47}  # the paper's code, one run, this machine kind
EPOCHS, MEASUREMENTS, SEEDS = 8000, 8000 // 5 + 1, 50


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def _runs(activation: str, n_seeds: int):
    from ib_brevitas.experiments.seeds import syn_seed_batch

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would time the wrong path
        runs = syn_seed_batch(activation, 8, range(n_seeds))
        assert runs.start(), "the batched kernels failed their start-up check here"
    return runs


def bench_epochs(activation: str, repeat: int) -> dict[int, float]:
    """ms per batch epoch for S = 1, 10, 50 (and the plain Brevitas loop as S = 'brevitas')."""
    from ib_brevitas.experiments.engine_check import brevitas_epoch

    out = {}
    runs = _runs(activation, 1)
    m = runs.batch.models[0]
    opt = torch.optim.Adam(m.parameters(), lr=1e-4, foreach=True)
    g = runs.shuffles[0]

    def plain():
        order = torch.randperm(runs.x_train.shape[1], generator=g)
        brevitas_epoch(m, opt, runs.x_train[0][order], runs.y_train[0][order], 256)

    out["brevitas"] = median_time(plain, max(3, repeat // 4)) * 1e3
    for n in (1, 10, SEEDS):
        runs = _runs(activation, n)
        out[n] = median_time(runs.train_epoch, repeat) * 1e3
    return out


def bench_measure(activation: str, n_seeds: int, repeat: int) -> dict[str, float]:
    """ms per measurement of all seeds: metrics, batched codes, the monitor (MI of 6 layers) per seed."""
    from ib_brevitas.monitor import InformationPlane

    runs = _runs(activation, n_seeds)
    runs.train_epoch()
    # As batch_loop builds them: the engine's codes and scales, checked against Brevitas on the first pass.
    planes = [InformationPlane(m, runs.probe_x, runs.probe_y, batch_size=len(runs.probe_x),
                               codes_fn=runs.batch.codes_fn(s), scales_fn=lambda s=s: runs.batch.scales(s))
              for s, m in enumerate(runs.batch.models)]
    epoch = [0]

    def measure():
        runs.batch._codes_cache = None  # as after a training epoch: one batched forward per measurement
        epoch[0] += 1
        for p in planes:
            p.measure(epoch[0])

    out = {"metrics": median_time(runs.evaluate, repeat) * 1e3,
           "codes": median_time(lambda: runs.batch.codes(runs.probe_x), repeat) * 1e3,
           "monitor": median_time(measure, repeat) * 1e3}  # the warm-up call holds the hooked check
    out["monitor"] -= out["codes"]  # the planes' own work: packing, counting, records
    assert all(p.codes_fn is not None and p.scales_fn is not None for p in planes), \
        "codes_fn or scales_fn was dropped: it disagreed with Brevitas"
    for p in planes:
        p.close()
    out["total"] = out["metrics"] + out["codes"] + out["monitor"]
    return out


def memory_child() -> None:
    if sys.argv[-1] == "baseline":
        import ib_brevitas.experiments.seeds  # noqa: F401
        import ib_brevitas.monitor  # noqa: F401
    else:
        bench_measure("relu", SEEDS, 3)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak
    with open("/proc/self/status") as f:
        print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024)


def bench_memory() -> tuple[float, float]:
    def peak(kind: str) -> float:
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind], check=True,
                             capture_output=True, text=True).stdout
        return float(out.split()[-1])

    return peak("batch"), peak("baseline")


def bench_workers(quick: bool) -> None:
    """`ib-brevitas sweep` end to end (fresh processes, all files written) on 1 and on 2 local workers,
    equal work: two configurations of equal cost (tanh at lr 1e-4 and 2e-4) x 10 seeds, one batch each."""
    import tempfile
    import time

    epochs = 100 if quick else 2000
    grid = ["--activation", "tanh", "--lr", "1e-4", "2e-4", "--seeds", "0-9", "--epochs", str(epochs), "--mi-every", "5",
            "--no-progress"]
    walls, cores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cpu0 = _busy_seconds()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ib_brevitas", "sweep", "--sweep-dir", f"{tmp}/w{workers}",
                            "--workers", str(workers), *grid], check=True, capture_output=True, text=True)
            walls[workers] = time.perf_counter() - t0
            cores[workers] = (_busy_seconds() - cpu0) / walls[workers]
        same = all((Path(tmp) / "w1" / d / "mi.jsonl").read_bytes() == (Path(tmp) / "w2" / d / "mi.jsonl").read_bytes()
                   for d in sorted(p.name for p in (Path(tmp) / "w1").iterdir() if p.is_dir()))
    ratio = walls[1] / walls[2]
    print(f"5. ib-brevitas sweep, tanh at 2 learning rates x 10 seeds x {epochs} epochs, MI every 5 (20 runs, all files): "
          f"1 worker {walls[1]:.1f} s, 2 workers {walls[2]:.1f} s: {ratio:.2f}x (target >= 1.8x; "
          f"{'met' if ratio >= 1.8 else 'not met'}); machine cores busy on average {cores[1]:.2f} / {cores[2]:.2f} "
          f"(of {os.cpu_count()}); every mi.jsonl equal: {same}")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (Linux /proc/stat; workers are grandchildren)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _hms(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    return "%d:%02d:%02d" % (h, *divmod(rest, 60))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None, help="timed epochs / measurements (default 15; quick 4)")
    ap.add_argument("--no-sweep", action="store_true", help="skip section 5 (ib-brevitas sweep, 1 vs 2 workers)")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    torch.set_num_threads(1)
    if args.memory_child:
        memory_child()
        return 0
    repeat = args.repeat or (4 if args.quick else 15)
    print(f"start: {load()}; torch {torch.__version__}, 1 thread")
    from ib_brevitas.formatting import format_table

    epochs = {a: bench_epochs(a, repeat) for a in ("tanh", "relu")}
    rows = []
    for a, t in epochs.items():
        rows.append([a, "Brevitas loop, 1 seed", f"{t['brevitas']:.1f}", f"{t['brevitas']:.2f}", "1.00"])
        for n in (1, 10, SEEDS):
            rows.append([a, f"SeedBatch S = {n}", f"{t[n]:.1f}", f"{t[n] / n:.2f}", f"{t['brevitas'] / (t[n] / n):.1f}"])
    print("1. one training epoch (13 steps of 256)")
    print(format_table(["act", "engine", "ms/epoch", "ms per seed-epoch", "x Brevitas"], rows))

    meas = {(a, n): bench_measure(a, n, repeat) for a in ("tanh", "relu") for n in (1, SEEDS)}
    print("2. one measurement of every seed (ms): train/test loss and accuracy, codes of 6 layers on 4096 samples, "
          "the monitor per seed (packing, MI, records; the engine's scales)")
    print(format_table(["act", "S", "metrics", "codes", "monitor", "total", "per seed"],
                       [[a, str(n), f"{t['metrics']:.1f}", f"{t['codes']:.1f}", f"{t['monitor']:.1f}",
                         f"{t['total']:.1f}", f"{t['total'] / n:.2f}"]
                        for (a, n), t in meas.items()]))

    batch_mb, base_mb = bench_memory()
    print(f"3. memory: peak RSS {batch_mb:.0f} MB for a 50-seed ReLU batch (checked, trained, measured), "
          f"{base_mb:.0f} MB for the imports alone: the batch adds {batch_mb - base_mb:.0f} MB (target < 2048)")

    batched = {a: (EPOCHS * epochs[a][SEEDS] + MEASUREMENTS * meas[(a, SEEDS)]["total"]) / 1e3 for a in ("tanh", "relu")}
    single = {a: SEEDS * (EPOCHS * epochs[a][1] + MEASUREMENTS * meas[(a, 1)]["total"]) / 1e3 for a in ("tanh", "relu")}
    paper = {a: SEEDS * t for a, t in PAPER_RUN_S.items()}
    rows = []
    for name, per in (("SeedBatch S = 50", batched), ("single runs (S = 1)", single), ("paper's code (recorded)", paper)):
        one, two = sum(per.values()), max(per.values())
        rows.append([name, _hms(one), _hms(two), f"{2 * SEEDS / (one / 3600):.0f}", f"{2 * SEEDS / (two / 3600):.0f}"])
    print("4. the SYN study projected: tanh + ReLU x 50 seeds x 8000 epochs, MI every 5 (training + measurements; "
          "no file writes)")
    print(format_table(["engine", "1 process", "2 workers", "seeds/h (1)", "seeds/h (2)"], rows))
    two = max(batched.values())
    print(f"   target: the study <= 15:00 on 2 workers; projected {_hms(two)} ({'met' if two <= 900 else 'not met'}; "
          f"{two / 900:.2f}x the target)")
    if not args.no_sweep:
        bench_workers(args.quick)
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
