"""The information_plane plugin's routes, served by the real TensorBoard WSGI app.

Event files are written by the real sink; TensorBoard is configured exactly as
its command line does (plugins from the entry point, flags fixed by our
loader), with the Python loader (--load_fast=false) and the Rust data server
(--load_fast=true).
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import time

import pytest
from tensorboard import default, program
from torch.utils.tensorboard import SummaryWriter
from werkzeug.test import Client

from ib_brevitas.files import append_jsonl
from ib_brevitas.records import LayerMI, read_records
from ib_brevitas.tensorboard import LAYER_TAG_PREFIX
from ib_brevitas.tensorboard.plugin import InformationPlaneLoader, group_of
from ib_brevitas.tensorboard.summary import TensorBoardSink, add_summary, plugin_summary

ROUTE = "/data/plugin/information_plane/"
LAYERS = ["net.0.act_quant", "net.2.act_quant", "net.4.out"]


def records(epoch: int, layers=LAYERS, shift: float = 0.0) -> list[LayerMI]:
    return [
        LayerMI(layer=name, epoch=epoch, step=epoch * 16, i_xt=math.log2(epoch + 2) * (i + 1) / 3 + shift,
                i_ty=0.9 * (1 - math.exp(-epoch / (i + 3))) + shift / 10, h_t=math.log2(epoch + 2) * (i + 1) / 3,
                n_distinct=epoch + i + 1, n_samples=1024, bit_width=4, width=6 - i, layer_index=i, h_y=0.9709505944546686)
        for i, name in enumerate(layers)
    ]


def write_run(run_dir, epochs, layers=LAYERS, **sink_kw) -> list[LayerMI]:
    """Write measurements with the real sink and mi.jsonl beside them, as training does."""
    written = []
    with TensorBoardSink(log_dir=run_dir, **sink_kw) as sink:
        for e in epochs:
            recs = records(e, layers)
            sink.write(recs)
            append_jsonl(run_dir / "mi.jsonl", [r.to_dict() for r in recs])
            written += recs
    return written


class _Capture(program.TensorBoardServer):
    """Keeps the WSGI app TensorBoard builds instead of serving it on a port."""

    app = None

    def __init__(self, wsgi_app, flags):
        type(self).app = wsgi_app

    def serve_forever(self):
        pass

    def get_url(self):
        return "http://captured/"

    def print_serving_message(self):
        pass


def loader_flags(load_fast: str) -> list[str]:
    """Python loader: load once before serving; Rust data server: reload every second in its process."""
    if load_fast == "false":
        return ["--load_fast", "false", "--reload_interval", "0", "--reload_task", "blocking"]
    return ["--load_fast", "true", "--reload_interval", "1"]


def tensorboard_client(logdir, *flags) -> tuple[Client, program.TensorBoard]:
    tb = program.TensorBoard(plugins=default.get_plugins(), server_class=_Capture)
    tb.configure(argv=["tensorboard", "--logdir", str(logdir), *flags])
    tb.launch()
    return Client(_Capture.app), tb


def stop(tb: program.TensorBoard) -> None:
    # The Rust data server exits when its stdin closes.
    stdin = getattr(getattr(tb, "_ingester", None), "_stdin_handle", None)
    if stdin is not None:
        stdin.close()


def get(client: Client, url: str, status: int = 200):
    response = client.get(url)
    assert response.status_code == status, response.data[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.data)


def wait_for(client: Client, url: str, ready, timeout: float = 30.0):
    """Poll a route until `ready(body)` (the Rust loader ingests in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        body = json.loads(response.data) if response.status_code == 200 else None
        if body is not None and ready(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready after {timeout} s: {response.status_code} {response.data[:200]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_run(root / "syn-tanh-seed1", range(0, 40, 2), group="syn-tanh")
    with TensorBoardSink(log_dir=root / "syn-tanh-seed1") as sink:
        sink.write_phase_events([
            {"layer": LAYERS[2], "epoch": 20, "kind": "compression_start", "detail": {"drop_bits": 0.25}, "detected_epoch": 30},
            {"layer": LAYERS[0], "epoch": 10.0, "kind": "fitting_end", "detail": "", "detected_epoch": 30},
        ])
        sink.write_hardware_table([{"layer": LAYERS[0], "i_xt": 1.25, "lut": 96}], {"lut": 96, "fps": 1.5e6}, step=38)
    # A run with other TensorBoard data only.
    with SummaryWriter(str(root / "scalars-only")) as w:
        w.add_scalar("loss", 0.5, 1)
    # A run whose event file was cut mid-record by a crash.
    with TensorBoardSink(log_dir=root / "cut") as sink:
        for e in range(10):
            sink.write(records(e))
        sink.flush()
        (path,) = glob.glob(f"{root}/cut/events.out.tfevents.*")
        size = os.path.getsize(path)
        sink.write(records(10))
    os.truncate(path, size + 7)  # 7 bytes into the header of epoch 10's first record
    # A malformed datum under our plugin name (someone else's writer).
    with SummaryWriter(str(root / "syn-tanh-seed1")) as w:
        meta = {"kind": "layer", "layer": "bogus", "layer_index": 9}
        add_summary(w, plugin_summary(LAYER_TAG_PREFIX + "bogus", "{not json", meta), 38)
    return root


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def client(request, logdir):
    client, tb = tensorboard_client(logdir, *loader_flags(request.param))
    # Loaded completely: the last file of each run is in (the Rust loader works in the background).
    wait_for(client, ROUTE + "points?run=syn-tanh-seed1", lambda b: len(b["points"]) == 60 and b["skipped"] == 1)
    wait_for(client, ROUTE + "points?run=cut", lambda b: len(b["points"]) == 30)
    yield client
    stop(tb)


def test_runs_lists_only_runs_with_plugin_data(client):
    assert get(client, ROUTE + "runs") == ["cut", "syn-tanh-seed1"]


def test_points_equal_mi_jsonl(client, logdir):
    body = get(client, ROUTE + "points?run=syn-tanh-seed1")
    expected = read_records(logdir / "syn-tanh-seed1" / "mi.jsonl")
    got = [{k: p[k] for k in expected[0].to_dict()} for p in body["points"]]
    key = lambda d: (d["layer_index"], d["epoch"])  # noqa: E731
    assert sorted(got, key=key) == sorted((r.to_dict() for r in expected), key=key)
    assert [p["layer"] for p in body["points"]] == sorted([r.layer for r in expected], key=LAYERS.index)
    assert body["layers"] == LAYERS and body["labels"] == {n: f"T{i + 1}" for i, n in enumerate(LAYERS)}
    assert body["bounds"] == {"log2_n": 10.0, "h_y": expected[0].h_y}
    assert body["group"] == "syn-tanh"
    assert body["skipped"] == 1  # the malformed datum, not a 500


def test_layers_phases_hardware(client):
    layers = get(client, ROUTE + "layers?run=syn-tanh-seed1")
    assert [(x["layer"], x["label"], x["max_step"]) for x in layers["layers"][:3]] == [
        (n, f"T{i + 1}", 38) for i, n in enumerate(LAYERS)
    ]
    assert layers["has_phases"] and layers["has_hardware"] and layers["version"]
    phases = get(client, ROUTE + "phases?run=syn-tanh-seed1")
    assert [(e["epoch"], e["layer"], e["kind"]) for e in phases["events"]] == [
        (10.0, LAYERS[0], "fitting_end"), (20, LAYERS[2], "compression_start")
    ]
    assert phases["events"][1]["detail"] == {"drop_bits": 0.25}
    hardware = get(client, ROUTE + "hardware?run=syn-tanh-seed1")
    assert hardware["rows"] == [{"layer": LAYERS[0], "i_xt": 1.25, "lut": 96}]
    assert hardware["totals"] == {"lut": 96, "fps": 1.5e6}
    assert get(client, ROUTE + "hardware?run=cut")["rows"] == []
    assert get(client, ROUTE + "phases?run=cut")["events"] == []


def test_truncated_event_file_keeps_complete_records(client):
    body = get(client, ROUTE + "points?run=cut")
    for name in LAYERS:
        assert [p["epoch"] for p in body["points"] if p["layer"] == name] == list(range(10))


@pytest.mark.parametrize("route", ["points", "layers", "phases", "hardware"])
def test_errors_are_clean_json(client, route):
    assert "missing query argument run" in get(client, ROUTE + route, 400)["error"]
    assert "no information-plane data" in get(client, ROUTE + route + "?run=nope", 404)["error"]
    assert "no information-plane data" in get(client, ROUTE + route + "?run=scalars-only", 404)["error"]


def test_frontend_is_served_and_tab_enabled(client):
    js = client.get(ROUTE + "index.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert b"export async function render" in js.data
    listing = get(client, "/data/plugins_listing")["information_plane"]
    assert listing["enabled"] and listing["tab_name"] == "Information Plane"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": ROUTE + "index.js"}


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_resumed_run_shows_no_orphaned_data(tmp_path, load_fast):
    """A run resumed from epoch 50 with SummaryWriter(purge_step=50) re-writes 50..59:
    epochs 60..99 and the phase event at 80 from the first attempt must be gone."""
    run = tmp_path / "run"
    with TensorBoardSink(log_dir=run) as sink:
        for e in range(100):
            sink.write(records(e, LAYERS[:1]))
        sink.write_phase_events([{"layer": LAYERS[0], "epoch": 80, "kind": "compression_start", "detail": ""}])
    time.sleep(0.05)  # the resumed attempt writes later
    with SummaryWriter(str(run), purge_step=50) as writer:
        sink = TensorBoardSink(writer=writer)
        for e in range(50, 60):
            sink.write(records(e, LAYERS[:1], shift=0.5))
        sink.write_phase_events([{"layer": LAYERS[0], "epoch": 55, "kind": "fitting_end", "detail": ""}])
    client, tb = tensorboard_client(tmp_path, *loader_flags(load_fast))
    try:
        resumed = [r.i_xt for e in range(50, 60) for r in records(e, LAYERS[:1], shift=0.5)]
        body = wait_for(client, ROUTE + "points?run=run", lambda b: [p["i_xt"] for p in b["points"][50:]] == resumed)
        assert [p["epoch"] for p in body["points"]] == list(range(60))
        assert [e["epoch"] for e in get(client, ROUTE + "phases?run=run")["events"]] == [55]
    finally:
        stop(tb)


def test_every_point_kept_with_the_default_command_line(tmp_path):
    """150 measurements of one layer: all shown (TensorBoard would keep 10 or 100)."""
    write_run(tmp_path / "long", range(150), layers=LAYERS[:1])
    client, tb = tensorboard_client(tmp_path)  # no flags: --load_fast=auto, default sampling
    try:
        body = wait_for(client, ROUTE + "points?run=long", lambda b: len(b["points"]) >= 150, timeout=40)
        assert [p["epoch"] for p in body["points"]] == list(range(150))
    finally:
        stop(tb)
    for fast in ("false", "true"):  # also with either loader forced
        client, tb = tensorboard_client(tmp_path, *loader_flags(fast))
        try:
            assert len(wait_for(client, ROUTE + "points?run=long", lambda b: len(b["points"]) >= 150)["points"]) == 150
        finally:
            stop(tb)


def test_explicit_samples_per_plugin_flag_wins(tmp_path):
    write_run(tmp_path / "long", range(60), layers=LAYERS[:1])
    client, tb = tensorboard_client(
        tmp_path, "--load_fast", "false", "--samples_per_plugin", "information_plane=20",
        "--reload_interval", "0", "--reload_task", "blocking")
    assert len(get(client, ROUTE + "points?run=long")["points"]) == 20


def test_loader_fixes_only_our_sampling():
    flags = type("Flags", (), {"samples_per_plugin": {"images": 5}})()
    InformationPlaneLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 5, "information_plane": 0}


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys, ib_brevitas.tensorboard.plugin; "
            "print(sorted(m for m in ('torch', 'brevitas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("run, group", [
    ("syn-tanh-seed3", "syn-tanh"), ("syn-relu-8b-s0", "syn-relu-8b"), ("tanh/seed_2", "tanh"),
    ("relu_s12", "relu"), ("seed3", "seed3"), ("lenses", "lenses"), ("a-b", "a-b"),
])
def test_group_of(run, group):
    assert group_of(run) == group
