"""The information_plane plugin's routes, served by the real TensorBoard WSGI app.

Event files are written by the real sink (wire format 2), by a copy of the
format-1 writer (old runs), and by hand (bad and future-version data);
TensorBoard is configured exactly as its command line does (plugins from the
entry point, flags fixed by our loader), with the Python loader
(--load_fast=false) and the Rust data server (--load_fast=true).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest
from tensorboard import default, program
from torch.utils.tensorboard import SummaryWriter
from werkzeug.test import Client

from ib_brevitas.files import append_jsonl
from ib_brevitas.phases import COMPRESSION_STARTED, FITTING_ENDED, PhaseEvent
from ib_brevitas.records import LayerMI, read_records
from ib_brevitas.tensorboard import LAYER_TAG_PREFIX, MEASUREMENTS_TAG_PREFIX, wire
from ib_brevitas.tensorboard.plugin import InformationPlaneLoader, group_of
from ib_brevitas.tensorboard.reader import read_event_files
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


def write_v1_run(run_dir, epochs, layers=LAYERS) -> list[LayerMI]:
    """A run as ib-brevitas wrote it before wire format 2: one JSON string per layer and measurement."""
    written = []
    with SummaryWriter(str(run_dir)) as w:
        for e in epochs:
            recs = records(e, layers)
            for r in recs:
                datum = {k: v for k, v in r.to_dict().items() if k not in ("v", "estimator", "saturated", "scale")}
                meta = None if e != epochs[0] else {"version": 1, "kind": "layer", "layer": r.layer,
                                                     "layer_index": r.layer_index, "layers": layers, "group": None}
                add_summary(w, plugin_summary(LAYER_TAG_PREFIX + r.layer, json.dumps(dict(datum, label=r.label)), meta), e)
            written += recs
    return written


def write_raw(run_dir, rows_per_step: dict, meta: dict) -> None:
    """Measurement tensors written by hand (bad or future data)."""
    with SummaryWriter(str(run_dir)) as w:
        for i, (step, rows) in enumerate(rows_per_step.items()):
            add_summary(w, plugin_summary(MEASUREMENTS_TAG_PREFIX + "raw", np.asarray(rows, dtype=np.float64),
                                          meta if i == 0 else None), step)


def records_of(body) -> list[dict]:
    """The points route's columns back as LayerMI dicts."""
    out = []
    for s in body["series"]:
        for i in range(s["n"]):
            d = {f: s[f][i] for f in wire.FIELDS}
            out.append(LayerMI(layer=s["layer"], estimator=s["estimator"], **d).to_dict())
    return out


def by_key(recs) -> list[dict]:
    return sorted(recs, key=lambda d: (d["layer_index"], d["layer"], d["epoch"]))


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


def n_points(body) -> int:
    return sum(s["n"] for s in body["series"])


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


def phase(layer, epoch, kind, detected, **detail) -> PhaseEvent:
    return PhaseEvent(layer=layer, kind=kind, epoch=epoch, i_xt=1.0 + epoch / 100, i_ty=0.5, detected_epoch=detected,
                      detail=detail)


POISON_META = {"version": 2, "kind": "measurements", "fields": list(wire.FIELDS), "layers": LAYERS[:2],
               "estimators": ["exact", "exact"], "group": None}


def poison_rows(epoch: int, bad: str | None) -> list[list[float]]:
    rows = [[float(math.nan if getattr(r, f) is None else getattr(r, f)) for f in wire.FIELDS] for r in records(epoch)[:2]]
    if bad:
        rows[1][wire.FIELDS.index(bad)] = math.nan if bad != "n_distinct" else 2.5
    return rows


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_run(root / "syn-tanh-seed1", range(0, 40, 2), group="syn-tanh")
    write_run(root / "syn-tanh-seed2", range(0, 30, 3), group="syn-tanh")
    with TensorBoardSink(log_dir=root / "syn-tanh-seed1") as sink:
        sink.write_phase_events([
            phase(LAYERS[2], 20, COMPRESSION_STARTED, 30, drop_bits=0.25),
            phase(LAYERS[0], 10.0, FITTING_ENDED, 30),
        ])
        sink.write_hardware_table([{"layer": LAYERS[0], "i_xt": 1.25, "lut": 96}], {"lut": 96, "fps": 1.5e6}, step=38)
    write_v1_run(root / "old-v1", range(0, 12, 3))
    append_jsonl(root / "old-v1" / "mi.jsonl", [r.to_dict() for e in range(0, 12, 3) for r in records(e)])
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
    # Poisoned: NaN in fields the old plugin did not check, and a fractional count.
    write_raw(root / "poisoned", {0: poison_rows(0, None), 1: poison_rows(1, "h_y"), 2: poison_rows(2, "n_samples"),
                                  3: poison_rows(3, "n_distinct"), 4: poison_rows(4, None)}, POISON_META)
    # Written by a future ib-brevitas.
    write_raw(root / "future", {0: poison_rows(0, None)}, dict(POISON_META, version=99))
    return root


@pytest.fixture(scope="module", params=["false", "true"], ids=["python-loader", "rust-loader"])
def client(request, logdir):
    client, tb = tensorboard_client(logdir, *loader_flags(request.param))
    # Loaded completely: the last file of each run is in (the Rust loader works in the background).
    wait_for(client, ROUTE + "points?run=syn-tanh-seed1", lambda b: n_points(b) == 60 and b["skipped"] == 1)
    wait_for(client, ROUTE + "points?run=cut", lambda b: n_points(b) == 30)
    wait_for(client, ROUTE + "points?run=future", lambda b: b["warnings"])
    wait_for(client, ROUTE + "points?run=poisoned", lambda b: n_points(b) == 10 - 3)
    yield client
    stop(tb)


RUNS = ["cut", "future", "old-v1", "poisoned", "syn-tanh-seed1", "syn-tanh-seed2"]


def test_runs_and_versions(client):
    assert get(client, ROUTE + "runs") == RUNS
    versions = get(client, ROUTE + "versions")
    assert sorted(versions) == RUNS
    assert versions["syn-tanh-seed1"]["group"] == "syn-tanh" and versions["old-v1"]["group"] == "old-v1"
    assert all(len(v["version"]) == 16 for v in versions.values())


@pytest.mark.parametrize("run", ["syn-tanh-seed1", "old-v1"])
def test_points_equal_mi_jsonl(client, logdir, run):
    """Wire format 2 and an old format-1 run: every field of every record, as in mi.jsonl."""
    body = get(client, ROUTE + f"points?run={run}")
    expected = [r.to_dict() for r in read_records(logdir / run / "mi.jsonl")]
    assert by_key(records_of(body)) == by_key(expected)
    assert [s["layer"] for s in body["series"]] == LAYERS
    assert [s["label"] for s in body["series"]] == ["T1", "T2", "T3"]
    assert body["bounds"] == {"log2_n": 10.0, "h_y": expected[0]["h_y"]}
    assert body["group"] == ("syn-tanh" if run != "old-v1" else "old-v1")
    assert body["skipped"] == (1 if run == "syn-tanh-seed1" else 0)  # the malformed datum, not a 500
    assert body["warnings"] == []


def test_wire_round_trip_through_the_reader(logdir):
    """The third reader of the format: RunDir.load's fallback for runs without mi.jsonl."""
    for run in ("syn-tanh-seed1", "old-v1"):
        expected = [r.to_dict() for r in read_records(logdir / run / "mi.jsonl")]
        if run == "syn-tanh-seed1":
            with pytest.raises(ValueError, match="1 information-plane values are corrupt"):
                read_event_files(sorted((logdir / run).glob("events.out.tfevents.*")))
            continue
        recs, events = read_event_files(sorted((logdir / run).glob("events.out.tfevents.*")))
        assert by_key([r.to_dict() for r in recs]) == by_key(expected)
    recs, events = read_event_files(sorted((logdir / "syn-tanh-seed2").glob("events.out.tfevents.*")))
    assert by_key([r.to_dict() for r in recs]) == by_key([r.to_dict() for e in range(0, 30, 3) for r in records(e)])


def test_future_version_is_refused_with_a_message(client, logdir):
    body = get(client, ROUTE + "points?run=future")
    assert body["series"] == [] and len(body["warnings"]) == 1
    assert "wire format version 99, newer than this ib-brevitas reads (2); upgrade" in body["warnings"][0]
    with pytest.raises(ValueError, match="version 99, newer"):
        read_event_files(sorted((logdir / "future").glob("events.out.tfevents.*")))


def test_poisoned_data_are_skipped_and_counted(client):
    """NaN / fractional values in one layer: those values skipped and counted, the rest drawn, no 500."""
    body = get(client, ROUTE + "points?run=poisoned")
    assert body["skipped"] == 3
    got = {s["layer"]: s["epoch"] for s in body["series"]}
    assert got == {LAYERS[0]: [0, 1, 2, 3, 4], LAYERS[1]: [0, 4]}
    for route in ("layers", "phases", "hardware", "points?fields=epoch,i_xt,i_ty&x=1"):
        sep = "&" if "?" in route else "?"
        get(client, ROUTE + f"{route}{sep}run=poisoned")  # 200 everywhere
    assert n_points(get(client, ROUTE + "mean?run=poisoned&run=syn-tanh-seed2")) > 0


def test_layers_phases_hardware(client):
    layers = get(client, ROUTE + "layers?run=syn-tanh-seed1")
    assert [(x["layer"], x["label"], x["max_step"]) for x in layers["layers"][:3]] == [
        (n, f"T{i + 1}", 38) for i, n in enumerate(LAYERS)
    ]
    assert layers["has_phases"] and layers["has_hardware"] and layers["version"]
    phases = get(client, ROUTE + "phases?run=syn-tanh-seed1")
    assert [PhaseEvent.from_dict(e) for e in phases["events"]] == [
        phase(LAYERS[0], 10.0, FITTING_ENDED, 30), phase(LAYERS[2], 20, COMPRESSION_STARTED, 30, drop_bits=0.25)]
    hardware = get(client, ROUTE + "hardware?run=syn-tanh-seed1")
    assert hardware["rows"] == [{"layer": LAYERS[0], "i_xt": 1.25, "lut": 96}]
    assert hardware["totals"] == {"lut": 96, "fps": 1.5e6}
    assert get(client, ROUTE + "hardware?run=cut")["rows"] == []
    assert get(client, ROUTE + "phases?run=cut")["events"] == []


def test_mean_route_equals_an_independent_mean(client, logdir):
    """Seeds averaged per layer and epoch over the runs that measured it; s.d. with n - 1."""
    body = get(client, ROUTE + "mean?run=syn-tanh-seed1&run=syn-tanh-seed2")
    assert body["runs"] == ["syn-tanh-seed1", "syn-tanh-seed2"] and body["group"] == "syn-tanh"
    cells = defaultdict(list)
    for run in body["runs"]:
        for r in read_records(logdir / run / "mi.jsonl"):
            cells[(r.layer, r.epoch)].append(r)
    for s in body["series"]:
        assert s["epoch"] == sorted(e for (layer, e) in cells if layer == s["layer"])
        for i, e in enumerate(s["epoch"]):
            rs = cells[(s["layer"], e)]
            assert s["n_runs"][i] == len(rs)
            assert s["i_xt"][i] == pytest.approx(statistics.mean(r.i_xt for r in rs), abs=1e-12)
            assert s["i_ty"][i] == pytest.approx(statistics.mean(r.i_ty for r in rs), abs=1e-12)
            sd = statistics.stdev([r.i_xt for r in rs]) if len(rs) > 1 else 0.0
            assert s["sd_xt"][i] == pytest.approx(sd, abs=1e-12)


def test_fields_argument(client):
    body = get(client, ROUTE + "points?run=syn-tanh-seed2&fields=i_xt,i_ty")
    assert set(body["series"][0]) == {"layer", "label", "index", "estimator", "n", "epoch", "i_xt", "i_ty"}
    assert "unknown fields ['bogus']" in get(client, ROUTE + "points?run=syn-tanh-seed2&fields=bogus", 400)["error"]


def test_truncated_event_file_keeps_complete_records(client):
    body = get(client, ROUTE + "points?run=cut")
    assert {s["layer"]: s["epoch"] for s in body["series"]} == {name: list(range(10)) for name in LAYERS}


@pytest.mark.parametrize("route", ["points", "layers", "phases", "hardware", "mean"])
def test_errors_are_clean_json(client, route):
    assert "missing query argument run" in get(client, ROUTE + route, 400)["error"]
    assert "no information-plane data" in get(client, ROUTE + route + "?run=nope", 404)["error"]
    assert "no information-plane data" in get(client, ROUTE + route + "?run=scalars-only", 404)["error"]


def test_frontend_is_served_and_tab_enabled(client):
    js = client.get(ROUTE + "index.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert b"export { render }" in js.data
    listing = get(client, "/data/plugins_listing")["information_plane"]
    assert listing["enabled"] and listing["tab_name"] == "Information Plane"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": ROUTE + "index.js"}
    static = os.path.join(os.path.dirname(wire.__file__), "static")
    modules = {n for n in os.listdir(static) if n.endswith(".js") and n != "index.js"}
    assert set(re.findall(r'"\./static/([a-z]+\.js)"', js.data.decode())) == modules  # fetched at once
    for name in sorted(os.listdir(static)):
        r = client.get(ROUTE + "static/" + name)
        assert r.status_code == 200 and r.data == open(os.path.join(static, name), "rb").read()
        assert r.headers["Content-Type"].startswith("text/css" if name.endswith(".css") else "text/javascript")


@pytest.mark.parametrize("path", ["static/../plugin.py", "static/..%2fplugin.py", "static/%2e%2e/plugin.py",
                                  "static/nope.js", "static/.hidden.js", "static/", "static/plugin.py",
                                  "static/sub/app.js", "static/%2Fetc%2Fpasswd"])
def test_static_route_path_guard(client, path):
    r = client.get(ROUTE + path)
    assert r.status_code == 404, (path, r.data[:200])


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_resumed_run_shows_no_orphaned_data(tmp_path, load_fast):
    """A run resumed from epoch 50 with SummaryWriter(purge_step=50) re-writes 50..59:
    epochs 60..99 and the phase event at 80 from the first attempt must be gone."""
    run = tmp_path / "run"
    with TensorBoardSink(log_dir=run) as sink:
        for e in range(100):
            sink.write(records(e, LAYERS[:1]))
        sink.write_phase_events([phase(LAYERS[0], 80, COMPRESSION_STARTED, 80)])
    time.sleep(0.05)  # the resumed attempt writes later
    with SummaryWriter(str(run), purge_step=50) as writer:
        sink = TensorBoardSink(writer=writer)
        for e in range(50, 60):
            sink.write(records(e, LAYERS[:1], shift=0.5))
        sink.write_phase_events([phase(LAYERS[0], 55, FITTING_ENDED, 55)])
    client, tb = tensorboard_client(tmp_path, *loader_flags(load_fast))
    try:
        resumed = [r.i_xt for e in range(50, 60) for r in records(e, LAYERS[:1], shift=0.5)]
        body = wait_for(client, ROUTE + "points?run=run",
                        lambda b: b["series"] and b["series"][0]["i_xt"][50:] == resumed)
        assert body["series"][0]["epoch"] == list(range(60))
        assert [e["epoch"] for e in get(client, ROUTE + "phases?run=run")["events"]] == [55]
    finally:
        stop(tb)


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_a_prefit_run_is_drawn_at_its_negative_epochs(tmp_path, load_fast):
    """A 3-epoch random-label prefit writes at step = epoch + 3 (TensorBoard steps are >= 0); the tab's
    routes give the records' own epochs -3..5 and the prefit's phase event at its negative epoch."""
    run = tmp_path / "prefit"
    written = []
    with TensorBoardSink(log_dir=run, step_offset=3) as sink:
        for e in range(-3, 6):
            recs = records(e + 3, LAYERS[:2])
            recs = [dataclasses.replace(r, epoch=e) for r in recs]
            sink.write(recs)
            written += recs
        sink.write_phase_events([phase(LAYERS[0], -2, FITTING_ENDED, -1)])
    with pytest.raises(ValueError, match="step_offset"):
        TensorBoardSink(log_dir=tmp_path / "x", step_offset=-1)
    client, tb = tensorboard_client(tmp_path, *loader_flags(load_fast))
    try:
        body = wait_for(client, ROUTE + "points?run=prefit", lambda b: n_points(b) == len(written))
        assert sorted(records_of(body), key=lambda d: (d["layer_index"], d["epoch"])) == \
            sorted((r.to_dict() for r in written), key=lambda d: (d["layer_index"], d["epoch"]))
        assert body["series"][0]["epoch"] == list(range(-3, 6))
        assert [e["epoch"] for e in get(client, ROUTE + "phases?run=prefit")["events"]] == [-2]
    finally:
        stop(tb)


def test_every_point_kept_with_the_default_command_line(tmp_path):
    """150 measurements of one layer: all shown (TensorBoard would keep 10 or 100)."""
    write_run(tmp_path / "long", range(150), layers=LAYERS[:1])
    client, tb = tensorboard_client(tmp_path)  # no flags: --load_fast=auto, default sampling
    try:
        body = wait_for(client, ROUTE + "points?run=long", lambda b: n_points(b) >= 150, timeout=40)
        assert body["series"][0]["epoch"] == list(range(150))
    finally:
        stop(tb)
    for fast in ("false", "true"):  # also with either loader forced
        client, tb = tensorboard_client(tmp_path, *loader_flags(fast))
        try:
            assert n_points(wait_for(client, ROUTE + "points?run=long", lambda b: n_points(b) >= 150)) == 150
        finally:
            stop(tb)


def test_explicit_samples_per_plugin_flag_wins(tmp_path):
    write_run(tmp_path / "long", range(60), layers=LAYERS[:1])
    client, tb = tensorboard_client(
        tmp_path, "--load_fast", "false", "--samples_per_plugin", "information_plane=20",
        "--reload_interval", "0", "--reload_task", "blocking")
    assert n_points(get(client, ROUTE + "points?run=long")) == 20


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


def parse_plane(data: bytes) -> dict:
    n = int.from_bytes(data[:4], "little")
    header = json.loads(data[4:4 + n])
    values = np.frombuffer(data[4 + n:], dtype="<f4")
    for run in header["runs"].values():
        for s in run["series"]:
            o, k = s["offset"], s["n"]
            s["epoch"], s["i_xt"], s["i_ty"] = (values[o + j * k:o + (j + 1) * k].tolist() for j in range(3))
    return header


def test_plane_route_is_the_sweep_in_float32(client, logdir):
    r = client.get(ROUTE + "plane?run=syn-tanh-seed1&run=syn-tanh-seed2&run=poisoned")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
    body = parse_plane(r.data)
    assert list(body["runs"]) == ["syn-tanh-seed1", "syn-tanh-seed2", "poisoned"]
    assert body["runs"]["poisoned"]["skipped"] == 3
    for run in ("syn-tanh-seed1", "syn-tanh-seed2"):
        want = defaultdict(list)
        for rec in read_records(logdir / run / "mi.jsonl"):
            want[rec.layer].append(rec)
        for s in body["runs"][run]["series"]:
            recs = sorted(want[s["layer"]], key=lambda x: x.epoch)
            assert s["epoch"] == [float(x.epoch) for x in recs]
            assert s["i_xt"] == [float(np.float32(x.i_xt)) for x in recs]
            assert s["i_ty"] == [float(np.float32(x.i_ty)) for x in recs]
    assert "no information-plane data" in get(client, ROUTE + "plane?run=nope", 404)["error"]
    assert "missing query argument" in get(client, ROUTE + "plane", 400)["error"]


def test_exact_and_binned_series_are_never_mixed(tmp_path):
    """One layer measured exactly and by a binning estimator: two series, labelled, averaged apart."""
    import dataclasses

    for seed in (0, 1):
        with TensorBoardSink(log_dir=tmp_path / f"mixed-s{seed}") as sink:
            for e in range(4):
                exact = records(e, LAYERS[:1], shift=seed)
                binned = [dataclasses.replace(r, estimator="binned-30", i_xt=r.i_xt / 2) for r in exact]
                sink.write(exact)
                sink.write(binned)  # same layer, same step, another estimator: its own series
    client, tb = tensorboard_client(tmp_path, *loader_flags("false"))
    try:
        body = get(client, ROUTE + "points?run=mixed-s0")
        got = {(s["layer"], s["estimator"]): s for s in body["series"]}
        assert set(got) == {(LAYERS[0], "exact"), (LAYERS[0], "binned-30")}
        assert got[(LAYERS[0], "binned-30")]["label"] == "T1 (binned-30)" and got[(LAYERS[0], "exact")]["label"] == "T1"
        assert got[(LAYERS[0], "binned-30")]["i_xt"] == [r.i_xt / 2 for e in range(4) for r in records(e, LAYERS[:1])]
        mean = get(client, ROUTE + "mean?run=mixed-s0&run=mixed-s1")
        means = {s["estimator"]: s for s in mean["series"]}
        assert means["exact"]["i_xt"] == pytest.approx(
            [statistics.mean(r.i_xt for s in (0, 1) for r in records(e, LAYERS[:1], shift=s)) for e in range(4)])
        assert means["binned-30"]["n_runs"] == [2, 2, 2, 2]
    finally:
        stop(tb)
