"""End to end: train a tiny Brevitas model with the monitor, serve the run with the
real `tensorboard` command, and check the Information Plane tab in headless
Debian chromium (Playwright) against mi.jsonl.

Beside the trained runs: an old-format run (wire format 1), a run with four
coincident layers, every phase event kind and a hardware table (another
model), and a poisoned run (NaN values). Set IB_BREVITAS_SCREENSHOT=path.png
to keep the screenshot of these; the README's pictures of the main job are
`test_main_job_screenshots` (see its docstring).
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

import brevitas.nn as qnn  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from test_tb_plugin import POISON_META, poison_rows, write_raw, write_v1_run  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from ib_brevitas import InformationPlane, JsonlSink  # noqa: E402
from ib_brevitas.files import append_jsonl  # noqa: E402
from ib_brevitas.phases import EVENT_KINDS, PhaseEvent  # noqa: E402
from ib_brevitas.records import LayerMI, read_records  # noqa: E402
from ib_brevitas.tensorboard import wire  # noqa: E402
from ib_brevitas.tensorboard.summary import TensorBoardSink  # noqa: E402

pytestmark = pytest.mark.browser

TENSORBOARD = Path(sys.executable).with_name("tensorboard")
EVIL = '<script>window.pwned=1<\\script><img src=x onerror="window.pwned=2">'
TRAINED = ["tiny-relu-seed0", "tiny-relu-seed1", EVIL, "one-point"]
RUNS = [*TRAINED, "old-format", "coincident", "poisoned"]
PREFIT = "zz-prefit"  # a seventh configuration: beyond the six the tab selects by default
HW_ROWS = [{"layer": f"body.{i}.act", "hw_node": f"Thresholding_rtl_{i}", "bit_width": 8, "width": 12 - i,
            "i_xt": 11.9 - i, "i_ty": 0.99, "lut": 12345 - i, "bram": 4, "dsp": 0, "cycles": 409600, "ints_match": True}
           for i in range(5)]
HW_TOTALS = {"lut": 61715, "bram": 20, "dsp": 0, "fps": 244.1, "latency_ns": 4096000.0, "fpga_part": "xczu3eg-sbva484-1-e",
             "clock_ns": 10.0, "bit_exact": True}
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


def write_coincident(run_dir: Path) -> None:
    """Five layers, T1-T4 ending on one point (as on SYN), every phase event kind, a hardware table."""
    recs = []
    with TensorBoardSink(log_dir=run_dir) as sink:
        for e in range(0, 60, 3):
            t = 1 - math.exp(-e / 12)
            rs = [LayerMI(layer=f"body.{i}.act", epoch=e, step=e, i_xt=(12 - (4 - i) * (1 - t) if i < 4 else 4 + 3 * t),
                          i_ty=(0.99 - 0.1 * (1 - t) if i < 4 else 0.7 * t), h_t=1.0, n_distinct=4096, n_samples=4096,
                          bit_width=8, width=12 - i, layer_index=i, h_y=0.99) for i in range(5)]
            sink.write(rs)
            recs += rs
        last = {r.epoch: r for r in recs if r.layer == "body.4.act"}
        sink.write_phase_events([
            PhaseEvent(layer="body.4.act", kind=kind, epoch=e, i_xt=last[e].i_xt, i_ty=last[e].i_ty,
                       detected_epoch=e + 9, detail={"drop_bits": 0.125 * (k + 1)})
            for k, (kind, e) in enumerate(zip(EVENT_KINDS, (9, 21, 33, 45)))])
        sink.write_hardware_table(HW_ROWS, HW_TOTALS, step=57)
    append_jsonl(run_dir / "mi.jsonl", [r.to_dict() for r in recs])


def write_prefit(run_dir: Path) -> None:
    """A 4-epoch random-label prefit (epochs -4..-1) before 8 epochs of training, as `train --prefit-random 4`
    writes it to TensorBoard: every step is epoch + 4."""
    recs = []
    with TensorBoardSink(log_dir=run_dir, step_offset=4) as sink:
        for e in range(-4, 9):
            rs = [LayerMI(layer=f"T{i + 1}", epoch=e, step=e + 4, i_xt=3 + i + 0.2 * e, i_ty=0.4 + 0.05 * (e + 4),
                          h_t=3 + i + 0.2 * e, n_distinct=50, n_samples=512, bit_width=8, width=4 - i, layer_index=i,
                          h_y=0.99) for i in range(2)]
            sink.write(rs)
            recs += rs
    append_jsonl(run_dir / "mi.jsonl", [r.to_dict() for r in recs])


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
    for seed, name in enumerate(TRAINED):
        runs[name] = TinyRun(logdir / name, seed)
        runs[name].train(5 if name != "one-point" else 0)  # "one-point": only the untrained measurement
    # A phase marker as the phase tracker would write it, through a sink on the same writer.
    marked = mi_jsonl(logdir, RUNS[0])["4"][3]
    TensorBoardSink(writer=runs[RUNS[0]].writer).write_phase_events([PhaseEvent(
        layer="4", kind="compression_started", epoch=marked.epoch, i_xt=marked.i_xt, i_ty=marked.i_ty,
        detected_epoch=5, detail={"drop_bits": 0.5})])
    runs[RUNS[0]].writer.flush()
    old = write_v1_run(logdir / "old-format", list(range(0, 12, 3)))
    append_jsonl(logdir / "old-format" / "mi.jsonl", [r.to_dict() for r in old])
    write_coincident(logdir / "coincident")
    write_prefit(logdir / PREFIT)
    write_raw(logdir / "poisoned", {e: poison_rows(e, "h_y" if e in (1, 2) else None) for e in range(5)}, POISON_META)
    append_jsonl(logdir / "poisoned" / "mi.jsonl", [  # what the tab must show: the valid values
        LayerMI(layer=POISON_META["layers"][j], estimator="exact", **{
            f: (None if math.isnan(v) else int(v) if f in wire.INT_FIELDS else bool(v) if f == "saturated" else v)
            for f, v in zip(wire.FIELDS, row)}).to_dict()
        for e in range(5) for j, row in enumerate(poison_rows(e, None)) if not (j == 1 and e in (1, 2))])
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
                if not body or sum(x["n"] for x in body["series"]) != sum(map(len, mi_jsonl(logdir, run).values())):
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


def drawn(page, run: str | None = None, group: str | None = None) -> dict:
    """Per layer of a panel's information plane (by run or by group): label, points drawn, their epochs."""
    return frame(page).evaluate(
        """([run, group]) => {
            const panel = [...document.querySelectorAll('.ip-panel')].find(
                (p) => (run === null || p.dataset.run === run) && (group === null || p.dataset.group === group));
            if (!panel) return null;
            const out = {};
            for (const g of panel.querySelectorAll('svg.ip-plane g.ip-layer')) {
                out[g.dataset.layer] = {
                    label: g.dataset.label, count: Number(g.dataset.count),
                    epochs: g.dataset.epochs.split(' ').filter(Boolean).map(Number),
                };
            }
            out.seeds = [...panel.querySelectorAll('svg.ip-plane g.ip-seed')].map(
                (g) => [g.dataset.run, g.dataset.layer, Number(g.dataset.count)]);
            return out;
        }""", [run, group])


def set_mode(page, mode: str) -> None:
    f = frame(page)
    before = int(f.evaluate("document.body.dataset.renders"))
    page.frame_locator(FRAME).locator(f"input[value='{mode}']").check()
    f.wait_for_function("(n) => Number(document.body.dataset.renders) > n", arg=before)


def check_run_panel(page, logdir, run):
    expected = mi_jsonl(logdir, run)
    got = drawn(page, run)
    assert got is not None, f"no panel for {run}"
    assert got.pop("seeds") == []
    assert set(got) == set(expected), run
    for layer, recs in expected.items():
        assert got[layer]["count"] == len(recs)
        assert got[layer]["epochs"] == [r.epoch for r in recs]
        assert got[layer]["label"] == recs[0].label


def test_default_view_groups_seeds(page, training):
    """Seeds of one configuration: one panel, every seed's points drawn faint, the mean over the epochs."""
    logdir, _ = training
    got = drawn(page, group="tiny-relu")
    assert got is not None and frame(page).evaluate(
        "() => [...document.querySelectorAll('.ip-panel')].filter((p) => p.dataset.group === 'tiny-relu').length") == 1
    seeds = sorted(map(tuple, got.pop("seeds")))
    assert seeds == sorted((run, layer, len(recs)) for run in TRAINED[:2] for layer, recs in mi_jsonl(logdir, run).items())
    for layer in got:
        epochs = sorted({r.epoch for run in TRAINED[:2] for r in mi_jsonl(logdir, run)[layer]})
        assert got[layer]["epochs"] == epochs
    for run in RUNS[2:]:  # one run per configuration: its own panel, every point
        check_run_panel(page, logdir, run)
    assert page.ib_errors == []


def test_each_run_view_draws_every_point(page, training):
    """Per run, new format, old format and the poisoned run's valid values: the points of mi.jsonl."""
    logdir, _ = training
    set_mode(page, "runs")
    try:
        for run in RUNS:
            check_run_panel(page, logdir, run)
    finally:
        set_mode(page, "groups")
    assert page.ib_errors == []


def plane_of(page, run=None, group=None):
    panels = page.frame_locator(FRAME).locator(".ip-panel")
    if run is not None:
        panels = panels.filter(has=page.frame_locator(FRAME).locator("h3", has_text=run))
    else:
        panels = page.frame_locator(FRAME).locator(f".ip-panel[data-group='{group}']:not([data-run])")
    return panels.first.locator("svg.ip-plane")


def hover_isolated(page, plane, points: list) -> tuple:
    """Move the mouse onto the point (i_xt, i_ty, layer, epoch, ...) of a plane
    that lies farthest from all others, so only it is under the mouse; return it and the tooltip text."""
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
        " return t && !t.hidden && t.dataset.layer === layer && t.dataset.epoch === String(epoch); }",
        arg=[points[i][2], points[i][3]])
    text = page.frame_locator(FRAME).locator(".ip-tooltip").inner_text()
    page.mouse.move(5, 5)
    return points[i], text


def test_tooltip_shows_the_numbers_of_a_point(page, training):
    logdir, _ = training
    run = "one-point"
    recs = [r for rs in mi_jsonl(logdir, run).values() for r in rs]
    (_, _, _, _, r), text = hover_isolated(page, plane_of(page, run=run), [(r.i_xt, r.i_ty, r.layer, r.epoch, r) for r in recs])
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


def panel_info(page, run):
    return frame(page).evaluate("""(run) => {
        const panel = [...document.querySelectorAll('.ip-panel')].find((p) => p.dataset.run === run);
        return {
            bounds: [...panel.querySelectorAll('svg.ip-plane [data-bound]')].map((b) => b.dataset.bound),
            phases: [...panel.querySelectorAll('.ip-phase')].map(
                (m) => [m.dataset.layer, Number(m.dataset.epoch), m.dataset.kind, m.getAttribute('d')]),
            legend: [...panel.querySelectorAll('.ip-phase-key')].map(
                (k) => [k.dataset.kind, k.textContent, k.querySelector('path').getAttribute('d')]),
        };
    }""", run)


def test_bounds_and_phase_marker(page, training):
    logdir, _ = training
    set_mode(page, "runs")
    try:
        info = panel_info(page, RUNS[0])
    finally:
        set_mode(page, "groups")
    assert sorted(info["bounds"]) == ["hy", "log2n"]
    marked = mi_jsonl(logdir, RUNS[0])["4"][3]
    assert [p[:3] for p in info["phases"]] == [["4", marked.epoch, "compression_started"]] * 2  # in both plots
    assert [k[:2] for k in info["legend"]] == [["compression_started", "compression started"]]


def test_each_marker_kind_has_its_shape_legend_and_numbers(page):
    info = panel_info(page, "coincident")
    kinds = {p[2]: p[3] for p in info["phases"]}
    assert sorted(kinds) == sorted(EVENT_KINDS) and len(set(kinds.values())) == len(EVENT_KINDS)  # one shape each
    assert sorted(k for k, _, _ in info["legend"]) == sorted(EVENT_KINDS)
    assert {k: d for k, _, d in info["legend"]} == kinds  # the legend shows the marker's shape
    marker = page.frame_locator(FRAME).locator(
        ".ip-panel[data-run='coincident'] .ip-phase[data-kind='compression_confirmed']").first
    marker.scroll_into_view_if_needed()
    marker.hover()
    frame(page).wait_for_function("() => { const t = document.querySelector('.ip-tooltip');"
                                  " return t && !t.hidden && t.dataset.kind === 'compression_confirmed'; }")
    text = page.frame_locator(FRAME).locator(".ip-tooltip").inner_text()
    assert "compression confirmed" in text and "epoch 33 (decided at epoch 42)" in text and "drop bits = 0.375" in text
    assert "I(X;T) = " in text and "I(T;Y) = " in text
    page.mouse.move(5, 5)


def test_labels_do_not_overlap_and_coincident_layers_share_one(page):
    boxes = frame(page).evaluate("""() => [...document.querySelectorAll('.ip-panel')].map((p) => [
        p.dataset.run || p.dataset.group,
        [...p.querySelectorAll('svg.ip-plane .ip-labels text')].map((t) => {
            const b = t.getBBox(); return [t.childNodes[0].textContent, b.x, b.y, b.width, b.height];
        })])""")
    for panel, labels in boxes:
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                apart = a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1] or a[2] + a[4] <= b[2] or b[2] + b[4] <= a[2]
                assert apart, f"labels {a[0]!r} and {b[0]!r} overlap in {panel}"
    texts = dict(boxes)["coincident"]
    assert sorted(t[0] for t in texts) == ["T1\u2013T4", "T5"]


def test_hardware_table_fits_its_panel(page):
    f = frame(page)
    info = f.evaluate("""() => {
        const panel = document.querySelector(".ip-panel[data-run='coincident']");
        const table = panel.querySelector('.ip-hardware table');
        const p = panel.getBoundingClientRect(); const t = table.getBoundingClientRect();
        return {panel: [p.left, p.right], table: [t.left, t.right],
                heads: [...table.querySelectorAll('th')].map((h) => h.textContent),
                rows: table.querySelectorAll('tr').length};
    }""")
    assert info["panel"][0] <= info["table"][0] and info["table"][1] <= info["panel"][1], info
    assert info["rows"] == len(HW_ROWS) + 1
    assert "LUT" in info["heads"] and "I(X;T)" in info["heads"] and "lut" not in info["heads"]
    assert not any("_" in h for h in info["heads"])


def test_layer_toggles_are_per_model(page):
    """T2 of the tiny MLP and T2 of the five-layer model are different layers: toggled apart."""
    f = frame(page)
    models = f.evaluate("() => [...document.querySelectorAll('.ip-model')].map((m) => m.dataset.model)")
    assert len(models) >= 3  # the tiny MLP, the five-layer model, the poisoned run's two layers
    fl = page.frame_locator(FRAME)
    toggle = fl.locator(".ip-model").filter(has=fl.locator("label[title='body.1.act']")).locator("input[data-label='T2']")
    markers = ("(run) => [...document.querySelectorAll(`.ip-panel[data-run='${run}'] .ip-phase`)]"
               ".map((m) => m.style.display)")
    shown_t2 = ("(run) => [...document.querySelectorAll(`.ip-panel[data-run='${run}'] .ip-labels text`)]"
                ".some((t) => t.dataset.labels.split(' ').includes('T2'))")
    assert f.evaluate(shown_t2, "coincident") and f.evaluate(shown_t2, "one-point")
    toggle.uncheck()
    try:
        assert not f.evaluate(shown_t2, "coincident")
        assert f.evaluate(shown_t2, "one-point")  # the other model's T2 stays
        assert set(f.evaluate(markers, "coincident")) == {""}  # T5's markers stay
    finally:
        toggle.check()
    assert f.evaluate(shown_t2, "coincident")


def test_runs_list_scrolls_and_selects(page):
    f = frame(page)
    box = f.evaluate("() => { const l = document.querySelector('.ip-runs .ip-list');"
                     " return [l.scrollHeight, l.clientHeight, getComputedStyle(l).overflowY]; }")
    assert box[0] > box[1] and box[2] == "auto"  # seven runs do not fit: the list scrolls
    shown = "(n) => document.querySelectorAll('.ip-panel').length === n"
    last = page.frame_locator(FRAME).locator(f"input[data-run='{sorted(RUNS)[-1]}']")
    last.scroll_into_view_if_needed()
    last.uncheck()  # reachable and clickable
    f.wait_for_function("() => ![...document.querySelectorAll('.ip-panel')].some((p) => p.dataset.run === 'tiny-relu-seed1')"
                        " && document.querySelector(\".ip-panel[data-run='tiny-relu-seed0']\")")
    last.check()
    f.wait_for_function("() => document.querySelector(\".ip-panel[data-group='tiny-relu']:not([data-run])\")")
    group = page.frame_locator(FRAME).locator("input[data-group='one-point']")
    group.uncheck()
    f.wait_for_function(shown, arg=len(RUNS) - 2)
    group.check()
    f.wait_for_function(shown, arg=len(RUNS) - 1)


def test_mean_over_seeds(page, training):
    logdir, _ = training
    f = frame(page)
    sub = f.evaluate("() => document.querySelector(\".ip-panel[data-group='tiny-relu']:not([data-run]) .ip-sub\").textContent")
    assert "over 2 runs" in sub
    cells = defaultdict(list)
    for run in TRAINED[:2]:
        for layer, recs in mi_jsonl(logdir, run).items():
            for r in recs:
                cells[(layer, r.epoch)].append(r)
    means = [(statistics.mean(r.i_xt for r in rs), statistics.mean(r.i_ty for r in rs), layer, epoch, rs)
             for (layer, epoch), rs in cells.items()]
    (mx, my, layer, epoch, rs), text = hover_isolated(page, plane_of(page, group="tiny-relu"), means)
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)  # noqa: E731
    assert f"epoch {epoch}" in text and f"mean of {len(rs)} run" in text
    assert f"I(X;T) = {mx:.4f} \u00b1 {sd([r.i_xt for r in rs]):.4f} bits" in text
    assert f"I(T;Y) = {my:.4f} \u00b1 {sd([r.i_ty for r in rs]):.4f} bits" in text


def test_a_prefit_is_drawn_at_its_negative_epochs(page, training):
    """A random-label prefit run (a seventh configuration, so not among the six shown by default): picked,
    every point of mi.jsonl drawn at its own (negative) epoch, the epoch plots shade and name the prefit."""
    logdir, _ = training
    f = frame(page)
    panel = f"() => document.querySelector(\".ip-panel[data-run='{PREFIT}']\")"
    assert f.evaluate(panel) is None  # the default shows the first six configurations
    picker = page.frame_locator(FRAME).locator(f"input[data-group='{PREFIT}']")
    picker.scroll_into_view_if_needed()
    picker.check()
    f.wait_for_function(panel)
    try:
        check_run_panel(page, logdir, PREFIT)
        assert drawn(page, PREFIT)["T1"]["epochs"][:5] == [-4, -3, -2, -1, 0]
        band = f.evaluate(f"""() => {{
            const p = document.querySelector(".ip-panel[data-run='{PREFIT}']");
            return [p.querySelectorAll('.ip-prefit-band').length,
                    [...p.querySelectorAll('.ip-prefit-label')].map((t) => t.textContent)];
        }}""")
        assert band[0] >= 2 and band[1] == ["random-label prefit"]
        assert page.ib_errors == []
    finally:
        picker.uncheck()
        f.wait_for_function(f"() => !document.querySelector(\".ip-panel[data-run='{PREFIT}']\")")


def test_log_epoch_axis_toggle(page):
    f = frame(page)
    label = "() => [...document.querySelectorAll('.ip-colorbar .ip-axis-label')].map((t) => t.textContent)"
    assert set(f.evaluate(label)) == {"epoch"}  # short runs: linear by default
    option = page.frame_locator(FRAME).locator("input[data-option='log-epoch']")
    before = int(f.evaluate("document.body.dataset.renders"))
    option.check()
    f.wait_for_function("(n) => Number(document.body.dataset.renders) > n", arg=before)
    try:
        assert set(f.evaluate(label)) == {"epoch (log)"}
    finally:
        option.uncheck()


def test_spread_can_be_switched_off(page):
    """The mean view's ellipses and bands are drawn, and gone with the switch (the canvases change)."""
    f = frame(page)
    pixels = """() => [...document.querySelectorAll(".ip-panel[data-group='tiny-relu']:not([data-run]) canvas")]
        .map((c) => c.toDataURL())"""
    before = f.evaluate(pixels)
    option = page.frame_locator(FRAME).locator("input[data-option='spread']")
    n = int(f.evaluate("document.body.dataset.renders"))
    option.uncheck()
    f.wait_for_function("(n) => Number(document.body.dataset.renders) > n", arg=n)
    try:
        after = f.evaluate(pixels)
        assert len(after) == 2 and all(a != b for a, b in zip(before, after))
    finally:
        n = int(f.evaluate("document.body.dataset.renders"))
        option.check()
        f.wait_for_function("(n) => Number(document.body.dataset.renders) > n", arg=n)
    assert f.evaluate(pixels) == before


def test_dark_mode_follows_tensorboard(page):
    f = frame(page)
    light = f.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page.evaluate("() => document.body.classList.add('dark-mode')")  # what TensorBoard's theme toggle does
    try:
        f.wait_for_function("(light) => getComputedStyle(document.body).backgroundColor !== light", arg=light)
        dark = f.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert light == "rgb(255, 255, 255)" and dark == "rgb(32, 33, 36)"
    finally:
        page.evaluate("() => document.body.classList.remove('dark-mode')")
    f.wait_for_function("(light) => getComputedStyle(document.body).backgroundColor === light", arg=light)


def test_poisoned_run_warns_and_others_keep_updating(page, training):
    """Bad values: skipped, counted, said in the run's panel. A run whose route fails: its
    panel says so, and the other runs still draw and take new epochs."""
    logdir, runs = training
    f = frame(page)
    warning = f.evaluate("() => document.querySelector(\".ip-panel[data-run='poisoned'] .ip-warning\").textContent")
    assert "2 values skipped" in warning
    page.route("**/data/plugin/information_plane/points?run=one-point*", lambda route: route.fulfill(
        status=500, content_type="application/json", body='{"error": "simulated failure"}'))
    try:
        run = RUNS[2]  # a configuration of one run: its own panel
        runs[run].train(2)
        runs["one-point"].train(1)
        expected = {layer: len(recs) for layer, recs in mi_jsonl(logdir, run).items()}

        def updated():
            got = drawn(page, run) or {}
            return {k: v["count"] for k, v in got.items() if k != "seeds"} == expected

        wait(updated, 30, "the good run to update while another fails")
        f.wait_for_function("() => { const p = document.querySelector(\".ip-panel[data-run='one-point'] .ip-warning\");"
                            " return p && p.textContent.includes('simulated failure'); }")
        assert "could not be read" in f.evaluate("() => document.querySelector('.ip-status').textContent")
        check_run_panel(page, logdir, run)
    finally:
        page.unroute("**/data/plugin/information_plane/points?run=one-point*")
    wait(lambda: (drawn(page, "one-point") or {}).get("0", {}).get("count") == 2, 30, "the failed run to recover")
    assert page.ib_errors == []


def test_new_measurements_appear_without_reload(page, training):
    """New epochs of one run: its panel is redrawn, the panels of unchanged runs are kept as they are."""
    logdir, runs = training
    mark = """() => { for (const p of document.querySelectorAll('.ip-panel')) p.ibMark = p.dataset.run || p.dataset.group; }"""
    marked = """() => Object.fromEntries([...document.querySelectorAll('.ip-panel')].map(
        (p) => [p.dataset.run || p.dataset.group, p.ibMark === (p.dataset.run || p.dataset.group)]))"""
    frame(page).evaluate(mark)
    runs[RUNS[0]].train(2)
    expected = sorted([RUNS[0], layer, len(recs)] for layer, recs in mi_jsonl(logdir, RUNS[0]).items())
    wait(lambda: sorted(s for s in (drawn(page, group="tiny-relu") or {}).get("seeds", []) if s[0] == RUNS[0]) == expected,
         30, "the dashboard to poll")
    kept = frame(page).evaluate(marked)
    assert kept["tiny-relu"] is False  # redrawn with the new epochs
    assert kept["coincident"] and kept["old-format"]  # untouched
    test_default_view_groups_seeds(page, training)


def test_no_data_yet(page, tensorboard):
    """An empty log directory: a message saying what to do, and the page is ready."""
    context = page.context.browser.new_context()
    empty = context.new_page()
    try:
        empty.route("**/data/plugin/information_plane/versions", lambda route: route.fulfill(
            status=200, content_type="application/json", body="{}"))
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


@pytest.mark.skipif(not os.environ.get("IB_BREVITAS_MAIN_JOB"), reason="set IB_BREVITAS_MAIN_JOB=LOGDIR to take them")
def test_main_job_screenshots(tmp_path):
    """The README's and docs' pictures: IB_BREVITAS_MAIN_JOB is a log directory with the SYN demo run
    (`ib-brevitas train --epochs 300 --run-dir LOGDIR/demo-tanh`) and a few seeds
    (`--seed K --run-dir LOGDIR/syn-tanh-8b-sK`); the pictures go to IB_BREVITAS_SCREENSHOT_DIR
    (default: a temporary directory): the default view, and the same in TensorBoard's dark mode."""
    logdir = Path(os.environ["IB_BREVITAS_MAIN_JOB"])
    out = Path(os.environ.get("IB_BREVITAS_SCREENSHOT_DIR") or tmp_path)
    log = tmp_path / "tb.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                                 "--load_fast", "false", "--reload_interval", "0", "--reload_task", "blocking"],
                                stdout=err, stderr=err)
    try:
        wait(lambda: re.search(r"at (http://127\.0\.0\.1:\d+/)", log.read_text()), 120, "tensorboard to start")
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", log.read_text()).group(1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1000, "height": 960})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "#information_plane")
            page.frame_locator(FRAME).locator("body[data-ready='true']").wait_for(timeout=60_000)
            f = frame(page)
            groups = f.evaluate("() => [...document.querySelectorAll('.ip-panel')].map((p) => p.dataset.group)")
            assert any(not g.startswith("demo") for g in groups) and any(g.startswith("demo") for g in groups), groups
            time.sleep(0.5)
            page.screenshot(path=str(out / "tensorboard-information-plane.png"))
            page.evaluate("() => document.body.classList.add('dark-mode')")
            f.wait_for_function("() => document.documentElement.classList.contains('ip-dark')")
            time.sleep(0.5)
            page.screenshot(path=str(out / "tensorboard-information-plane-dark.png"))
            browser.close()
        assert errors == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
