"""Binning estimators against the exact count, on one measurement of a 70,000-sample layer.

    .venv/bin/python benchmarks/bench_binning.py [--quick] [--repeat R] [--steps S]

The probe set is Fashion-MNIST at full size (70,000 images, Debian's
dataset-fashion-mnist; random images of the same shape when it is missing, said
so in the output). The network is the paper's Bottleneck-2 (784-16-8-4-2-10) at
8 bit, trained S Adam steps (batch 256, lr 1e-3) so its layers are not at their
initial state. For each layer T1..T5:
- exact: counting the layer's packed 8-bit codes as the monitor does
  (`functional.information_plane_point` on `InformationPlane.collect()` rows);
- binning: all of the paper's estimators (uniform 30, 100 and 256 bins, global
  bounds) on the same layer's float values, `binning.plane_points` as
  `BinnedPlane.measure` calls it (check of the values, binning, counting).
The target of issue 12: binning / exact <= 3. Both are timed alternately, R
times each (CPU time of this process, which other jobs on a shared machine
disturb less than wall time; wall time is printed too); medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from ib_brevitas import InformationPlane, binning
from ib_brevitas.binned import BinnedPlane
from ib_brevitas.experiments import data
from ib_brevitas.experiments.models import build_net, syn_loss
from ib_brevitas.formatting import format_table
from ib_brevitas.functional import information_plane_point, unique_rows

TARGET = 3.0


def probe_set() -> tuple[torch.Tensor, np.ndarray, str]:
    try:
        x, y = data.image_set("fashion-mnist")
        return torch.from_numpy(x), y, "Fashion-MNIST, 70,000 images"
    except FileNotFoundError as e:
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(70000, 784, generator=g) < 0.3).float()
        y = torch.randint(0, 10, (70000,), generator=g).numpy()
        return x, y, f"random images ({e})"


def trained_net(x: torch.Tensor, y: np.ndarray, steps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_net("mnist-bottleneck-2", bits=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    yt = torch.from_numpy(y)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    model.train()
    for i in range(steps):
        idx = order[(256 * i) % x.shape[0]:][:256]
        opt.zero_grad()
        syn_loss(model(x[idx]), yt[idx]).backward()
        opt.step()
    return model


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="R = 5, S = 50")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls of each (default 21)")
    parser.add_argument("--steps", type=int, default=None, help="training steps before measuring (default 300)")
    args = parser.parse_args()
    repeat = args.repeat or (5 if args.quick else 21)
    steps = args.steps if args.steps is not None else (50 if args.quick else 300)
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    x, y, source = probe_set()
    print(f"probe set: {source}; Bottleneck-2, 8 bit, trained {steps} steps")
    model = trained_net(x, y, steps)
    stores = InformationPlane(model, x, y).collect()
    plane = BinnedPlane(model, x, y)
    acts = plane.activations()
    run_range = plane.value_range(acts)  # stands in for the run's global range
    groups = unique_rows(y)
    rows, ratios = [], []
    for name in plane.layer_names:
        codes = stores[name].rows

        def exact():
            return information_plane_point(codes, y, label_groups=groups)

        def binned():
            return binning.plane_points(acts[name], y, binning.PAPER_ESTIMATORS, run_range, label_groups=groups)

        exact(), binned()  # warm-up
        t_exact, t_binned = [], []
        for _ in range(repeat):
            t_exact.append(timed(exact))
            t_binned.append(timed(binned))
        cpu_e, cpu_b = (statistics.median(t[0] for t in ts) for ts in (t_exact, t_binned))
        wall_e, wall_b = (statistics.median(t[1] for t in ts) for ts in (t_exact, t_binned))
        ratios.append(cpu_b / cpu_e)
        points = binned()
        rows.append([
            name, str(acts[name].shape[1]), f"{cpu_e * 1e3:.2f}", f"{cpu_b * 1e3:.2f}", f"{cpu_b / cpu_e:.2f}",
            f"{wall_b / wall_e:.2f}", f"{exact().n_distinct}", " / ".join(str(p.n_distinct) for p in points),
            "yes" if cpu_b / cpu_e <= TARGET else "NO",
        ])
    print(format_table(
        ["layer", "width", "exact ms", "3 binnings ms", "ratio (cpu)", "ratio (wall)", "distinct codes",
         "distinct bins 30/100/256", f"<= {TARGET:g}x"], rows))
    print(f"worst ratio {max(ratios):.2f}, median {statistics.median(ratios):.2f} (target <= {TARGET:g})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
