"""FINN step: the hardware graph computes the analysed integers, and the estimate table is produced.

Tests marked `finn` run the real finn-plus in its own environment and are
skipped, saying how to create it, when that environment is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ib_brevitas.export.finn_bridge import (
    FinnEnvironmentMissing,
    compare_integers,
    finn_estimate,
    finn_python,
    input_datatype,
)
from ib_brevitas.export.finn_setup import default_env_dir
from ib_brevitas.export.report import HardwareReport


def _finn_env_reason() -> str | None:
    try:
        finn_python()
    except FinnEnvironmentMissing as exc:
        return str(exc)
    return None


needs_finn = pytest.mark.skipif(_finn_env_reason() is not None, reason=f"{_finn_env_reason()}")


def test_missing_env_says_how_to_create_it(tmp_path):
    with pytest.raises(FinnEnvironmentMissing, match="ib-brevitas finn-setup"):
        finn_python(tmp_path / "no-env")


def test_finn_setup_check_fails_on_a_missing_env(tmp_path, capsys):
    from ib_brevitas.cli import main

    assert main(["finn-setup", "--check", str(tmp_path / "no-env")]) == 1
    assert "not usable" in capsys.readouterr().out


def test_default_env_dir_is_beside_the_venv(monkeypatch, tmp_path):
    monkeypatch.setenv("IB_BREVITAS_FINN_VENV", str(tmp_path / "elsewhere"))
    assert default_env_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("IB_BREVITAS_FINN_VENV")
    assert default_env_dir().name == ".venv-finn"


class FakePip:
    """Stands in for subprocess.run inside finn_setup: records commands, answers like pip would."""

    RESOLVER = ("ERROR: pip's dependency resolver does not currently take into account all the packages that "
                "are installed.\nfinn-plus 1.6.1 requires brevitas==0.13.0, but you have brevitas 0.13.4 which "
                "is incompatible.\n")

    def __init__(self, fail_step: int | None = None, check_lines: str = ""):
        self.calls: list[list[str]] = []
        self.fail_step, self.check_lines = fail_step, check_lines

    def __call__(self, cmd, check=False, stdout=None, stderr=None, capture_output=False, text=False):
        import subprocess

        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
            (Path(cmd[3]) / "bin" / "python").write_text("")
            return subprocess.CompletedProcess(cmd, 0)
        if "install" in cmd:
            stdout.write(self.RESOLVER)  # what pip prints; must land in the log, not on the terminal
            installs = sum("install" in c for c in self.calls)
            return subprocess.CompletedProcess(cmd, 1 if installs == self.fail_step else 0)
        if "check" in cmd:
            known = "finn-plus 1.6.1 has requirement brevitas==0.13.0, but you have brevitas 0.13.4.\n"
            return subprocess.CompletedProcess(cmd, 1, stdout=known + self.check_lines, stderr="")
        return subprocess.CompletedProcess(cmd, 0, stdout="2.13.0+cpu 0.13.4 1.21.0\n", stderr="")  # check_env


def test_finn_setup_is_quiet_and_explains_the_brevitas_pin(tmp_path, monkeypatch, capsys):
    import ib_brevitas.export.finn_setup as setup
    from ib_brevitas.cli import main

    fake = FakePip(check_lines="foo 1.0 has requirement bar<2, but you have bar 3.\n")
    monkeypatch.setattr(setup.subprocess, "run", fake)
    env = tmp_path / "env"
    assert main(["finn-setup", str(env), "--force", "--python", "python3.11"]) == 0
    out, err = capsys.readouterr()
    assert "ERROR" not in out + err and "incompatible" not in out + err
    assert setup.PIN_NOTE in out and "FINN environment ready" in out
    assert err.strip().splitlines() == [
        "ib-brevitas finn-setup: warning: pip check: foo 1.0 has requirement bar<2, but you have bar 3.",
    ]
    installs = [c for c in fake.calls if "install" in c]
    assert len(installs) == 4 and all("-q" in c and "--no-warn-conflicts" in c for c in installs)
    assert "--no-deps" in installs[1] and setup.BREVITAS in installs[1] and setup.FINN_PLUS in installs[1]
    assert "incompatible" in (env / "finn-setup.log").read_text()  # pip's words are kept, in the log


def test_finn_setup_failure_names_the_step_and_the_log(tmp_path, monkeypatch, capsys):
    import ib_brevitas.export.finn_setup as setup
    from ib_brevitas.cli import main

    monkeypatch.setattr(setup.subprocess, "run", FakePip(fail_step=3))
    env = tmp_path / "env"
    assert main(["finn-setup", str(env), "--force", "--python", "python3.11"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ib-brevitas finn-setup: error: pip install ")
    assert "onnx==1.21.0" in err.splitlines()[0] and str(env / "finn-setup.log") in err


@needs_finn
def test_the_real_env_has_only_the_deliberate_conflict():
    from ib_brevitas.export.finn_setup import unexpected_conflicts

    assert unexpected_conflicts(finn_python()) == []


@pytest.mark.parametrize(
    "values,expected",
    [([0, 1, 1], "BINARY"), ([-1, 1], "BIPOLAR"), ([0, 3, 2], "UINT2"), ([-2, 1], "INT2"),
     ([0, 255], "UINT8"), ([-3, 200], "INT9"), ([0.5, 1], None), ([np.nan], None)],
)
def test_input_datatype(values, expected):
    assert input_datatype(np.array(values, dtype=np.float32)) == expected


def test_compare_integers_finds_the_offset():
    codes = np.array([[-2, -1, 0, 1], [1, 0, -1, -2]])
    offset, mismatches = compare_integers(codes, codes + 2)  # unsigned counts of signed codes
    assert (offset, mismatches) == (-2, 0)
    hw = codes + 2
    hw[0, 0] += 1
    assert compare_integers(codes, hw) == (-2, 1)


def _seeded_syn(bits: int = 8, biases: bool = True, seed: int = 0):
    from ib_brevitas.experiments.models import syn_mlp

    torch.manual_seed(seed)
    model = syn_mlp("relu", bits)
    if biases:  # as after training: logits of the two classes are never exactly equal
        with torch.no_grad():
            for i in range(1, 7):
                getattr(model, f"fc{i}").bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.finn
@needs_finn
def test_tfc_2w2a_through_finn(tmp_path):
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    report = finn_estimate(model, x, tmp_path, labels=y)
    assert report.ok and report.bit_exact, str(report)
    assert report.graph_stages == {"finn_onnx": 0.0, "streamlined": 0.0, "hw": 0.0}
    assert report.matched_layers == ["features.0", "features.4", "features.8", "features.12"]
    for row in report.layers:
        if row.layer:
            assert row.mismatches == 0 and row.offset == 0 and row.bit_width == 2
            assert row.lut is not None and row.cycles > 0
    t = report.totals
    assert t["lut"] > 0 and t["bram"] >= 0 and t["fps"] > 0 and t["latency_ns"] > 0
    assert sum(r.lut for r in report.layers if r.lut) == pytest.approx(t["lut"])
    report.save(tmp_path / "hw.json")
    assert HardwareReport.load(tmp_path / "hw.json").layers == report.layers
    assert "TOTAL" in report.save_csv(tmp_path / "hw.csv").read_text()


@pytest.mark.finn
@needs_finn
def test_syn_relu_through_finn_via_cli(tmp_path):
    """`ib-brevitas export RUN --finn` on the paper net: bit-exact on all 4096 samples, table saved."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    from ib_brevitas.cli import main
    from ib_brevitas.tensorboard import HARDWARE_TAG

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    model = _seeded_syn()
    (run_dir / "config.json").write_text(json.dumps({"dataset": "syn", "activation": "relu", "bits": 8, "seed": 0}))
    torch.save({"model": model.state_dict(), "epoch": 5}, run_dir / "checkpoints" / "last.pt")
    assert main(["export", str(run_dir), "--finn"]) == 0

    report = HardwareReport.load(run_dir / "export" / "hardware.json")
    assert report.ok and report.bit_exact and report.n_samples == 4096
    assert report.matched_layers == [f"T{i}" for i in range(1, 7)]
    assert (run_dir / "export" / "hardware.csv").is_file()
    verify = json.loads((run_dir / "export" / "verify_qonnx.json").read_text())
    by_layer = {r["layer"]: r for r in verify["layers"]}
    for row in report.layers:
        if row.layer:  # the table's information is the analysed one
            assert row.i_xt == by_layer[row.layer]["i_xt_model"]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    payload = tensor_util.make_ndarray(events.Tensors(HARDWARE_TAG)[-1].tensor_proto).item()
    table = json.loads(payload)
    assert [r["layer"] for r in table["rows"] if r["layer"]] == [f"T{i}" for i in range(1, 7)]
    assert table["totals"]["lut"] == report.totals["lut"]


@pytest.mark.finn
@needs_finn
def test_finn_rounding_ties_are_caught_by_layer(tmp_path):
    """Untrained net with zero biases: many samples give equal logits, softmax exactly 0.5, a
    rounding tie. FINN's thresholds and Brevitas' division round it differently; the report must
    flag exactly those T6 values (two per tied sample) and nothing upstream."""
    from ib_brevitas.experiments.data import syn_dataset

    model = _seeded_syn(biases=False).eval()
    x, y = syn_dataset()
    x = torch.from_numpy(x).float()[::4]
    y = y[::4]
    with torch.no_grad():
        h = x
        for i in range(1, 6):
            h = getattr(model, f"T{i}")(getattr(model, f"fc{i}")(h))
        logits = model.fc6(h)
    ties = int((logits[:, 0] == logits[:, 1]).sum())
    if ties == 0:
        pytest.skip("no tied logits with this initialisation")

    report = finn_estimate(model, x, tmp_path, labels=y)
    rows = {r.layer: r for r in report.layers if r.layer}
    assert all(rows[f"T{i}"].matched for i in range(1, 6))
    assert rows["T6"].matched is False and rows["T6"].mismatches == 2 * ties
    assert "one quantization step" in rows["T6"].note
    assert not report.ok and not report.bit_exact
