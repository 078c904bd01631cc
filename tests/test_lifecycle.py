"""The monitor's lifecycle and its guarded inputs: with/close, state_dict resume in a plain loop, sinks."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU

from ib_brevitas import InformationPlane
from ib_brevitas.experiments.paper_run import build_run, train_epoch
from ib_brevitas.rundir import RunDir, RunDirError
from ib_brevitas.sinks import JsonlSink
from ib_brevitas.state import counters_state, load_counters_state

CONFIG = dict(seed=4, test_fraction=0.2, activation="relu", bits=8, lr=1e-3, batch_size=256, engine="brevitas")


def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(QuantLinear(6, 5, bias=True), QuantReLU(bit_width=3), QuantLinear(5, 3, bias=True),
                                QuantIdentity(bit_width=4))
    x = torch.rand(64, 6)
    y = torch.arange(64) % 3
    return model, x, y


def _ib_threads() -> int:
    return sum(t.name.startswith("ib-brevitas-mi") for t in threading.enumerate())


def test_with_flushes_and_stops_the_worker_also_on_an_exception():
    model, x, y = _tiny()
    seen = []
    with pytest.raises(KeyError):
        with InformationPlane(model, x, y) as plane:
            plane.add_sink(seen.append)
            for epoch in range(3):
                plane.measure_async(epoch)
            raise KeyError("the user's own error")
    assert [r[0].epoch for r in seen] == [0, 1, 2]  # all pending measurements reached the sink
    assert plane.closed and _ib_threads() == 0
    with pytest.raises(RuntimeError, match="closed"):
        plane.measure(3)
    with pytest.raises(RuntimeError, match="closed"):
        plane.measure_async(3)
    plane.close()  # idempotent


def test_close_closes_sinks_that_can_be_closed():
    model, x, y = _tiny()

    class Closing:
        closed = False

        def write(self, records):
            pass

        def close(self):
            self.closed = True

    sink = Closing()
    plane = InformationPlane(model, x, y)
    plane.add_sink(sink)
    plane.measure(0)
    plane.close()
    assert sink.closed


def test_one_sink_protocol_objects_and_callables():
    model, x, y = _tiny()
    plane = InformationPlane(model, x, y)
    got_obj, got_fn = [], []

    class Obj:
        def write(self, records):
            got_obj.append(records)

    plane.add_sink(Obj())
    plane.add_sink(got_fn.append)
    records = plane.measure(0)
    assert got_obj == got_fn == [records]
    with pytest.raises(TypeError, match="write\\(records\\)"):
        plane.add_sink("mi.jsonl")


def _plain_loop(run_dir, epochs, stop_after=None, resume_from=None):
    """A user's own loop: train, measure, checkpoint the model (with Brevitas' step counters), optimizer, plane."""
    run = build_run(CONFIG)
    start = 0
    if resume_from is not None:
        run.model.load_state_dict(resume_from["model"])
        load_counters_state(run.model, resume_from["counters"])
        run.optimizer.load_state_dict(resume_from["optimizer"])
        run.shuffle.set_state(resume_from["shuffle"])
        run.plane.load_state_dict(resume_from["plane"])
        start = resume_from["epoch"]
    ckpt = None
    with run.plane as plane:
        plane.record_to(run_dir)
        if resume_from is None:
            plane.measure_async(0)
        for epoch in range(start + 1, epochs + 1):
            train_epoch(run)
            plane.measure_async(epoch)
            if epoch % 2 == 0:
                ckpt = copy.deepcopy({"epoch": epoch, "model": run.model.state_dict(), "counters": counters_state(run.model),
                        "optimizer": run.optimizer.state_dict(),
                        "shuffle": run.shuffle.get_state(), "plane": plane.state_dict()})  # as torch.save would
            if epoch == stop_after:
                return ckpt
        plane.finish_phases()
    return ckpt


def test_state_dict_resume_in_a_plain_loop_equals_an_uninterrupted_run(tmp_path):
    _plain_loop(tmp_path / "whole", epochs=5)
    ckpt = _plain_loop(tmp_path / "cut", epochs=5, stop_after=3)  # checkpoint at 2, records to 3
    assert len(RunDir(tmp_path / "cut").read_records()) == 4 * 6
    _plain_loop(tmp_path / "cut", epochs=5, resume_from=ckpt)
    whole, cut = RunDir(tmp_path / "whole"), RunDir(tmp_path / "cut")
    assert cut.read_records() == whole.read_records()
    assert cut.read_events() == whole.read_events()


def test_a_fresh_plane_refuses_a_directory_with_records(tmp_path):
    model, x, y = _tiny()
    with InformationPlane(model, x, y) as plane:
        plane.record_to(tmp_path)
        plane.measure(0)
    with InformationPlane(model, x, y) as plane:
        with pytest.raises(RunDirError, match="already holds records"):
            plane.record_to(tmp_path)


def test_load_state_dict_checks_it_fits():
    model, x, y = _tiny()
    a = InformationPlane(model, x, y)
    a.measure(0)
    state = a.state_dict()
    b = InformationPlane(model, x[:32], y[:32])
    with pytest.raises(ValueError, match="same model and probe set"):
        b.load_state_dict(state)
    c = InformationPlane(model, x, y)
    c.load_state_dict(state)
    assert c.history == a.history
    with pytest.raises(ValueError, match="not an InformationPlane state_dict"):
        c.load_state_dict({"history": []})


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layers=None), TypeError, "layers must be 'auto'"),
    (dict(batch_size=100.5), TypeError, "batch_size must be an integer"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(verify_every=0), ValueError, "verify_every must be >= 1"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    model, x, y = _tiny()
    with pytest.raises(error, match=match):
        InformationPlane(model, x, y, **kwargs)


def test_probe_inputs_that_do_not_fit_the_model_are_named():
    model, _, y = _tiny()
    with pytest.raises(ValueError, match=r"cannot run the probe inputs of shape \(64, 7\)"):
        InformationPlane(model, torch.rand(64, 7), y)


def test_float_labels_say_long_not_int_codes():
    model, x, _ = _tiny()
    with pytest.raises(TypeError, match=r"labels.long\(\)"):
        InformationPlane(model, x, torch.rand(64))


def test_measure_takes_integer_epochs_only():
    model, x, y = _tiny()
    plane = InformationPlane(model, x, y)
    with pytest.raises(TypeError, match="epoch must be an integer, got 1.5"):
        plane.measure(1.5)
    assert plane.history == []
    plane.measure(np.int64(2))
    assert plane.history[0].epoch == 2


def test_log_to_wants_an_open_summary_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model, x, y = _tiny()
    plane = InformationPlane(model, x, y)
    with pytest.raises(TypeError, match="SummaryWriter"):
        plane.log_to(str(tmp_path))
    writer = SummaryWriter(tmp_path)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        plane.log_to(writer)


def test_default_batch_runs_a_small_probe_set_in_one_pass():
    run = build_run(CONFIG)
    plane = InformationPlane(run.model, run.plane.inputs, run.plane.labels.ravel())
    assert plane.batch_size == 4096


def test_a_probe_set_where_every_layer_is_injective_warns():
    model, x, y = _tiny()
    x = torch.eye(6)[:4] * 3  # four very different inputs
    with pytest.warns(RuntimeWarning, match="probe set is too\\s+small"):
        InformationPlane(model, x, torch.arange(4) % 2, layers=["1"]).measure(0)


def test_a_quantizer_disabled_after_building_is_named_and_leaves_no_hook():
    model, x, y = _tiny()
    plane = InformationPlane(model, x, y)
    proxy = model[1].act_quant
    proxy.disable_quant = True
    with pytest.raises(ValueError, match="layer '1' .* quantizer disabled"):
        plane.measure(0)
    # no hook left behind: the user's own training forward runs untouched
    assert all(not m._forward_hooks for m in model.modules())
    model.train()
    for _ in range(20):
        model(x).sum().backward()


def test_jsonl_sink_still_callable(tmp_path):
    sink = JsonlSink(tmp_path / "mi.jsonl")
    model, x, y = _tiny()
    records = InformationPlane(model, x, y).measure(0)
    sink(records)
    assert RunDir(tmp_path).read_records() == records


def test_scales_fn_is_used_between_checks_and_dropped_when_wrong():
    run = build_run({**CONFIG, "engine": "fast"})
    true = {}
    calls = []

    def good():
        calls.append(1)
        return dict(true)

    plane = InformationPlane(run.model, run.plane.inputs, run.plane.labels.ravel(), codes_fn=run.fast.codes,
                             verify_every=3, scales_fn=good)
    true.update({r.layer: r.scale for r in InformationPlane(run.model, run.plane.inputs,
                                                            run.plane.labels.ravel()).measure(0)})
    records = [plane.measure(e) for e in range(4)]
    assert all(r.scale == true[r.layer] for rs in records for r in rs)
    assert len(calls) == 4  # passes 0 and 3 compare, 1 and 2 use it
    real_t1 = true["T1"]
    true["T1"] *= 2  # now wrong: the next check drops it
    with pytest.warns(RuntimeWarning, match="scales_fn disagrees"):
        for e in range(4, 7):
            plane.measure(e)
    assert plane.scales_fn is None
    last_t1 = [r for r in plane.history if r.layer == "T1"][-1]
    assert last_t1.scale == pytest.approx(real_t1, rel=0.5) and last_t1.scale != true["T1"]
