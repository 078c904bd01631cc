"""End to end: train a tiny Brevitas model with the monitor, serve the run with the
real `tensorboard` command, and check the Information Plane tab in headless
Debian chromium (Playwright) against mi.jsonl.

Set IB_BREVITAS_SCREENSHOT=path.png to keep the screenshot (docs/img/ has one).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None or not os.path.exists(CHROMIUM):
    pytest.skip(
        f"end-to-end browser test needs playwright (pip install playwright) and Debian chromium at {CHROMIUM} "
        "(apt-get install chromium)", allow_module_level=True)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import brevitas.nn as qnn  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from ib_brevitas import InformationPlane, JsonlSink  # noqa: E402
from ib_brevitas.records import read_records  # noqa: E402
from ib_brevitas.tensorboard.summary import TensorBoardSink  # noqa: E402

pytestmark = pytest.mark.browser

TENSORBOARD = Path(sys.executable).with_name("tensorboard")
EVIL = '<script>window.pwned=1<\\script><img src=x onerror="window.pwned=2">'
RUNS = ["tiny-relu-seed0", "tiny-relu-seed1", EVIL, "one-point"]
FRAME = "iframe[src*='plugin_entry.html?name=information_plane']"


class TinyRun:
    """A 8-8-4-2 Brevitas MLP (4-bit weights, 3-bit ReLUs) trained on random data,
    measured every epoch by the monitor, logged to mi.jsonl and TensorBoard."""

    def __init__(self, run_dir: Path, seed: int):
        torch.manual_seed(seed)
        self.x = torch.rand(512, 8) * 2 - 1
        self.y = (self.x[:, :4].sum(1) > self.x[:, 4:].sum(1)).long()
        self.model = nn.Sequential(
            qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
            qnn.QuantLinear(8, 8, bias=True, weight_bit_width=4, return_quant_tensor=True),
            qnn.QuantReLU(bit_width=3, return_quant_tensor=True),
            qnn.QuantLinear(8, 4, bias=True, weight_bit_width=4, return_quant_tensor=True),
            qnn.QuantReLU(bit_width=3, return_quant_tensor=True),
            qnn.QuantLinear(4, 2, bias=True, weight_bit_width=4),
        )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.writer = SummaryWriter(str(run_dir))
        self.plane = InformationPlane(self.model, self.x, self.y)
        self.plane.log_to(self.writer)
        self.plane.add_sink(JsonlSink(run_dir / "mi.jsonl"))
        self.epoch = 0
        self.plane.measure(0)
        self.writer.flush()

    def train(self, epochs: int) -> None:
        for _ in range(epochs):
            self.epoch += 1
            self.model.train()
            for idx in torch.randperm(len(self.x)).split(128):
                self.opt.zero_grad()
                nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx]).backward()
                self.opt.step()
            self.plane.measure(self.epoch)
        self.writer.flush()


def mi_jsonl(logdir: Path, run: str) -> dict[str, list]:
    by_layer = defaultdict(list)
    for r in read_records(logdir / run / "mi.jsonl"):
        by_layer[r.layer].append(r)
    return by_layer


def fetch_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logdir = tmp_path_factory.mktemp("runs")
    runs = {}
    for seed, name in enumerate(RUNS):
        runs[name] = TinyRun(logdir / name, seed)
        runs[name].train(5 if name != "one-point" else 0)  # "one-point": only the untrained measurement
    # A phase marker as the phase tracker would write it, through a sink on the same writer.
    marked = mi_jsonl(logdir, RUNS[0])["4"][3]
    TensorBoardSink(writer=runs[RUNS[0]].writer).write_phase_events([
        {"layer": "4", "epoch": marked.epoch, "kind": "compression_start", "detail": {"drop_bits": 0.5},
         "i_xt": marked.i_xt, "i_ty": marked.i_ty, "detected_epoch": 5}])
    runs[RUNS[0]].writer.flush()
    yield logdir, runs
    for run in runs.values():
        run.writer.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tensorboard(training, tmp_path_factory):
    """The real CLI with default loading (--load_fast=auto), on a free port of 127.0.0.1."""
    logdir, _ = training
    log = tmp_path_factory.mktemp("tb") / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
             "--reload_interval", "1"], stdout=err, stderr=err)
    try:
        url = None

        def started():
            nonlocal url
            m = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)", log.read_text())
            assert proc.poll() is None, log.read_text()
            url = m and m.group(1)
            return url is not None

        wait(started, 60, "tensorboard to start")

        def loaded():
            for run in RUNS:
                body = fetch_json(url + "data/plugin/information_plane/points?run=" + urllib.parse.quote(run))
                if not body or len(body["points"]) != sum(map(len, mi_jsonl(logdir, run).values())):
                    return False
            return True

        wait(loaded, 60, "TensorBoard to load every run")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(tensorboard):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1050})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(tensorboard + "#information_plane")
        page.frame_locator(FRAME).locator("body[data-ready='true']").wait_for(timeout=60_000)
        page.ib_errors = errors
        yield page
        browser.close()


def frame(page):
    return next(f for f in page.frames if "plugin_entry.html" in f.url)


def drawn(page, run: str) -> dict:
    """Per layer of the run's information plane: label, points drawn, their epochs, tooltip title."""
    return frame(page).evaluate(
        """(run) => {
            const panel = [...document.querySelectorAll('.ip-panel')].find((p) => p.dataset.run === run);
            if (!panel) return null;
            const out = {};
            for (const g of panel.querySelectorAll('svg.ip-plane g.ip-layer')) {
                out[g.dataset.layer] = {
                    label: g.dataset.label, count: Number(g.dataset.count),
                    epochs: g.dataset.epochs.split(' ').filter(Boolean).map(Number),
                    title: g.querySelector('title') && g.querySelector('title').textContent,
                };
            }
            return out;
        }""", run)


def test_drawn_points_per_layer_equal_mi_jsonl(page, training):
    logdir, _ = training
    for run in RUNS:
        expected = mi_jsonl(logdir, run)
        got = drawn(page, run)
        assert set(got) == set(expected), run
        for layer, recs in expected.items():
            assert got[layer]["count"] == len(recs)
            assert got[layer]["epochs"] == [r.epoch for r in recs]
            assert got[layer]["label"] == recs[0].label and got[layer]["title"] == layer
    assert page.ib_errors == []


def hover_isolated(page, title: str, points: list) -> tuple:
    """Move the mouse onto the point (i_xt, i_ty, layer, epoch, ...) of panel `title`
    that lies farthest from all others, so only it is under the mouse; return it and the tooltip text."""
    plane = page.frame_locator(FRAME).locator(".ip-panel").filter(
        has=page.frame_locator(FRAME).locator("h3", has_text=title)).locator("svg.ip-plane")
    plane.scroll_into_view_if_needed()
    scale = {k: float(v) for k, v in plane.evaluate("(s) => ({...s.dataset})").items()}
    box = plane.bounding_box()
    pos = [(box["x"] + scale["x0"] + p[0] * scale["kx"], box["y"] + scale["y0"] + p[1] * scale["ky"]) for p in points]
    gap = [min(math.dist(a, b) for j, b in enumerate(pos) if j != i) for i, a in enumerate(pos)]
    i = max(range(len(points)), key=gap.__getitem__)
    assert gap[i] > 4, "no isolated point to hover"
    page.mouse.move(5, 5)
    page.mouse.move(*pos[i])
    frame(page).wait_for_function(
        "([layer, epoch]) => { const t = document.querySelector('.ip-tooltip');"
        " return !t.hidden && t.dataset.layer === layer && t.dataset.epoch === String(epoch); }",
        arg=[points[i][2], points[i][3]])
    text = page.frame_locator(FRAME).locator(".ip-tooltip").inner_text()
    page.mouse.move(5, 5)
    return points[i], text


def test_tooltip_shows_the_numbers_of_a_point(page, training):
    logdir, _ = training
    recs = [r for rs in mi_jsonl(logdir, RUNS[0]).values() for r in rs]
    (_, _, _, _, r), text = hover_isolated(page, RUNS[0], [(r.i_xt, r.i_ty, r.layer, r.epoch, r) for r in recs])
    assert f"{r.label} \u00b7 {r.layer}" in text
    assert f"epoch {r.epoch}" in text
    assert f"I(X;T) = {r.i_xt:.4f} bits" in text
    assert f"I(T;Y) = {r.i_ty:.4f} bits" in text
    assert f"{r.n_distinct} distinct of {r.n_samples}" in text


def test_run_names_are_shown_as_text(page):
    f = frame(page)
    titles = f.evaluate("() => [...document.querySelectorAll('.ip-panel h3')].map((h) => h.textContent)")
    assert EVIL in titles
    assert EVIL in f.evaluate("() => [...document.querySelectorAll('.ip-run-name')].map((s) => s.textContent.trim())")
    assert f.evaluate("() => document.querySelectorAll('.ip-root img, .ip-root script').length") == 0
    assert f.evaluate("() => window.pwned === undefined")


def test_bounds_and_phase_marker(page, training):
    logdir, _ = training
    f = frame(page)
    info = f.evaluate("""(run) => {
        const panel = [...document.querySelectorAll('.ip-panel')].find((p) => p.dataset.run === run);
        return {
            bounds: [...panel.querySelectorAll('svg.ip-plane [data-bound]')].map((b) => b.dataset.bound),
            phases: [...panel.querySelectorAll('.ip-phase')].map((m) => [m.dataset.layer, Number(m.dataset.epoch), m.dataset.kind]),
        };
    }""", RUNS[0])
    assert sorted(info["bounds"]) == ["hy", "log2n"]
    marked = mi_jsonl(logdir, RUNS[0])["4"][3]
    assert info["phases"] == [["4", marked.epoch, "compression_start"]] * 2  # in both MI-vs-epoch plots


def test_layer_toggle(page):
    toggle = page.frame_locator(FRAME).locator("input[data-label='T2']")
    hidden = "() => [...document.querySelectorAll('g[data-label=\"T2\"]')].map((g) => g.style.display)"
    toggle.uncheck()
    assert set(frame(page).evaluate(hidden)) == {"none"}
    toggle.check()
    assert set(frame(page).evaluate(hidden)) == {""}


def test_run_selector(page):
    shown = "(n) => document.querySelectorAll('.ip-panel').length === n"
    has = "() => [...document.querySelectorAll('.ip-panel')].some((p) => p.dataset.run === 'one-point')"
    box = page.frame_locator(FRAME).locator("input[data-run='one-point']")
    box.uncheck()
    frame(page).wait_for_function(shown, arg=len(RUNS) - 1)
    assert not frame(page).evaluate(has)
    box.check()
    frame(page).wait_for_function(shown, arg=len(RUNS))
    assert frame(page).evaluate(has)


def test_mean_over_seeds(page, training):
    logdir, _ = training
    page.frame_locator(FRAME).locator("input[value='mean']").check()
    try:
        f = frame(page)
        groups = f.evaluate("() => [...document.querySelectorAll('.ip-panel')].map((p) => [p.dataset.group, p.querySelector('.ip-sub').textContent])")
        assert sorted(g for g, _ in groups) == sorted(["tiny-relu", EVIL, "one-point"])
        assert "over 2 runs" in dict(groups)["tiny-relu"]
        counts = f.evaluate("""() => {
            const panel = [...document.querySelectorAll('.ip-panel')].find((p) => p.dataset.group === 'tiny-relu');
            return Object.fromEntries([...panel.querySelectorAll('svg.ip-plane g.ip-layer')].map((g) => [g.dataset.layer, Number(g.dataset.count)]));
        }""")
        epochs = defaultdict(set)
        for run in RUNS[:2]:
            for layer, recs in mi_jsonl(logdir, run).items():
                epochs[layer] |= {r.epoch for r in recs}
        assert counts == {layer: len(e) for layer, e in epochs.items()}
        # The mean and spread of one point, computed here from mi.jsonl.
        cells = defaultdict(list)
        for run in RUNS[:2]:
            for layer, recs in mi_jsonl(logdir, run).items():
                for r in recs:
                    cells[(layer, r.epoch)].append(r)
        means = [(statistics.mean(r.i_xt for r in rs), statistics.mean(r.i_ty for r in rs), layer, epoch, rs)
                 for (layer, epoch), rs in cells.items()]
        (mx, my, layer, epoch, rs), text = hover_isolated(page, "tiny-relu", means)
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)  # noqa: E731
        assert f"epoch {epoch}" in text and f"mean of {len(rs)} run" in text
        assert f"I(X;T) = {mx:.4f} \u00b1 {sd([r.i_xt for r in rs]):.4f} bits" in text
        assert f"I(T;Y) = {my:.4f} \u00b1 {sd([r.i_ty for r in rs]):.4f} bits" in text
    finally:
        page.frame_locator(FRAME).locator("input[value='runs']").check()


def test_new_measurements_appear_without_reload(page, training):
    logdir, runs = training
    run = RUNS[0]
    runs[run].train(2)
    expected = {layer: len(recs) for layer, recs in mi_jsonl(logdir, run).items()}
    wait(lambda: {k: v["count"] for k, v in (drawn(page, run) or {}).items()} == expected, 30, "the dashboard to poll")
    test_drawn_points_per_layer_equal_mi_jsonl(page, training)


def test_no_data_yet(page, tensorboard):
    """An empty log directory: a message saying what to do, and the page is ready."""
    context = page.context.browser.new_context()
    empty = context.new_page()
    try:
        empty.route("**/data/plugin/information_plane/runs", lambda route: route.fulfill(
            status=200, content_type="application/json", body="[]"))
        empty.goto(tensorboard + "data/plugin_entry.html?name=information_plane")
        empty.locator("body[data-ready='true']").wait_for(timeout=30_000)
        text = empty.locator(".ip-panels").inner_text()
        assert "No information-plane data" in text and "tensorboard --logdir" in text
    finally:
        context.close()


def test_screenshot(page, tmp_path):
    path = Path(os.environ.get("IB_BREVITAS_SCREENSHOT") or tmp_path / "information_plane.png")
    page.frame_locator(FRAME).locator(".ip-panel").first.scroll_into_view_if_needed()
    page.screenshot(path=str(path))
    assert path.stat().st_size > 20_000
