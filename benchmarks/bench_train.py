"""`ib-brevitas train` end to end, next to the paper code's timings on this kind of machine.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--epochs N] [--repeat R]

1. Whole runs of the paper's SYN protocol (MI of every layer on all 4096 samples
   every 5th epoch, train/test accuracy logged, TensorBoard, checkpoints), as a
   user starts them: `python -m ib_brevitas train ...` in a fresh process, for
   tanh/ReLU at 8 and 4 bits. Each configuration runs N epochs (default 800)
   and 5 epochs; the 5-epoch run is the fixed cost (imports, set-up, self-check,
   summary), so a full run is projected as
       T(8000) = T(5) + 7995 x (T(N) - T(5)) / (N - 5)
   and printed next to the anchor: the paper's TensorFlow code took 6 min 42 s
   (tanh) and 6 min 47 s (ReLU), peak RSS 1.6 GB; the target is <= the anchor,
   the goal half of it. Peak RSS is the child's (wait4), with its growth per
   1000 epochs between the 5- and the N-epoch run.
2. Per training epoch (13 steps of 256): the plain Brevitas loop that
   `ib-brevitas train` ran before (model.train(), zero_grad, Brevitas forward,
   autograd backward, default Adam) against today's `train_epoch` (exact fast
   path), in this process; anchor 15 ms (TF, without its validation pass).
3. Per measurement: capture (the probe pass over 4096 samples: the fast path's
   codes, checked by the monitor against its hooked Brevitas pass on the first
   and every 100th pass, which the median leaves out) and MI (packing,
   counting, records, no sinks); anchor 28 ms capture + 45 ms MI.
4. What each change gives, before against after in this process (tanh and
   ReLU, 8 bit): the training step, Adam, the batch gather, the accuracy
   pass, and the checkpoint written at every measurement.
--before DIR also times an older checkout of the package the same way (the
'before' of docs/performance.md). Times are wall-clock medians of R repeats
(--quick: 200 epochs, R = 1).
The machine may be shared: load averages are printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_core import median_time  # this folder is on sys.path when run as a script

ANCHOR_RUN_S = {"tanh": 6 * 60 + 42, "relu": 6 * 60 + 47}
ANCHOR_RSS_MB = 1600
ANCHOR_EPOCH_MS = 15  # 33 with its validation pass
ANCHOR_CAPTURE_MS, ANCHOR_MI_MS = 28, 45
FULL = 8000
SHORT = 5
CONFIGS = [("tanh", 8), ("relu", 8), ("tanh", 4), ("relu", 4)]
REPO = Path(__file__).resolve().parents[1]


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def run_cli(activation: str, bits: int, epochs: int, tree: Path = REPO) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `ib-brevitas train` process (package from `tree`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ib_brevitas", "train", "--activation", activation, "--bits", str(bits),
               "--epochs", str(epochs), "--seed", "0", "--no-progress", "--run-dir", str(Path(tmp) / "run")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return wall, usage.ru_maxrss / 1024


def bench_runs(epochs: int, repeat: int, before: Path | None) -> None:
    print(f"1. `ib-brevitas train`, SYN protocol: {epochs} and {SHORT} epochs timed, {FULL} projected "
          f"(median of {repeat}; {load()})")
    print(f"   {'config':17} {'T(5) s':>7} {'T(N) s':>7} {'ms/epoch':>9} {'8000 ep.':>9} {'anchor':>7} "
          f"{'x faster':>8} {'goal':>6} {'peak RSS':>9} {'+/1000 ep.':>10}")
    configs = [(a, b, REPO, epochs, "") for a, b in CONFIGS]
    if before is not None:  # the older tree is slow: a tenth of the epochs
        configs += [(a, 8, before, max(SHORT + 20, epochs // 10), " before") for a in ("tanh", "relu")]
    for activation, bits, tree, epochs, tag in configs:
        short = [run_cli(activation, bits, SHORT, tree) for _ in range(repeat)]
        full = [run_cli(activation, bits, epochs, tree) for _ in range(repeat)]
        t_short = statistics.median(t for t, _ in short)
        t_full = statistics.median(t for t, _ in full)
        per_epoch = (t_full - t_short) / (epochs - SHORT)
        projected = t_short + (FULL - SHORT) * per_epoch
        rss_short, rss_full = max(r for _, r in short), max(r for _, r in full)
        growth = (rss_full - rss_short) / (epochs - SHORT) * 1000
        anchor = ANCHOR_RUN_S[activation]
        verdict = "met" if projected <= anchor / 2 else ("target met" if projected <= anchor else "MISSED")
        print(f"   {activation + ' ' + str(bits) + ' bit' + tag:17} {t_short:7.1f} {t_full:7.1f} {per_epoch * 1e3:9.1f} "
              f"{_mmss(projected):>9} {_mmss(anchor):>7} {anchor / projected:7.2f}x {verdict:>6} "
              f"{rss_full:7.0f} MB {growth:8.1f} MB")
    print(f"   anchor peak RSS {ANCHOR_RSS_MB} MB; 'goal': <= half the anchor time ({load()})")


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def bench_epoch(repeat_epochs: int) -> None:
    from ib_brevitas.experiments.models import syn_loss
    from ib_brevitas.experiments.paper_run import build_run, train_epoch

    torch.set_num_threads(1)
    print(f"2. one training epoch (13 steps of 256), median of {repeat_epochs} epochs ({load()})")
    for activation, bits in CONFIGS:
        cfg = dict(seed=0, test_fraction=0.2, activation=activation, bits=bits, lr=1e-4, batch_size=256)
        plain = build_run(dict(cfg, engine="brevitas"))
        plain.optimizer = torch.optim.Adam(plain.model.parameters(), lr=1e-4)  # torch's default Adam

        def plain_epoch(run=plain):  # the loop `ib-brevitas train` ran before
            run.model.train()
            n = run.x_train.shape[0]
            order = torch.randperm(n, generator=run.shuffle)
            for start in range(0, n, 256):
                idx = order[start : start + 256]
                run.optimizer.zero_grad(set_to_none=True)
                loss = syn_loss(run.model(run.x_train[idx]), run.y_train[idx])
                loss.backward()
                run.optimizer.step()
                loss.item()

        fast = build_run(cfg)
        t_plain = median_time(plain_epoch, max(3, repeat_epochs // 4))
        t_fast = median_time(lambda: train_epoch(fast), repeat_epochs)
        print(f"   {activation:4} {bits} bit: plain Brevitas loop {t_plain * 1e3:6.1f} ms, fast path "
              f"{t_fast * 1e3:5.1f} ms ({t_plain / t_fast:4.1f}x); anchor {ANCHOR_EPOCH_MS} ms: "
              f"{ANCHOR_EPOCH_MS / 1e3 / t_fast:4.2f}x")


def bench_measure(repeat: int) -> None:
    from ib_brevitas.experiments.paper_run import build_run

    print(f"3. one measurement (6 layers, 4096 samples), median of {repeat} ({load()})")
    for activation, bits in CONFIGS[:2]:
        run = build_run(dict(seed=0, test_fraction=0.2, activation=activation, bits=bits, lr=1e-4, batch_size=256))
        plane, captures, counts = run.plane, [], []
        for _ in range(repeat + 1):  # measure_async returns after the probe pass; flush waits for the counting
            t0 = time.perf_counter()
            plane.measure_async(0)
            t1 = time.perf_counter()
            plane.flush()
            captures.append(t1 - t0)
            counts.append(time.perf_counter() - t1)
        t_capture = statistics.median(captures[1:])
        t_mi = statistics.median(counts[1:])
        t_measure = t_capture + t_mi
        print(f"   {activation:4} {bits} bit: capture {t_capture * 1e3:5.1f} ms (anchor {ANCHOR_CAPTURE_MS}), "
              f"MI {t_mi * 1e3:5.1f} ms (anchor {ANCHOR_MI_MS}), together "
              f"{(ANCHOR_CAPTURE_MS + ANCHOR_MI_MS) / 1e3 / t_measure:4.1f}x faster")


def bench_changes(repeat: int) -> None:
    import copy

    from ib_brevitas.experiments import fastpath, kernels
    from ib_brevitas.experiments.models import syn_loss
    from ib_brevitas.experiments.paper_run import build_run, checkpoint_state, evaluate
    from ib_brevitas.rundir import RunDir
    from ib_brevitas.state import observation

    torch.set_num_threads(1)
    print(f"4. each change, before -> after, median of {repeat} ({load()})")
    for activation in ("tanh", "relu"):
        run = build_run(dict(seed=0, test_fraction=0.2, activation=activation, bits=8, lr=1e-4, batch_size=256))
        model, fast = run.model, run.fast
        xb, yb = run.x_train[:256], run.y_train[:256]
        twin = copy.deepcopy(model)
        slow = fastpath.SynFastPath(twin)
        weights, biases, running, _ = slow._stacks()

        def brevitas_step():
            model.train()
            for p in model.parameters():
                p.grad = None
            syn_loss(model(xb), yb).backward()

        def python_kernel():  # the same kernel, not compiled
            with torch.no_grad():
                kernels.train_step(xb.unsqueeze(0), yb.unsqueeze(0), weights, biases, slow.relu, running, False,
                                   0.1, slow.consts, 1e-7)

        rows = [("training step (forward + backward)", median_time(brevitas_step, repeat * 10),
                 median_time(python_kernel, repeat * 10), median_time(lambda: fast.train_step(xb, yb), repeat * 10))]
        default_adam = torch.optim.Adam(twin.parameters(), lr=1e-4)
        slow.train_step(xb, yb)
        default_adam.step()
        fast.train_step(xb, yb)
        fastpath.adam_step(run.optimizer)
        rows.append(("Adam step (12 tensors)", median_time(default_adam.step, repeat * 10), None,
                     median_time(lambda: fastpath.adam_step(run.optimizer), repeat * 10)))
        order = torch.randperm(run.x_train.shape[0])

        def gather_per_batch():
            for start in range(0, len(order), 256):
                idx = order[start : start + 256]
                run.x_train[idx], run.y_train[idx]

        def gather_per_epoch():
            x, y = run.x_train[order], run.y_train[order]
            for start in range(0, len(order), 256):
                x[start : start + 256], y[start : start + 256]

        rows.append(("batch gathers per epoch", median_time(gather_per_batch, repeat * 5), None,
                     median_time(gather_per_epoch, repeat * 5)))
        run.fast = None

        def brevitas_eval():
            with observation(model):
                for x, y in ((run.x_train, run.y_train), (run.x_test, run.y_test)):
                    probs = model(x)
                    float(syn_loss(probs, y)), float((probs.argmax(dim=1) == y).float().mean())

        t_eval_before = median_time(brevitas_eval, repeat)
        run.fast = fast
        rows.append(("train/test accuracy pass", t_eval_before, None, median_time(lambda: evaluate(run), repeat)))
        with tempfile.TemporaryDirectory() as tmp:
            t_ckpt = median_time(lambda: RunDir(tmp).save_checkpoint(checkpoint_state(run, 0)), repeat)
        rows.append(("checkpoint (save + fsync) per measurement", t_ckpt, None, 0.0))
        print(f"   {activation:4} {'(ms)':42} {'before':>7} {'python':>7} {'after':>7}")
        for name, before, middle, after in rows:
            mid = f"{middle * 1e3:7.2f}" if middle is not None else f"{'':7}"
            print(f"        {name:42} {before * 1e3:7.2f} {mid} {after * 1e3:7.2f}")
    print("   ('python': the fast path's kernel without TorchScript, the fallback; a checkpoint is now"
          " written every --checkpoint-secs, default 60 s, and at the end)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 epochs per run, one repeat")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the long run (default 800; --quick 200)")
    p.add_argument("--repeat", type=int, default=None, help="runs per configuration (default 3; --quick 1)")
    p.add_argument("--only", choices=["runs", "epoch", "measure", "changes"], default=None)
    p.add_argument("--before", type=Path, default=None,
                   help="also time the package in this directory (an older checkout: "
                        "git archive <commit> ib_brevitas | tar -x -C DIR), tanh/ReLU 8 bit, a tenth of the epochs")
    args = p.parse_args()
    epochs = args.epochs or (200 if args.quick else 800)
    repeat = args.repeat or (1 if args.quick else 3)
    if epochs <= SHORT:
        raise SystemExit(f"--epochs must exceed {SHORT}")
    if args.only in (None, "epoch"):
        bench_epoch(10 if args.quick else 40)
    if args.only in (None, "measure"):
        bench_measure(5 if args.quick else 20)
    if args.only in (None, "changes"):
        bench_changes(5 if args.quick else 20)
    if args.only in (None, "runs"):
        bench_runs(epochs, repeat, args.before)


if __name__ == "__main__":
    main()
