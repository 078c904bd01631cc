"""Damaged or hand-edited run directories through every command: one line naming the file, exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest

from ib_brevitas.cli import main


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("damaged") / "good"
    assert main(["train", "--activation", "relu", "--epochs", "4", "--mi-every", "2", "--seed", "3",
                 "--no-progress", "--run-dir", str(run_dir)]) == 0
    return run_dir


def _mi_junk(d):
    with open(d / "mi.jsonl", "a") as f:
        f.write("this is not json\n")
    return "mi.jsonl: line 19"


def _mi_wrong_schema(d):
    with open(d / "mi.jsonl", "a") as f:
        f.write(json.dumps({"hello": "world"}) + "\n")
    return "mi.jsonl: line 19"


def _mi_wrong_type(d):
    lines = (d / "mi.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["i_xt"] = "eleven"
    lines[3] = json.dumps(row)
    (d / "mi.jsonl").write_text("\n".join(lines) + "\n")
    return "mi.jsonl: line 4"


def _config_garbage(d):
    (d / "config.json").write_text("{{{ garbage")
    return "config.json"


def _config_list(d):
    (d / "config.json").write_text("[]")
    return "config.json"


def _checkpoint_truncated(d):
    ckpt = d / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    return "last.pt"


def _checkpoint_foreign(d):
    import torch

    torch.save({"weights": [1, 2, 3]}, d / "checkpoints" / "last.pt")
    return "last.pt"


DAMAGES = {f.__name__[1:]: f for f in (_mi_junk, _mi_wrong_schema, _mi_wrong_type, _config_garbage, _config_list,
                                        _checkpoint_truncated, _checkpoint_foreign)}
# Which commands read which file (plot and phases need no checkpoint; export needs no mi.jsonl to be sound
# except to compare with it, and reads config.json and the checkpoint).
COMMANDS = {
    "train": lambda d: ["train", "--resume", "--no-progress", "--run-dir", str(d)],
    "plot": lambda d: ["plot", str(d), "-o", str(d / "fig.png")],
    "phases": lambda d: ["phases", str(d)],
    "export": lambda d: ["export", str(d)],
}
READS = {
    "train": set(DAMAGES),
    "plot": {"mi_junk", "mi_wrong_schema", "mi_wrong_type", "config_garbage", "config_list"},
    "phases": {"mi_junk", "mi_wrong_schema", "mi_wrong_type", "config_garbage", "config_list"},
    "export": {"config_garbage", "config_list", "checkpoint_truncated", "checkpoint_foreign"},
}
CASES = [(c, dmg) for c in COMMANDS for dmg in DAMAGES if dmg in READS[c]]


@pytest.mark.parametrize("command, damage", CASES)
def test_a_damaged_file_is_one_line_naming_it(good_run, tmp_path, capsys, command, damage):
    d = tmp_path / "run"
    shutil.copytree(good_run, d)
    where = DAMAGES[damage](d)
    capsys.readouterr()
    code = main(COMMANDS[command](d))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ib-brevitas {command}: error: ") and where in lines[0], err
