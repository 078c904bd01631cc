"""TensorBoardSink: what lands in the event file (wire format 2), read back with TensorBoard's own loader."""

from __future__ import annotations

import dataclasses
import glob
import json
import math

import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from ib_brevitas.phases import COMPRESSION_STARTED, EVENT_KINDS, FITTING_ENDED, PhaseEvent
from ib_brevitas.records import LayerMI
from ib_brevitas.sinks import Sink
from ib_brevitas.tensorboard import HARDWARE_TAG, MEASUREMENTS_TAG_PREFIX, PHASES_TAG, PLUGIN_NAME, WIRE_VERSION, wire
from ib_brevitas.tensorboard.summary import TensorBoardSink

LAYERS = ["features.0.act", "features.2.act", "head.out_quant"]


def make_records(epoch: int) -> list[LayerMI]:
    return [
        LayerMI(layer=name, epoch=epoch, step=epoch * 7, i_xt=math.pi * (i + 1) / (epoch + 3),
                i_ty=1 / (epoch + i + 2), h_t=math.pi * (i + 1) / (epoch + 3), n_distinct=40 + i,
                n_samples=4096, bit_width=8, width=10 - i, layer_index=i, h_y=0.9985)
        for i, name in enumerate(LAYERS)
    ]


def read_events(log_dir) -> list:
    """Every (step, Summary.Value) in the run directory, in file order."""
    out = []
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        for event in event_file_loader.LegacyEventFileLoader(path).Load():
            if event.HasField("summary"):
                out.extend((event.step, v) for v in event.summary.value)
    return out


def test_one_numeric_tensor_per_measurement(tmp_path):
    written = {e: make_records(e) for e in (0, 5, 10)}
    written[5] = [dataclasses.replace(r, step=None, scale=0.125, saturated=True) for r in written[5]]
    with TensorBoardSink(log_dir=tmp_path, group="syn-tanh") as sink:
        for recs in written.values():
            sink.write(recs)
    values = read_events(tmp_path)
    plugin = [(s, v) for s, v in values if v.tag.startswith(MEASUREMENTS_TAG_PREFIX)]
    assert [s for s, _ in plugin] == [0, 5, 10]  # one value per measurement, every layer in it
    assert len({v.tag for _, v in plugin}) == 1
    assert plugin[0][1].HasField("metadata") and not plugin[1][1].HasField("metadata")  # sent once
    meta = plugin[0][1].metadata
    assert meta.plugin_data.plugin_name == PLUGIN_NAME and meta.data_class == summary_pb2.DATA_CLASS_TENSOR
    content = json.loads(meta.plugin_data.content)
    assert content["version"] == WIRE_VERSION and content["layers"] == LAYERS and content["group"] == "syn-tanh"
    assert content["estimators"] == ["exact"] * 3 and content["fields"] == list(wire.FIELDS)
    for step, v in plugin:
        tensor = tensor_util.make_ndarray(v.tensor)
        assert tensor.dtype == "float64" and tensor.shape == (len(LAYERS), len(wire.FIELDS))
        for row, rec in zip(tensor.tolist(), written[step]):  # exact, every field
            expect = [math.nan if getattr(rec, f) is None else float(getattr(rec, f)) for f in wire.FIELDS]
            assert [x if not math.isnan(x) else "nan" for x in row] == [
                x if not math.isnan(x) else "nan" for x in expect]
    scalars = {(s, v.tag): v.simple_value for s, v in values if v.tag.startswith("ib/")}
    for step, recs in written.items():
        for r in recs:
            assert scalars[(step, f"ib/I_XT/{r.layer}")] == pytest.approx(r.i_xt, rel=1e-6)
            assert scalars[(step, f"ib/I_TY/{r.layer}")] == pytest.approx(r.i_ty, rel=1e-6)


def test_sink_protocol(tmp_path):
    """write(records) with step = their epoch, callable like any sink, close()."""
    sink = TensorBoardSink(log_dir=tmp_path)
    assert isinstance(sink, Sink)
    sink.write(make_records(4))
    sink(make_records(9))
    sink.close()
    steps = [s for s, v in read_events(tmp_path) if v.tag.startswith(MEASUREMENTS_TAG_PREFIX)]
    assert steps == [4, 9]


def test_user_writer_is_used_and_left_open(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer=writer)
    sink.write(make_records(3), step=30)
    sink.close()
    writer.add_scalar("after", 1.0, 31)  # still usable: the sink only flushed it
    writer.close()
    files = glob.glob(f"{tmp_path}/events.out.tfevents.*")
    assert len(files) == 1  # no second event file next to the user's
    steps = {s for s, v in read_events(tmp_path) if v.tag.startswith(MEASUREMENTS_TAG_PREFIX)}
    assert steps == {30}


def event(layer, epoch, kind, detected, **detail) -> PhaseEvent:
    return PhaseEvent(layer=layer, kind=kind, epoch=epoch, i_xt=1.5, i_ty=0.25, detected_epoch=detected, detail=detail)


def test_phase_events_merge_per_step_and_go_to_text(tmp_path):
    with TensorBoardSink(log_dir=tmp_path) as sink:
        sink.write_phase_events([event("a", 10, FITTING_ENDED, 20, gain_bits=0.5)])
        sink.write_phase_events([event("b", 15.0, COMPRESSION_STARTED, 20)])
    values = read_events(tmp_path)
    phases = [(s, json.loads(tensor_util.make_ndarray(v.tensor).item())) for s, v in values if v.tag == PHASES_TAG]
    assert [s for s, _ in phases] == [20, 20]
    assert [PhaseEvent.from_dict(e) for e in phases[-1][1]] == [  # the last value at a step holds all
        event("a", 10, FITTING_ENDED, 20, gain_bits=0.5), event("b", 15.0, COMPRESSION_STARTED, 20)]
    texts = [tensor_util.make_ndarray(v.tensor).item().decode() for s, v in values if v.tag.startswith("ib/phases")]
    assert FITTING_ENDED in texts[0] and "gain_bits=0.5" in texts[0] and COMPRESSION_STARTED in texts[1]
    assert FITTING_ENDED in EVENT_KINDS and COMPRESSION_STARTED in EVENT_KINDS  # kinds the detector emits


def test_hardware_table(tmp_path):
    rows = [{"layer": "features.0.act", "i_xt": 3.5, "lut": 120}]
    with TensorBoardSink(log_dir=tmp_path) as sink:
        sink.write_hardware_table(rows, {"lut": 120, "fps": 1e6}, step=50)
    (step, v), = [(s, v) for s, v in read_events(tmp_path) if v.tag == HARDWARE_TAG]
    assert step == 50
    assert json.loads(tensor_util.make_ndarray(v.tensor).item()) == {"rows": rows, "totals": {"lut": 120, "fps": 1e6}}


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda s: s.write([{"layer": "x"}]), ValueError, "lacks the LayerMI fields"),
        (lambda s: s.write([1.5]), TypeError, "expected LayerMI records"),
        (lambda s: s.write(make_records(1) + make_records(1)[:1]), ValueError, "appear twice"),
        (lambda s: s.write(make_records(1), step=-1), ValueError, "non-negative integer"),
        (lambda s: s.write([dataclasses.replace(make_records(1)[0], i_xt=float("nan"))]), ValueError, "NaN"),
        (lambda s: s.write(make_records(1) + [dataclasses.replace(make_records(2)[0], layer="z")]), ValueError,
         "write each epoch separately"),
        (lambda s: s.write_phase_events([{"layer": "a", "epoch": 1, "kind": FITTING_ENDED}]), TypeError, "PhaseEvent"),
        (lambda s: s.write_phase_events([event("a", -2, FITTING_ENDED, 3)]), ValueError, "epoch"),
        (lambda s: s.write_hardware_table({"a": 1}, {}), TypeError, "rows must be a list"),
        (lambda s: s.write_hardware_table([], [1]), TypeError, "totals must be a dict"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, call, error, match):
    with TensorBoardSink(log_dir=tmp_path) as sink:
        with pytest.raises(error, match=match):
            call(sink)


def test_constructor_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly one of writer"):
        TensorBoardSink()
    with pytest.raises(ValueError, match="exactly one of writer"):
        TensorBoardSink(writer=object(), log_dir=tmp_path)
    with pytest.raises(TypeError, match="SummaryWriter"):
        TensorBoardSink(writer=object()).write(make_records(0))
