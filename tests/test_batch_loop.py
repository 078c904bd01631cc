"""`batch_loop.train_seed_batch`: S seeds trained together write the run directories their single runs write.

Every comparison is against independent single-seed runs (`loop.train_and_measure`,
the loop behind `ib-brevitas train`) or an uninterrupted batch, value for value.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ib_brevitas.experiments.batch_loop import train_seed_batch
from ib_brevitas.experiments.loop import train_and_measure
from ib_brevitas.experiments.train import new_config
from ib_brevitas.experiments.train_args import SETTINGS
from ib_brevitas.files import read_jsonl
from ib_brevitas.rundir import RunDir

SEEDS = (0, 1, 2)
FILES = ("mi.jsonl", "metrics.jsonl", "phases.jsonl")


def _config(run_dir: Path, seed: int, activation: str = "relu", bits: int = 8, epochs: int = 6,
            net: str = "syn", prefit: int = 0, data_dir: Path | None = None) -> dict:
    dataset = "syn" if net == "syn" else "digits" if data_dir is None else "mnist"
    settings = {**SETTINGS, "activation": activation, "bits": bits, "epochs": epochs, "mi_every": 2, "seed": seed,
                "lr": 1e-3, "net": net, "dataset": dataset, "prefit_random": prefit,
                "data_dir": None if data_dir is None else str(data_dir)}
    return new_config(settings, run_dir, {})


def _idx_dir(root: Path) -> Path:
    """A small MNIST-format set with train and test files (a fixed split: every seed shares the data)
    whose 700 training rows end in a 188-row minibatch (188 x 10 floats: off the 64-byte grid)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 700), ("t10k", 300)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (images[:, 14, :10].argmax(axis=1) % 10).astype(np.uint8)  # learnable from the pixels
        for kind, arr, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            (root / f"{prefix}-{kind}-ubyte").write_bytes(header + arr.tobytes())
    return root


def _single(run_dir: Path, seed: int, **kw) -> Path:
    rd = RunDir(run_dir)
    with rd.lock(), contextlib.redirect_stdout(io.StringIO()):
        assert train_and_measure(rd, _config(run_dir, seed, **kw), resume=False, progress=False) == 0
    return run_dir


def _batch(dirs: list[Path], seeds, resume=False, **kw) -> list[Path]:
    configs = [_config(d, s, **kw) for d, s in zip(dirs, seeds)]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the engine's fallback warning: these must batch
        assert train_seed_batch(dirs, configs, resume=resume, progress=False) == 0
    return dirs


def _tensorboard(run_dir: Path) -> tuple[list, list]:
    """The records and phase events the run's event files hold (as the tab reads them)."""
    from ib_brevitas.tensorboard.reader import read_event_files

    records, events = read_event_files(RunDir(run_dir).event_files())
    return sorted(json.dumps(r.to_dict(), sort_keys=True) for r in records), [e.to_dict() for e in events]


def _files(run_dir: Path) -> dict:
    return {f: read_jsonl(run_dir / f) if (run_dir / f).exists() else None for f in FILES}


def _same(a, b, where="") -> None:
    """Deep equality of checkpoint contents: tensors and arrays exactly, everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _checkpoint(run_dir: Path) -> dict:
    state = RunDir(run_dir).load_checkpoint()
    state["config"] = {k: v for k, v in state["config"].items() if k != "run_dir"}
    return state


# SYN at 8 and 4 bits, and an MNIST MLP on scikit-learn's digits as 28x28 images (offline, small; a split
# per seed, whose 157-row last minibatch put seed slot 1 off the 64-byte grid: it once fell back to the
# per-seed Brevitas path) and on an IDX set with train and test files (all seeds share one copy of the data).
# The ReLU case with a 3-epoch random-label prefit (epochs -3..0 on permuted labels) covers --prefit-random.
# Every batch must run on the batched kernels (`_batch` turns the fallback warning into an error).
CASES = [("syn", "tanh", 8, 0, False), ("syn", "relu", 8, 0, False), ("syn", "relu", 4, 0, False),
         ("mnist-4x10", "tanh", 8, 0, False), ("mnist-4x10", "relu", 8, 0, True), ("syn", "relu", 8, 3, False),
         ("mnist-4x10", "relu", 8, 2, True)]  # shared images, each seed's own permuted prefit labels


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{a}-{b}b" + (f"-prefit{p}" if p else "") + ("-idx" if i else "")
                                                   for n, a, b, p, i in CASES])
def case(request, tmp_path_factory):
    net, activation, bits, prefit, idx = request.param
    root = tmp_path_factory.mktemp(f"{net}{activation}{bits}")
    kw = dict(net=net, activation=activation, bits=bits, epochs=6 if net == "syn" else 4, prefit=prefit,
              data_dir=_idx_dir(root) if idx else None)
    singles = [_single(root / f"single{s}", s, **kw) for s in SEEDS]
    batch = _batch([root / f"batch{s}" for s in SEEDS], SEEDS, **kw)
    return singles, batch


def test_batched_seeds_write_what_their_single_runs_write(case):
    singles, batch = case
    for single, batched in zip(singles, batch):
        assert _files(batched) == _files(single)
        assert _files(single)["mi.jsonl"]  # a comparison of something
        assert json.loads((batched / "summary.json").read_text()) == json.loads((single / "summary.json").read_text())
        assert (batched / "summary.txt").read_text() == (single / "summary.txt").read_text()
        assert any(p.name.startswith("events.out.tfevents") for p in batched.iterdir())
        assert _tensorboard(batched) == _tensorboard(single)  # a prefit's too, at step = epoch + K
        assert _tensorboard(batched)[0] == sorted(json.dumps(r.to_dict(), sort_keys=True)
                                                  for r in RunDir(batched).read_records())
        config = RunDir(batched).read_config()
        assert config == {**RunDir(single).read_config(), "run_dir": str(batched)}
        # the checkpoint: model, counters, Adam state, shuffle generator, RNGs, monitor state, config
        _same(_checkpoint(batched), _checkpoint(single))


def test_batched_checkpoints_resume_as_single_runs(tmp_path):
    """A 4-epoch batch extended to 6 epochs (by `ib-brevitas train --resume`, and by a mixed batch) equals 6-epoch singles."""
    from ib_brevitas.cli import main

    singles = [_single(tmp_path / f"single{s}", s) for s in SEEDS]
    batch = _batch([tmp_path / f"batch{s}" for s in SEEDS[:2]], SEEDS[:2], epochs=4)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--resume", "--epochs", "6", "--no-progress", "--run-dir", str(batch[1])]) == 0
    # seed 0 resumes from its epoch-4 checkpoint; seed 2 was killed before its first checkpoint (records of
    # another run left behind) and starts afresh: two groups, one call
    (tmp_path / "batch2").mkdir()
    (tmp_path / "batch2" / "mi.jsonl").write_text((batch[0] / "mi.jsonl").read_text())
    _batch([batch[0], tmp_path / "batch2"], [0, 2], resume=True)
    for s, d in zip(SEEDS, [*batch, tmp_path / "batch2"]):
        assert _files(d) == _files(singles[s]), s
        _same(_checkpoint(d), _checkpoint(singles[s]))


def test_seeds_share_one_copy_of_equal_data():
    """Equal per-seed tensors (fixed train/test files) become one expanded copy, not S; unequal ones a stack."""
    from ib_brevitas.experiments.batch_loop import _seed_stack

    x = torch.randn(50, 784)
    shared = _seed_stack([x, x.clone(), x.clone()])
    assert shared.shape == (3, 50, 784) and shared.stride(0) == 0 and shared.data_ptr() == x.data_ptr()
    other = x.clone()
    other[7, 3] += 1
    stacked = _seed_stack([x, other, x])
    assert stacked.stride(0) == 50 * 784 and torch.equal(stacked[1], other) and torch.equal(stacked[2], x)


def test_configs_must_differ_only_in_seed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ValueError, match="differ in lr; batch only seeds of one configuration"):
        train_seed_batch([a, b], [_config(a, 0), {**_config(b, 1), "lr": 1e-4}], resume=False)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        train_seed_batch([a, b], [_config(a, 0), _config(b, 0)], resume=False)
    with pytest.raises(ValueError, match="not a float net"):
        train_seed_batch([a], [_config(a, 0, bits=32)], resume=False)
    with pytest.raises(ValueError, match="2 run directories but 1 configs"):
        train_seed_batch([a, b], [_config(a, 0)], resume=False)
    assert not a.exists() and not b.exists()  # refused before anything is written


KILLED = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_batch_loop import _config
from ib_brevitas.experiments.batch_loop import train_seed_batch
dirs = [Path(p) for p in {dirs!r}]
sys.exit(train_seed_batch(dirs, [_config(d, s, epochs={epochs}) for d, s in zip(dirs, {seeds!r})], resume=False,
                          checkpoint_secs=0, progress=False))
"""
EPOCHS = 20


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    return _batch([root / f"whole{s}" for s in SEEDS], SEEDS, epochs=EPOCHS)


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGKILL", "Ctrl-C"])
def test_a_batch_stopped_mid_run_then_resumed_equals_an_uninterrupted_batch(whole, tmp_path, sig):
    """SIGKILL (checkpoints of some epoch, maybe torn between seeds) or Ctrl-C (all seeds at one epoch end, exit 130)."""
    dirs = [tmp_path / f"stopped{s}" for s in SEEDS]
    code = KILLED.format(tests=str(Path(__file__).parent), dirs=[str(d) for d in dirs], seeds=list(SEEDS),
                         epochs=EPOCHS)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # stop it after a few checkpoints, mid-run
        if all((d / "metrics.jsonl").exists() and len(read_jsonl(d / "metrics.jsonl")) >= 4 for d in dirs):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, sig)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    if sig == signal.SIGINT:
        assert rc == 130 and "Traceback" not in err and "resume" in err, err[-2000:]
        assert len({RunDir(d).load_checkpoint()["epoch"] for d in dirs}) == 1  # every seed at one epoch end
    assert not all((d / "summary.json").exists() for d in dirs)  # it stopped mid-run
    _batch(dirs, SEEDS, resume=True, epochs=EPOCHS)
    for w, d in zip(whole, dirs):
        assert _files(d) == _files(w)
        assert [r["epoch"] for r in _files(d)["metrics.jsonl"]] == list(range(0, EPOCHS + 1, 2))
        _same(_checkpoint(d), _checkpoint(w))
