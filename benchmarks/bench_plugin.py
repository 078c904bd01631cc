"""The information-plane tab with 10,000 measurements x 10 layers, in the real browser.

    .venv/bin/python benchmarks/bench_plugin.py [--quick] [--logdir DIR] [--load-fast {true,false}]

1. writes the run with TensorBoardSink (what training pays per measurement);
2. serves it with the real `tensorboard` command and times the `points` route
   (first read through the data provider, then the cached answer);
3. opens the tab in headless Debian chromium and reads the times the page
   reports: `render` (from data in memory to painted, incl. layout; target
   < 1 s), `load` (fetching + parsing + render), and a re-render (view switch).
--quick: 1,000 measurements. --logdir keeps the event files for later runs
(writing 10,000 x 10 takes TensorBoard's pure-Python writer minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
RUN = "bench"


def write_run(run_dir: Path, epochs: int, layers: int) -> float:
    """Synthetic trajectories (rise, then slow compression) written by the real sink; s per measurement."""
    from ib_brevitas.records import LayerMI
    from ib_brevitas.tensorboard.summary import TensorBoardSink

    rng = random.Random(0)
    names = [f"features.{2 * i}.act_quant" for i in range(layers)]
    t0 = time.perf_counter()
    with TensorBoardSink(log_dir=run_dir) as sink:
        for e in range(epochs):
            t = e / epochs
            sink.write([
                LayerMI(layer=n, epoch=e, step=e * 16, i_xt=(12 - i) * (1 - math.exp(-8 * t)) * (1 - 0.2 * t * i / layers)
                        + rng.gauss(0, 0.05), i_ty=0.99 * (1 - math.exp(-5 * t)) * (1 - 0.04 * i), h_t=1.0,
                        n_distinct=100, n_samples=4096, bit_width=8, width=12 - i, layer_index=i, h_y=0.99)
                for i, n in enumerate(names)
            ])
            if e % 1000 == 999:
                print(f"  wrote {e + 1}/{epochs} measurements", flush=True)
    return (time.perf_counter() - t0) / epochs


def start_tensorboard(logdir: Path, load_fast: str, log: Path) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("tensorboard")
    with open(log, "w") as err:
        proc = subprocess.Popen([str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                                 "--load_fast", load_fast, "--reload_interval", "5"], stdout=err, stderr=err)
    for _ in range(1200):
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", log.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"tensorboard did not start:\n{log.read_text()}")


def timed_get(url: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = json.load(r)
    return time.perf_counter() - t0, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 measurements instead of 10,000")
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--logdir", type=Path, default=None, help="keep/reuse the event files here")
    parser.add_argument("--load-fast", choices=["true", "false"], default="true",
                        help="TensorBoard loader: Rust data server (true) or Python (false)")
    args = parser.parse_args()
    epochs = 1000 if args.quick else 10_000
    total = epochs * args.layers
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="ib-bench-plugin-"))
    run_dir = logdir / RUN
    marker = run_dir / f"complete-{epochs}x{args.layers}"
    write_s = None
    if not marker.exists():
        print(f"writing {epochs} measurements x {args.layers} layers to {run_dir} ...", flush=True)
        write_s = write_run(run_dir, epochs, args.layers)
        marker.touch()

    from playwright.sync_api import sync_playwright

    proc, url = start_tensorboard(logdir, args.load_fast, logdir / "tensorboard.log")
    try:
        points_url = url + f"data/plugin/information_plane/points?run={RUN}"
        t0 = time.perf_counter()
        while True:  # the Rust loader ingests in the background
            try:
                first_s, body = timed_get(points_url)
                if len(body["points"]) == total:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 900:
                raise SystemExit("TensorBoard did not load the run within 15 minutes")
            time.sleep(2)
        ingest_s = time.perf_counter() - t0
        cached_s, _ = timed_get(points_url)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url + "data/plugin_entry.html?name=information_plane")
            page.locator("body[data-ready='true']").wait_for(timeout=600_000)
            render_ms = float(page.evaluate("document.body.dataset.renderMs"))
            load_ms = float(page.evaluate("document.body.dataset.loadMs"))
            drawn = page.evaluate(
                "() => [...document.querySelectorAll('svg.ip-plane g.ip-layer')].reduce((a, g) => a + Number(g.dataset.count), 0)")
            rerender = []
            for mode in ("mean", "runs", "mean", "runs"):
                page.locator(f"input[value='{mode}']").check()
                page.wait_for_function("(n) => Number(document.body.dataset.renders) >= n", arg=len(rerender) + 2)
                rerender.append(float(page.evaluate("document.body.dataset.renderMs")))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert drawn == total, f"drawn {drawn} points, expected {total}"
    print(f"\ninformation-plane tab, {epochs} measurements x {args.layers} layers = {total} points "
          f"(--load_fast={args.load_fast})")
    rows = [
        ("sink: write one measurement (all layers)", f"{write_s * 1e3:.1f} ms" if write_s else "(reused files)"),
        ("TensorBoard: ingest until all points served", f"{ingest_s:.1f} s"),
        ("points route: first read via data provider", f"{first_s:.2f} s"),
        ("points route: unchanged data (cached)", f"{cached_s:.2f} s"),
        ("browser: fetch + parse + render + paint", f"{load_ms / 1e3:.2f} s"),
        ("browser: render + paint (target < 1 s)", f"{render_ms / 1e3:.3f} s"),
        ("browser: re-render on view switch, median", f"{sorted(rerender)[len(rerender) // 2] / 1e3:.3f} s"),
        ("points drawn / written", f"{drawn} / {total}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0 if render_ms < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
