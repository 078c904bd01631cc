"""The library's own pieces: layout direction, record schema versions, atomic files, RunDir."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ib_brevitas.files import append_jsonl, atomic_write, read_jsonl, truncate_jsonl
from ib_brevitas.records import SCHEMA_VERSION, LayerMI, read_records, record_from_dict
from ib_brevitas.rundir import RunDir, RunDirError, RunDirLocked

LIBRARY = [
    "ib_brevitas", "ib_brevitas.functional", "ib_brevitas.codes", "ib_brevitas.layers", "ib_brevitas.state",
    "ib_brevitas.probe", "ib_brevitas.monitor", "ib_brevitas.sinks", "ib_brevitas.records", "ib_brevitas.files",
    "ib_brevitas.formatting", "ib_brevitas.rundir", "ib_brevitas.phases", "ib_brevitas.phase_report",
    "ib_brevitas.plots", "ib_brevitas.tensorboard", "ib_brevitas.tensorboard.summary",
    "ib_brevitas.tensorboard.plugin", "ib_brevitas.tensorboard.reader", "ib_brevitas.export",
    "ib_brevitas.export.qonnx", "ib_brevitas.export.verify", "ib_brevitas.export.report",
    "ib_brevitas.export.finn_bridge", "ib_brevitas.export.cli", "ib_brevitas.export.run", "ib_brevitas.binning",
    "ib_brevitas.binned", "ib_brevitas.distributed", "ib_brevitas.integrations.lightning", "ib_brevitas.seedmean",
]


def test_the_library_imports_nothing_of_the_paper():
    """Importing every library module (and using the monitor) never loads ib_brevitas.experiments."""
    code = (
        "import importlib, sys\n"
        f"for m in {LIBRARY!r}: importlib.import_module(m)\n"
        "import torch; from brevitas.nn import QuantReLU, QuantLinear\n"
        "from ib_brevitas import InformationPlane\n"
        "m = torch.nn.Sequential(QuantLinear(4, 3, bias=True), QuantReLU(bit_width=4))\n"
        "InformationPlane(m, torch.rand(8, 4), torch.arange(8) % 2).measure(0)\n"
        "bad = sorted(k for k in sys.modules if k.startswith('ib_brevitas.experiments'))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_the_direction_check_can_fail():
    """The same check notices a library import of the application (here done on purpose)."""
    code = "import sys, ib_brevitas.models; assert any(k.startswith('ib_brevitas.experiments') for k in sys.modules)"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_moved_modules_still_import_with_a_deprecation_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n    import ib_brevitas.models\nexcept DeprecationWarning as w:\n    print(w)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "moved to ib_brevitas.experiments.models" in proc.stdout
    with pytest.warns(DeprecationWarning):
        import importlib

        sys.modules.pop("ib_brevitas.data", None)
        data = importlib.import_module("ib_brevitas.data")
    assert data.syn_dataset()[0].shape == (4096, 12)


def _record(**kw) -> LayerMI:
    base = dict(layer="T1", epoch=0, step=None, i_xt=3.0, i_ty=0.5, h_t=3.0, n_distinct=8, n_samples=16,
                bit_width=4, width=2, layer_index=0, h_y=1.0)
    return LayerMI(**{**base, **kw})


def test_records_carry_their_schema_version_and_round_trip():
    r = _record(scale=0.25, saturated=False, estimator="exact")
    d = r.to_dict()
    assert d["v"] == SCHEMA_VERSION
    assert record_from_dict(json.loads(json.dumps(d))) == r


def test_a_version_1_record_reads_with_the_new_fields_defaulted(tmp_path):
    v1 = {k: v for k, v in _record().to_dict().items() if k not in ("v", "estimator", "saturated", "scale")}
    path = tmp_path / "mi.jsonl"
    append_jsonl(path, [v1])
    (r,) = read_records(path)
    assert r.estimator == "exact" and r.saturated is False and r.scale is None and r.i_xt == 3.0


def test_a_newer_schema_version_is_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "mi.jsonl"
    append_jsonl(path, [_record().to_dict(), {**_record(epoch=1).to_dict(), "v": SCHEMA_VERSION + 1}])
    with pytest.raises(ValueError, match=rf"mi.jsonl: line 2: written with record schema version {SCHEMA_VERSION + 1}"):
        read_records(path)


@pytest.mark.parametrize("bad, match", [
    ({"i_xt": "3"}, "field 'i_xt'"), ({"epoch": 1.5}, "field 'epoch'"), ({"i_xt": float("nan")}, "non-finite"),
    ({"layer": None}, "field 'layer'"), ({"saturated": "yes"}, "field 'saturated'"),
])
def test_wrongly_typed_records_are_refused(bad, match):
    d = {**_record().to_dict(), **bad}
    with pytest.raises(ValueError, match=match):
        record_from_dict(d, "mi.jsonl: line 7")


def test_atomic_write_replaces_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "config.json"
    atomic_write(path, "old\n")
    atomic_write(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_full_disk_names_the_path_and_leaves_no_temp_file(tmp_path):
    """On a real 64 KiB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        target = mnt / "checkpoints" / "last.pt"
        with pytest.raises(OSError, match="no space left on device while writing .*last.pt"):
            atomic_write(target, b"x" * (1 << 20))
        assert list(target.parent.iterdir()) == []
        with pytest.raises(OSError, match="no space left on device while writing .*mi.jsonl"):
            append_jsonl(mnt / "mi.jsonl", [{"pad": "y" * 4096}] * 64)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_torn_tail_is_dropped_and_truncate_removes_it(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"epoch": 0}, {"epoch": 1}])
    with open(path, "a") as f:
        f.write('{"epoch": 2, "i_')
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        assert read_jsonl(path) == [{"epoch": 0}, {"epoch": 1}]
    assert truncate_jsonl(path, lambda r: r["epoch"] <= 0) == 1
    assert path.read_text() == '{"epoch": 0}\n'


@pytest.mark.parametrize("content, match", [
    ("", "is not valid JSON"), ("{not json", "is not valid JSON"), ("[]", "holds list, not a JSON object"),
    (b"\xff\xfe", "is not valid JSON"),
])
def test_a_damaged_config_is_explained(tmp_path, content, match):
    rd = RunDir(tmp_path)
    if isinstance(content, bytes):
        rd.config_path.write_bytes(content)
    else:
        rd.config_path.write_text(content)
    with pytest.raises(RunDirError, match=match):
        rd.read_config()


def test_a_damaged_or_foreign_checkpoint_is_explained(tmp_path):
    import torch

    rd = RunDir(tmp_path)
    rd.save_checkpoint({"epoch": 3, "model": {}})
    data = rd.checkpoint_path.read_bytes()
    rd.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="last.pt is damaged or not a checkpoint"):
        rd.load_checkpoint()
    torch.save([1, 2, 3], rd.checkpoint_path)
    with pytest.raises(RunDirError, match="not an ib-brevitas checkpoint"):
        rd.load_checkpoint()


def test_the_lock_names_the_holder_and_dies_with_it(tmp_path):
    rd = RunDir(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from ib_brevitas.rundir import RunDir\n"
                               f"with RunDir({str(rd.path)!r}).lock():\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"in use by process {holder.pid}"):
            with rd.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with rd.lock():  # a killed holder leaves no stale lock
        pass


def test_run_data_loads_records_events_and_config(tmp_path):
    from ib_brevitas.phases import FITTING_ENDED, PhaseEvent

    rd = RunDir(tmp_path / "r")
    rd.write_config({"seed": 1})
    rd.append_records([_record(epoch=e) for e in range(3)])
    event = PhaseEvent("T1", FITTING_ENDED, 1, 3.0, 0.5, 2)
    rd.append_events([event])
    run = rd.load()
    assert run.config == {"seed": 1} and [r.epoch for r in run.records] == [0, 1, 2] and run.events == [event]
    assert dataclasses.replace(run.records[0]) == _record()


def test_model_and_probe_rebuild_from_factories_or_files(tmp_path):
    import numpy as np
    import torch

    from ib_brevitas.experiments.data import syn_dataset
    from ib_brevitas.experiments.models import syn_mlp
    from ib_brevitas.rundir import factory_spec

    rd = RunDir(tmp_path / "f")
    rd.write_config({"model": factory_spec(syn_mlp, activation="relu", bits=4), "probe": factory_spec(syn_dataset)})
    assert type(rd.build_model()).__name__ == "SynMLP" and rd.probe_set()[0].shape == (4096, 12)
    rd2 = RunDir(tmp_path / "p")
    rd2.write_config({})
    model = torch.nn.Linear(3, 2)
    rd2.save_model(model)
    rd2.save_probe(np.zeros((5, 3), np.float32), np.arange(5))
    assert isinstance(rd2.build_model(), torch.nn.Linear)
    x, y = rd2.probe_set()
    assert x.shape == (5, 3) and list(y) == [0, 1, 2, 3, 4]
    rd3 = RunDir(tmp_path / "none")
    rd3.write_config({"model": {"factory": "no.such.module:fn"}})
    with pytest.raises(RunDirError, match="cannot import the model factory"):
        rd3.build_model()
    assert os.path.exists(rd3.config_path)
