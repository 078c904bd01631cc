"""Speed and memory of the exact-MI core, each against the baseline it names.

    .venv/bin/python benchmarks/bench_core.py [--quick]

Prints, in one run:
1. entropy kernel vs np.unique(codes, axis=0, return_counts=True) (the method
   of the paper's code), same value required to 1e-12;
2. one InformationPlane.measure of all SYN layers over 4096 samples vs a bare
   eval forward of the model over the same samples (hooked Brevitas pass, and
   with the fast path's checked codes as `ib-brevitas train` uses them);
3. SYN training time per epoch with and without MI every 5th epoch, recorded
   to mi.jsonl and TensorBoard, the two runs interleaved epoch by epoch
   (measure_async as `ib-brevitas train` uses it, and the synchronous measure);
   the total difference includes any slowdown of training by the background
   thread, but wanders by +-1.5 % from run to run on a shared machine; the
   time the loop waits in the measurement call is the steadier figure;
4. peak memory of a cnv_1w1a probe pass over 10,000 samples vs the packed-code
   size N x width x bits / 8.
Times are medians of repeated runs in this process (time.perf_counter).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch


def median_time(fn, repeat: int) -> float:
    """Median wall time of `repeat` calls of `fn`, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_kernel(quick: bool) -> None:
    from ib_brevitas.functional import entropy, entropy_from_counts

    print("1. entropy kernel vs np.unique(axis=0)")
    print(f"   {'codes':>18} {'ours ms':>9} {'np.unique ms':>13} {'speed-up':>9}  same value")
    rng = np.random.default_rng(0)
    for n, w in [(4096, 10), (70000, 16), (70000, 1024)]:
        # realistic duplicates: a quarter of the rows repeat others
        codes = rng.integers(-128, 128, size=(n, w), dtype=np.int8)
        if w < 32:
            codes = rng.integers(-2, 2, size=(n, w), dtype=np.int8)
        codes[: n // 4] = codes[rng.integers(n // 4, n, size=n // 4)]
        ours = median_time(lambda: entropy(codes), 3 if quick else 7)
        base = median_time(lambda: np.unique(codes, axis=0, return_counts=True), 1 if quick else 3)
        same = abs(entropy(codes) - entropy_from_counts(np.unique(codes, axis=0, return_counts=True)[1])) <= 1e-12
        print(f"   {n:>7} x {w:<5} int8 {ours * 1e3:9.1f} {base * 1e3:13.1f} {base / ours:8.1f}x  {same}")


def _syn_run(act: str, codes_fn: bool = True):
    from ib_brevitas import InformationPlane
    from ib_brevitas.experiments.paper_run import build_run

    run = build_run(dict(seed=0, test_fraction=0.2, activation=act, bits=8, lr=1e-4, batch_size=256))
    if not codes_fn:  # the general path: the hooked Brevitas pass only
        run.plane = InformationPlane(run.model, run.plane.inputs, run.plane.labels, batch_size=run.plane.batch_size)
    return run


def bench_measure(quick: bool) -> None:
    torch.set_num_threads(1)
    print("2. one measurement (all 6 SYN layers, 4096 samples) vs a bare eval forward of the Brevitas model")
    for act in ("tanh", "relu"):
        hooked, fast = _syn_run(act, codes_fn=False), _syn_run(act)
        x = hooked.plane.inputs

        def bare():
            hooked.model.eval()
            with torch.no_grad():
                hooked.model(x)

        r = 5 if quick else 20
        t_bare = median_time(bare, r)
        t_hooked = median_time(lambda: hooked.plane.measure(0), r)
        t_fast = median_time(lambda: fast.plane.measure(0), r)
        print(f"   {act:4}: bare forward {t_bare * 1e3:5.1f} ms; measure, hooked Brevitas pass {t_hooked * 1e3:5.1f} ms "
              f"= {t_hooked / t_bare:.2f}x (target <= 2); with the fast path's checked codes {t_fast * 1e3:4.1f} ms "
              f"= {t_fast / t_bare:.2f}x")


def bench_training(quick: bool) -> None:
    import tempfile

    from torch.utils.tensorboard import SummaryWriter

    from ib_brevitas.experiments.paper_run import train_epoch
    from ib_brevitas.monitor import JsonlSink

    torch.set_num_threads(1)
    epochs = 60 if quick else 400
    print(f"3. SYN training (fast engine) with and without MI every 5th epoch (recorded to mi.jsonl and "
          f"TensorBoard), {epochs} epochs each, interleaved")
    for act in ("tanh", "relu"):
        for mode in ("measure_async", "measure"):
            plain, watched = _syn_run(act), _syn_run(act)
            with tempfile.TemporaryDirectory() as run_dir:
                writer = SummaryWriter(run_dir, flush_secs=10)
                watched.plane.add_sink(JsonlSink(f"{run_dir}/mi.jsonl"))
                watched.plane.log_to(writer)
                measure = getattr(watched.plane, mode)
                watched.plane.measure(0)  # the first probe pass also checks the fast codes against Brevitas
                t_plain = t_watched = t_wait = 0.0
                for e in range(1, epochs + 1):
                    # Alternate who goes first, so neither run always finds the caches warm.
                    for run in (plain, watched) if e % 2 else (watched, plain):
                        t0 = time.perf_counter()
                        train_epoch(run)
                        if run is watched and e % 5 == 0:
                            t1 = time.perf_counter()
                            measure(e)
                            t_wait += time.perf_counter() - t1
                        dt = time.perf_counter() - t0
                        if run is plain:
                            t_plain += dt
                        else:
                            t_watched += dt
                t0 = time.perf_counter()
                watched.plane.flush()
                t_watched += time.perf_counter() - t0
                writer.close()
            wait = t_wait / (epochs // 5)
            print(f"   {act:4} {mode:13}: {t_plain / epochs * 1e3:5.2f} ms/epoch plain, "
                  f"{t_watched / epochs * 1e3:5.2f} with MI/5: +{(t_watched / t_plain - 1) * 100:4.1f} % "
                  f"(target <= 3 %); the loop waits {wait * 1e3:4.2f} ms per measurement "
                  f"= +{wait / (5 * t_plain / epochs) * 100:3.1f} %")


def bench_memory(quick: bool) -> None:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from ib_brevitas import InformationPlane

    n = 1000 if quick else 10_000
    batch = 250
    print(f"4. peak memory of a cnv_1w1a probe pass over {n} samples (batch {batch})")
    torch.manual_seed(0)
    model, _ = model_with_cfg("cnv_1w1a", pretrained=False)
    x = torch.rand(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    plane = InformationPlane(model, x, y, batch_size=batch)
    model.eval()
    with torch.no_grad():  # one bare batch: the "plus one batch" part of the budget
        model(x[:batch])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plane.measure(0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stores = plane.collect()  # for the sizes only, after the peak was read
    packed = sum(s.nbytes for s in stores.values())
    dense = sum(s.n_samples * s.width for s in stores.values())  # one byte per code, unpacked
    print(f"   packed codes {packed / 2**20:.1f} MiB (int8 codes would take {dense / 2**20:.1f} MiB); "
          f"peak growth over one bare batch {max(peak - before, 0) / 2**20:.1f} MiB = "
          f"{max(peak - before, 0) / packed:.2f} x packed (target <= 1.5)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and a smaller memory probe")
    p.add_argument("--only", choices=["kernel", "measure", "training", "memory"], default=None)
    args = p.parse_args()
    sections = (("kernel", bench_kernel), ("measure", bench_measure), ("training", bench_training),
                ("memory", bench_memory))
    for name, fn in sections:
        if args.only in (None, name):
            fn(args.quick)


if __name__ == "__main__":
    main()
