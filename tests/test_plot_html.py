"""`ib-brevitas plot --html`: one self-contained file that shows the tab's views from file://, offline."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import defaultdict

import pytest

from ib_brevitas import cli
from ib_brevitas.files import append_jsonl
from ib_brevitas.phases import COMPRESSION_STARTED, PhaseEvent
from ib_brevitas.plots import html
from ib_brevitas.records import LayerMI, read_records

CHROMIUM = "/usr/bin/chromium"
LAYERS = ["body.0.act", "body.2.act", "head.act"]
EVIL = '<img src=x onerror="window.pwned=1">'


def records(seed: int, epochs) -> list[LayerMI]:
    return [LayerMI(layer=n, epoch=e, step=e, i_xt=7 - i - 3 * math.exp(-e / (9 + seed)), i_ty=0.9 - 0.5 * math.exp(-e / (5 + i)),
                    h_t=1.0, n_distinct=9, n_samples=512, bit_width=4, width=8, layer_index=i, h_y=0.95)
            for e in epochs for i, n in enumerate(LAYERS)]


@pytest.fixture
def runs(tmp_path):
    dirs = []
    for seed, epochs in ((0, range(0, 30, 3)), (1, range(0, 24, 2))):
        d = tmp_path / f"tiny-seed{seed}"
        d.mkdir()
        append_jsonl(d / "mi.jsonl", [r.to_dict() for r in records(seed, epochs)])
        dirs.append(d)
    d = tmp_path / EVIL
    d.mkdir()
    append_jsonl(d / "mi.jsonl", [r.to_dict() for r in records(5, range(0, 9, 3))])
    append_jsonl(d / "phases.jsonl", [PhaseEvent(LAYERS[2], COMPRESSION_STARTED, 6, 4.0, 0.8, 9).to_dict()])
    dirs.append(d)
    return dirs


def test_bundle_is_one_script_with_every_module():
    script = html.bundle()
    assert "import " not in re.sub(r"//.*", "", script) and "export " not in re.sub(r"//.*", "", script)
    static = sorted(f for f in os.listdir(html.STATIC_DIR) if f.endswith(".js") and f != "index.js")
    assert sorted(re.findall(r"^// ---- static/(\S+)$", script, re.MULTILINE)) == static


def test_bundle_refuses_clashing_names(tmp_path, monkeypatch):
    for name, src in (("app.js", 'import { a } from "./b.js";\nexport function a2() {}\nconst x = 1;\n'),
                      ("b.js", "export function a() {}\nconst x = 2;\n")):
        (tmp_path / name).write_text(src)
    monkeypatch.setattr(html, "STATIC_DIR", tmp_path)
    with pytest.raises(ValueError, match="both declare 'x'"):
        html.bundle()


def test_cli_writes_one_file_and_names_errors(runs, tmp_path, capsys):
    out = tmp_path / "plane.html"
    assert cli.main(["plot", *map(str, runs), "--html", str(out)]) == 0
    text = out.read_text()
    assert "default-src 'none'" in text and "<script src" not in text and "<link" not in text
    assert EVIL not in text  # names are data, escaped in the JSON
    assert cli.main(["plot", str(runs[0]), "--html", str(tmp_path / "x.png")]) == 2
    assert "must end in .html" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian chromium at {CHROMIUM}")
def test_file_opens_offline_with_the_same_counts(runs, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = html.write_html(runs, tmp_path / "plane.html")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors, requests = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.locator("body[data-ready='true']").wait_for(timeout=30_000)
            counts = """() => Object.fromEntries([...document.querySelectorAll('.ip-panel')].map((p) => [
                p.dataset.run || p.dataset.group,
                {layers: Object.fromEntries([...p.querySelectorAll('svg.ip-plane g.ip-layer')]
                    .map((g) => [g.dataset.layer, Number(g.dataset.count)])),
                 seeds: [...p.querySelectorAll('svg.ip-plane g.ip-seed')]
                    .map((g) => [g.dataset.run, g.dataset.layer, Number(g.dataset.count)])}]))"""
            got = page.evaluate(counts)
            by_run = {d.name: defaultdict(int) for d in runs}
            for d in runs:
                for r in read_records(d / "mi.jsonl"):
                    by_run[d.name][r.layer] += 1
            assert got[EVIL]["layers"] == dict(by_run[EVIL])
            assert sorted(map(tuple, got["tiny"]["seeds"])) == sorted(
                (run, layer, n) for run in ("tiny-seed0", "tiny-seed1") for layer, n in by_run[run].items())
            epochs = {r.epoch for d in runs[:2] for r in read_records(d / "mi.jsonl")}
            assert got["tiny"]["layers"] == {layer: len(epochs) for layer in LAYERS}
            assert page.evaluate("() => document.querySelectorAll('.ip-phase').length") == 2
            page.locator("input[value='runs']").check()
            page.wait_for_function("() => document.querySelectorAll('.ip-panel').length === 3")
            got = page.evaluate(counts)
            for d in runs:
                assert got[d.name]["layers"] == dict(by_run[d.name])
            assert requests == [out.as_uri()]  # nothing but the file itself
            assert errors == [] and page.evaluate("() => document.querySelectorAll('.ip-root img').length") == 0
            assert page.evaluate("() => window.pwned === undefined")
        finally:
            browser.close()


def test_estimator_filter_reaches_the_page(tmp_path):
    """plot --html --estimator embeds only that estimator's points."""
    d = tmp_path / "float-s0"
    d.mkdir()
    recs = records(0, range(0, 9, 3))
    binned = [dataclasses.replace(r, estimator=est) for est in ("binning-uniform-30-global",
              "binning-uniform-256-global") for r in recs]
    append_jsonl(d / "mi.jsonl", [r.to_dict() for r in binned])
    every = html.page_data([d])["points"]["float-s0"]
    kept = html.page_data([d], ["binning-uniform-30-global"])["points"]["float-s0"]
    assert "binning-uniform-256-global" in repr(every) and "binning-uniform-256-global" not in repr(kept)
    assert "binning-uniform-30-global" in repr(kept)
