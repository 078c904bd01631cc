"""The examples users copy must run as shipped (shortened epochs keep the suite fast)."""

import subprocess
import sys
from pathlib import Path

from ib_brevitas.records import read_records

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, *args, cwd):
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=True)


def test_syn_plain_loop(tmp_path):
    out = tmp_path / "mi.jsonl"
    proc = _run("syn_plain_loop.py", "--epochs", "10", "--out", str(out), cwd=tmp_path)
    records = read_records(out)
    assert sorted({r.epoch for r in records}) == [0, 10]
    assert {r.layer for r in records} == {f"T{i}" for i in range(1, 7)}
    assert "T6" in proc.stdout


def test_bnn_pynq_digits_logs_to_tensorboard(tmp_path):
    logdir = tmp_path / "tfc"
    proc = _run("bnn_pynq_digits.py", "--epochs", "1", "--logdir", str(logdir), cwd=tmp_path)
    assert "features.0, features.4, features.8, features.12" in proc.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir)).Reload()
    assert {"ib/I_XT/features.4", "ib/I_TY/features.12", "acc/test"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("ib/I_XT/features.4")] == [0, 1]
