"""`ib-brevitas export RUN_DIR` on any run directory the library writes, and its corrupt-file policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from independent import hooked_codes

from ib_brevitas.cli import main
from ib_brevitas.experiments.data import syn_dataset
from ib_brevitas.experiments.models import syn_mlp
from ib_brevitas.export import ExportReport
from ib_brevitas.functional import entropy
from ib_brevitas.rundir import RunDir, factory_spec


def syn_run(path: Path, activation="relu", bits=4, seed=3, epoch=7) -> tuple[RunDir, torch.nn.Module]:
    """A SYN run directory as `ib-brevitas train` now writes it: model and probe factories in config.json."""
    torch.manual_seed(seed)
    model = syn_mlp(activation, bits)
    with torch.no_grad():
        for i in range(1, 7):
            getattr(model, f"fc{i}").bias.uniform_(-0.5, 0.5)
    rd = RunDir(path)
    rd.write_config({
        "dataset": "syn", "activation": activation, "bits": bits, "seed": seed,
        "model": factory_spec(syn_mlp, activation=activation, bits=bits), "probe": factory_spec(syn_dataset),
    })
    rd.save_checkpoint({"epoch": epoch, "model": model.state_dict()})
    return rd, model


def test_factory_run_dir(tmp_path):
    rd, model = syn_run(tmp_path / "run")
    assert main(["export", str(rd.path)]) == 0
    report = ExportReport.load(rd.export_dir / "verify_qonnx.json")
    assert report.ok and report.n_samples == 4096 and [c.layer for c in report.layers] == [f"T{i}" for i in range(1, 7)]
    x = torch.from_numpy(syn_dataset()[0]).float()
    expected = hooked_codes(model, x, ["T3"])["T3"]
    assert report.layers[2].i_xt_graph == pytest.approx(entropy(expected), abs=1e-12)
    assert not list(rd.export_dir.glob(".*.tmp"))  # atomic writes leave no temp file behind


def test_foreign_model_run_dir(tmp_path):
    """A bnn_pynq tfc_2w2a run: a factory in config.json, probe.npz, and the checkpoint's weights."""
    from brevitas_examples.bnn_pynq.models import tfc_2w2a

    torch.manual_seed(0)
    untrained = tfc_2w2a(pretrained=False)
    torch.manual_seed(1)
    trained = tfc_2w2a(pretrained=False)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(96, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (96,), generator=gen)
    rd = RunDir(tmp_path / "tfc")
    rd.write_config({"model": factory_spec(tfc_2w2a, pretrained=False)})
    rd.save_probe(x.numpy(), y.numpy())
    rd.save_checkpoint({"epoch": 0, "model": trained.state_dict()})

    assert main(["export", str(rd.path)]) == 0
    report = ExportReport.load(rd.export_dir / "verify_qonnx.json")
    assert report.ok and report.n_samples == 96 and len(report.layers) == 4
    # The graph is the trained model's (checked against an independently built copy), not a fresh one's.
    from ib_brevitas.export import verify

    graph = rd.export_dir / "model.qonnx.onnx"
    assert verify(trained, graph, x, y).ok
    assert not verify(untrained, graph, x, y).ok  # the check can tell the weights apart


def test_a_trained_run_exports_with_the_logged_information(tmp_path, capsys):
    """`ib-brevitas train`, then `export`: the graph's MI equals what training logged at the checkpoint."""
    run = tmp_path / "trained"
    assert main(["train", "--dataset", "syn", "--activation", "relu", "--bits", "8", "--epochs", "2",
                 "--mi-every", "1", "--seed", "0", "--no-progress", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert "vs mi.jsonl at epoch 2: equal" in out


def _one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ib-brevitas export: error: ")
    for name in names:
        assert name in err[0]
    return err[0]


CORRUPTIONS = {
    "config garbage": (lambda rd: rd.config_path.write_text("{not json"), "config.json"),
    "config a list": (lambda rd: rd.config_path.write_text("[]"), "config.json"),
    "checkpoint truncated": (lambda rd: rd.checkpoint_path.write_bytes(rd.checkpoint_path.read_bytes()[:300]),
                             "last.pt"),
    "checkpoint foreign": (lambda rd: rd.checkpoint_path.write_text("hello, not a checkpoint"), "last.pt"),
    "checkpoint a list": (lambda rd: torch.save([1, 2, 3], rd.checkpoint_path), "last.pt"),
    "checkpoint of another model": (
        lambda rd: torch.save({"epoch": 1, "model": torch.nn.Linear(3, 2).state_dict()}, rd.checkpoint_path),
        "last.pt"),
    "checkpoint without weights": (lambda rd: torch.save({"epoch": 1}, rd.checkpoint_path), "last.pt"),
    "checkpoint missing": (lambda rd: rd.checkpoint_path.unlink(), "last.pt"),
    "probe garbage": (lambda rd: rd.probe_path.write_bytes(b"PK\x03\x04 not a zip"), "probe.npz"),
    "model.pt garbage": (lambda rd: (rd.write_config({k: v for k, v in rd.read_config().items() if k != "model"}),
                                     rd.model_path.write_bytes(b"garbage")), "model.pt"),
    "model factory unknown": (
        lambda rd: rd.write_config({**rd.read_config(), "model": {"factory": "nowhere.mod:net", "kwargs": {}}}),
        "config.json"),
    "model factory refuses": (
        lambda rd: rd.write_config({**rd.read_config(), "model": factory_spec(syn_mlp, colour="red")}),
        "config.json"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_run_dir_is_one_line_and_exit_2(tmp_path, capsys, case):
    rd, _ = syn_run(tmp_path / "run")
    damage, name = CORRUPTIONS[case]
    damage(rd)
    assert main(["export", str(rd.path)]) == 2
    _one_error_line(capsys, name)
    assert not rd.export_dir.exists()  # refused before anything was written


def test_old_syn_run_dir_without_factories(tmp_path):
    """Runs written before config.json named factories: rebuilt from dataset/activation/bits."""
    rd, model = syn_run(tmp_path / "old", activation="tanh", bits=4)
    config = rd.read_config()
    del config["model"], config["probe"]
    rd.write_config(config)
    from ib_brevitas.export.run import load_run

    run = load_run(rd.path)
    assert run.epoch == 7 and run.inputs.shape == (4096, 12) and run.inputs.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), model.state_dict().values()))


def test_export_modules_do_not_import_the_paper():
    """The compatibility path imports experiments lazily; importing export and its CLI does not."""
    import subprocess

    code = ("import sys, ib_brevitas.export.cli, ib_brevitas.export.run, ib_brevitas.export; "
            "print(any(m.startswith('ib_brevitas.experiments') for m in sys.modules), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_tanh_with_finn_on_a_zynq_part_is_refused_before_starting(tmp_path, capsys):
    """The demo's own network (tanh): FINN would fail late with `PWPolyF ... only on Versal`."""
    fake_env = tmp_path / "finn-env"
    (fake_env / "bin").mkdir(parents=True)
    (fake_env / "bin" / "python").symlink_to(sys.executable)  # exists; never run: refused first
    rd, _ = syn_run(tmp_path / "tanh", activation="tanh", bits=8)
    assert main(["export", str(rd.path), "--finn", "--finn-env", str(fake_env)]) == 2
    line = _one_error_line(capsys, "Tanh", "Versal", "--fpga-part xcvc1902-vsva2197-2MP-e-S", "relu")
    assert "xc7z020clg400-1" in line
    assert not rd.export_dir.exists()


def test_finn_estimate_refuses_tanh_on_a_zynq_part_from_python(tmp_path):
    from ib_brevitas.export import finn_estimate
    from ib_brevitas.export.finn_bridge import FinnPartUnsupported

    fake_env = tmp_path / "finn-env"
    (fake_env / "bin").mkdir(parents=True)
    (fake_env / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(FinnPartUnsupported, match="fpga_part="):
        finn_estimate(syn_mlp("tanh", 4), torch.zeros(8, 12), tmp_path / "out", env_dir=fake_env)
    assert not (tmp_path / "out" / "worker").exists()  # FINN never started


def test_check_part_on_graphs(tmp_path):
    from ib_brevitas.export import to_qonnx
    from ib_brevitas.export.finn_bridge import FinnPartUnsupported, check_part

    x = torch.zeros(1, 12)
    tanh = to_qonnx(syn_mlp("tanh", 4), x, tmp_path / "tanh.onnx")
    relu = to_qonnx(syn_mlp("relu", 4), x, tmp_path / "relu.onnx")
    with pytest.raises(FinnPartUnsupported, match="Versal"):
        check_part(tanh, "xc7z020clg400-1")
    check_part(tanh, "xcvc1902-vsva2197-2MP-e-S")
    check_part(relu, "xc7z020clg400-1")


@pytest.mark.parametrize("argv,match", [
    (["--clock-ns", "0"], "--clock-ns"), (["--clock-ns", "nan"], "--clock-ns"), (["--target-fps", "0"], "--target-fps"),
])
def test_impossible_numbers_are_refused(tmp_path, capsys, argv, match):
    rd, _ = syn_run(tmp_path / "run")
    assert main(["export", str(rd.path), *argv]) == 2
    _one_error_line(capsys, match)


def test_output_is_written_atomically(tmp_path, monkeypatch):
    """A crash while the ONNX file is written leaves the previous file whole."""
    from ib_brevitas import files

    rd, _ = syn_run(tmp_path / "run")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")

    def crash(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", crash)
    assert main(["export", str(rd.path), "-o", str(out)]) == 1
    assert out.read_bytes() == b"previous" and not list(tmp_path.glob(".model.onnx.*.tmp"))
    assert json.loads(rd.config_path.read_text())["activation"] == "relu"


def test_ctrl_c_during_the_finn_step_stops_the_worker_too(tmp_path):
    """SIGINT to `export --finn` while FINN runs: exit 130, one line, and the worker process is gone."""
    import os
    import signal
    import subprocess
    import time

    fake_env = tmp_path / "finn-env"
    (fake_env / "bin").mkdir(parents=True)
    pid_file = tmp_path / "worker.pid"
    worker = fake_env / "bin" / "python"
    worker.write_text(f"#!/bin/sh\necho $$ > {pid_file}\necho '[finn-worker] pretending to build'\nexec sleep 60\n")
    worker.chmod(0o755)
    rd, _ = syn_run(tmp_path / "run", activation="relu", bits=4)
    proc = subprocess.Popen([sys.executable, "-m", "ib_brevitas", "export", str(rd.path), "--finn",
                             "--finn-env", str(fake_env)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait until the bridge relays the worker's progress line
            if "pretending to build" in line:
                break
        worker_pid = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "ib-brevitas export: error: interrupted" and "Traceback" not in err
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def test_a_lightning_run_exports(tmp_path, capsys):
    """InformationPlaneCallback's log dir (config.json from the module's hyperparameters, probe.npz, last.pt)."""
    pytest.importorskip("lightning")
    import lightning_tfc

    from ib_brevitas.integrations.lightning import InformationPlaneCallback

    x, y = lightning_tfc.probe_set()
    callback = InformationPlaneCallback(x, y, every_n_epochs=1)
    lightning_tfc.trainer(tmp_path, callback, max_epochs=1, validate=False).fit(lightning_tfc.LitTFC(seed=0))
    run_dir = callback.run_dir
    capsys.readouterr()
    assert main(["export", str(run_dir)]) == 0
    out = capsys.readouterr().out
    report = ExportReport.load(RunDir(run_dir).export_dir / "verify_qonnx.json")
    assert report.ok and report.n_samples == len(x) and len(report.layers) == 4
    assert "vs mi.jsonl at epoch 1: equal" in out  # the graph's MI is what the callback logged after epoch 1


def test_a_float_network_is_refused_before_exporting(tmp_path, capsys):
    rd = RunDir(tmp_path / "float")
    rd.write_config({"model": factory_spec(syn_mlp, activation="relu", bits=32), "probe": factory_spec(syn_dataset)})
    rd.save_checkpoint({"epoch": 3, "model": syn_mlp("relu", 32).state_dict()})
    assert main(["export", str(rd.path)]) == 2
    _one_error_line(capsys, "no quantized layer", str(rd.path))
    assert not rd.export_dir.exists()
