"""`train --freeze-relu-ranges-after E`: the ReLU layers' measured grid stays fixed after epoch E."""

from __future__ import annotations

import pytest

from ib_brevitas.cli import main
from ib_brevitas.rundir import RunDir

BASE = ["train", "--activation", "relu", "--engine", "brevitas", "--mi-every", "1", "--seed", "2", "--lr", "1e-2",
        "--no-progress"]


def _scales(rd: RunDir) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for r in rd.read_records():
        out.setdefault(r.epoch, {})[r.layer] = r.scale
    return out


def test_ranges_frozen_after_e_stay_put_and_resume_frozen(tmp_path):
    frozen, free, cut = (RunDir(tmp_path / n) for n in ("frozen", "free", "cut"))
    assert main([*BASE, "--epochs", "5", "--freeze-relu-ranges-after", "2", "--run-dir", str(frozen.path)]) == 0
    assert main([*BASE, "--epochs", "5", "--run-dir", str(free.path)]) == 0
    fs, us = _scales(frozen), _scales(free)
    relu = ["T1", "T2", "T3", "T4", "T5"]
    assert all(fs[e][t] == fs[2][t] for e in (3, 4, 5) for t in relu)  # frozen after epoch 2
    assert any(us[e][t] != us[2][t] for e in (3, 4, 5) for t in relu)  # the free run's grid moves
    assert fs[1] == us[1] and fs[2] == us[2]  # the same run up to the freeze
    assert main([*BASE, "--epochs", "3", "--freeze-relu-ranges-after", "2", "--checkpoint-secs", "0",
                 "--run-dir", str(cut.path)]) == 0
    assert main([*BASE, "--epochs", "5", "--resume", "--run-dir", str(cut.path)]) == 0
    assert cut.read_records() == frozen.read_records()  # frozen again after the resume


@pytest.mark.parametrize("flags, message", [
    (["--activation", "relu", "--freeze-relu-ranges-after", "2"], "needs --engine brevitas"),
    (["--engine", "brevitas", "--activation", "tanh", "--freeze-relu-ranges-after", "2"], "tanh's grid is fixed"),
    (["--engine", "brevitas", "--activation", "relu", "--freeze-relu-ranges-after", "0"], "calibrate first"),
])
def test_bad_freeze_flags_are_refused(tmp_path, capsys, flags, message):
    assert main(["train", "--epochs", "3", "--run-dir", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
