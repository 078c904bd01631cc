"""`ib-brevitas train` beyond SYN at k bits: --net / --dataset, float nets measured by binning, binning beside exact."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ib_brevitas.rundir import RunDir

MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
PAPER_LABELS = ["binning-uniform-30-global", "binning-uniform-100-global", "binning-uniform-256-global"]


def _main(*argv):
    from ib_brevitas.cli import main

    return main(["train", "--no-progress", *map(str, argv)])


@pytest.mark.parametrize("flags, message", [
    (["--net", "mnist-bottleneck-2", "--dataset", "syn"], "cannot train on --dataset syn"),
    (["--dataset", "digits"], "--net syn cannot train on --dataset digits"),
    (["--net", "mnist-conv", "--dataset", "digits", "--activation", "tanh"], "has relu hidden layers"),
    (["--net", "mnist-4x10", "--dataset", "mnist"], "--dataset mnist needs --data-dir DIR"),
    (["--net", "mnist-4x10", "--dataset", "mnist", "--data-dir", "/nonexistent/dir"], "no MNIST IDX images"),
    (["--data-dir", "/tmp"], "--data-dir applies to --dataset mnist or fashion-mnist"),
    (["--bits", "17"], "--bits must lie in 2..16, or be 32"),
    (["--estimators", "binning-uniform-30"], "--estimators: 'binning-uniform-30' is not a binning estimator"),
    (["--estimators", "binning-uniform-30-global", "binning-uniform-30-global"], "name each binning once"),
    (["--prefit-random", "-1"], "--prefit-random must be >= 0"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "bad"
    assert _main("--run-dir", run_dir, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("ib-brevitas train: error: ") and message in err, err
    assert not run_dir.exists()


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from ib_brevitas.experiments import data

    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert _main("--run-dir", tmp_path / "run", "--net", "mnist-bottleneck-2", "--dataset", "fashion-mnist") == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _hooked_activations(model, x):
    """Each T_i's output under eval/no_grad, by plain forward hooks (independent of BinnedPlane)."""
    acts, handles = {}, []
    for name in model.layer_names:
        handles.append(getattr(model, name).register_forward_hook(
            lambda m, i, out, name=name: acts.__setitem__(name, out.detach().double().reshape(len(x), -1).numpy())))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return acts


def _entropy_of_rows(rows):
    counts = {}
    for row in map(tuple, rows):
        counts[row] = counts.get(row, 0) + 1
    p = np.array(list(counts.values()), dtype=float) / len(rows)
    return float(-(p * np.log2(p)).sum()), len(counts)


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("float") / "run"
    assert _main("--run-dir", run_dir, "--bits", "32", "--epochs", "6", "--mi-every", "3", "--seed", "2",
                 "--lr", "1e-3") == 0
    return run_dir


def test_float_net_records_are_the_papers_binnings_with_global_bounds(float_run):
    rd = RunDir(float_run)
    config = rd.read_config()
    assert config["bits"] == 32 and config["engine"] == "torch" and config["estimators"] == PAPER_LABELS
    records = rd.read_records()
    assert records and not any(r.exact for r in records)
    assert {(r.estimator, r.layer, r.epoch) for r in records} == {
        (e, f"T{i}", ep) for e in PAPER_LABELS for i in range(1, 7) for ep in (0, 3, 6)}
    assert len(records) == 3 * 6 * 3
    # Independent reference: rebuild the model, load each snapshot, hook T1..T6, bin over the run's range, count.
    snaps = rd.read_snapshots()
    assert [s[0] for s in snaps] == [0, 3, 6]
    x, y = rd.probe_set()
    x = torch.as_tensor(x).float()
    model = rd.build_model()
    per_epoch = {}
    for epoch, _, state in snaps:
        model.load_state_dict(state)
        per_epoch[epoch] = _hooked_activations(model, x)
    lo = min(a.min() for acts in per_epoch.values() for a in acts.values())
    hi = max(a.max() for acts in per_epoch.values() for a in acts.values())
    for r in records:
        n = int(r.estimator.split("-")[2])
        edges = lo + (hi - lo) * np.arange(1, n) / n
        binned = np.digitize(per_epoch[r.epoch][r.layer], edges)
        h_t, distinct = _entropy_of_rows(binned)
        assert r.n_distinct == distinct and math.isclose(r.i_xt, h_t, abs_tol=1e-9), (r.layer, r.epoch, r.estimator)
        h_ty, _ = _entropy_of_rows(np.column_stack([binned, y]))
        h_y, _ = _entropy_of_rows(np.asarray(y)[:, None])
        assert math.isclose(r.i_ty, h_t + h_y - h_ty, abs_tol=1e-9)
        assert r.bit_width == 32 and r.n_samples == 4096


def test_float_net_summary_holds_verdicts_per_estimator_and_no_exact_phases(float_run):
    rd = RunDir(float_run)
    summary = json.loads(rd.summary_path("json").read_text())
    assert summary["layers"] == [] and list(summary["binned"]) == PAPER_LABELS
    assert all([v["layer"] for v in vs] == [f"T{i}" for i in range(1, 7)] for vs in summary["binned"].values())
    text = rd.summary_path("txt").read_text()
    assert "binned, binning-uniform-30-global (an estimate, not exact MI)" in text
    assert rd.read_events() == []  # the phase tracker follows exact series only


def test_float_run_resumed_and_extended_equals_one_run(float_run, tmp_path):
    """The snapshots survive the resume, so the global bounds and every binned record are the whole run's."""
    part = tmp_path / "part"
    common = ["--bits", "32", "--mi-every", "3", "--seed", "2", "--lr", "1e-3"]
    assert _main("--run-dir", part, "--epochs", "3", *common) == 0
    assert _main("--run-dir", part, "--resume", "--epochs", "6") == 0
    key = lambda r: (r.estimator, r.layer, r.epoch, r.i_xt, r.i_ty, r.n_distinct)  # noqa: E731
    assert sorted(map(key, RunDir(part).read_records())) == sorted(map(key, RunDir(float_run).read_records()))
    before = RunDir(part).records_path.read_text()
    assert _main("--run-dir", part, "--resume") == 0  # finished: the same file again
    assert RunDir(part).records_path.read_text() == before


def test_binning_beside_exact_leaves_the_exact_records_and_phases_as_they_are(tmp_path):
    common = ["--epochs", "6", "--mi-every", "3", "--seed", "1", "--lr", "1e-3", "--activation", "relu"]
    assert _main("--run-dir", tmp_path / "exact", *common) == 0
    assert _main("--run-dir", tmp_path / "both", *common,
                 "--estimators", "binning-uniform-30-global", "binning-adaptive-10-layer") == 0
    exact, both = RunDir(tmp_path / "exact"), RunDir(tmp_path / "both")
    key = lambda r: (r.layer, r.epoch, r.i_xt, r.i_ty, r.n_distinct)  # noqa: E731
    assert [key(r) for r in both.read_records() if r.exact] == [key(r) for r in exact.read_records()]
    binned = [r for r in both.read_records() if not r.exact]
    assert {r.estimator for r in binned} == {"binning-uniform-30-global", "binning-adaptive-10-layer"}
    assert all(r.bit_width == 8 for r in binned)  # the quantized layers' values, read at their integer proxy
    assert both.phases_path.read_text() == exact.phases_path.read_text()
    summary = json.loads(both.summary_path("json").read_text())
    assert [v["layer"] for v in summary["layers"]] == [f"T{i}" for i in range(1, 7)]
    assert set(summary["binned"]) == {"binning-uniform-30-global", "binning-adaptive-10-layer"}


def test_conv_net_on_digits_trains_through_brevitas_and_rebuilds(tmp_path, capsys):
    run_dir = tmp_path / "conv"
    assert _main("--run-dir", run_dir, "--net", "mnist-conv", "--dataset", "digits", "--epochs", "1",
                 "--mi-every", "1") == 0
    assert "engine: brevitas" in capsys.readouterr().out
    rd = RunDir(run_dir)
    config = rd.read_config()
    assert (config["net"], config["dataset"], config["engine"], config["epochs"]) == ("mnist-conv", "digits", "brevitas", 1)
    records = rd.read_records()
    assert [r.layer for r in records[:4]] == ["T1", "T2", "T3", "T4"] and all(r.n_samples == 1797 for r in records)
    x, y = rd.probe_set()
    assert x.shape == (1797, 784)
    model = rd.build_model()
    model.load_state_dict(rd.load_checkpoint()["model"])


def test_mnist_nets_take_the_papers_protocol_by_default():
    from ib_brevitas.experiments.train_args import paper_settings

    s = paper_settings("mnist-bottleneck-2")
    assert (s["epochs"], s["mi_every"], s["activation"], s["dataset"]) == (3000, 2, "relu", "mnist")
    assert paper_settings("mnist-4x10")["activation"] == "tanh"
    assert (paper_settings("syn")["epochs"], paper_settings("syn")["mi_every"]) == (8000, 5)


def _write_idx(directory, stem, images, labels):
    directory.mkdir(exist_ok=True)
    n, rows, cols = images.shape
    (directory / f"{stem[0]}-images-idx3-ubyte").write_bytes(
        (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, rows, cols)) + images.tobytes())
    (directory / f"{stem[0]}-labels-idx1-ubyte").write_bytes(
        (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def test_a_directory_with_train_and_test_files_trains_on_the_train_files(tmp_path):
    from ib_brevitas.experiments.paper_run import build_run

    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, 60), rng.integers(0, 10, 20)
    _write_idx(tmp_path, ("train",), train_x, train_y)
    _write_idx(tmp_path, ("t10k",), test_x, test_y)
    run = build_run(dict(net="mnist-4x10", dataset="mnist", data_dir=str(tmp_path), activation="tanh", bits=4,
                         seed=0, lr=1e-3, batch_size=16, test_fraction=0.2, mi_every=1, epochs=1))
    assert torch.equal(run.x_train, torch.from_numpy(train_x.reshape(60, -1) / np.float32(255)).float())
    assert torch.equal(run.y_train, torch.from_numpy(train_y)) and torch.equal(run.y_test, torch.from_numpy(test_y))
    assert run.plane.n_samples == 80  # every sample is measured


@pytest.mark.skipif(not MNIST_TEST.is_dir(), reason="../shared/data/mnist-test is not here")
def test_mnist_test_set_run(tmp_path):
    run_dir = tmp_path / "mnist"
    assert _main("--run-dir", run_dir, "--net", "mnist-bottleneck-2", "--dataset", "mnist", "--data-dir", MNIST_TEST,
                 "--epochs", "2", "--mi-every", "2", "--batch-size", "1024") == 0
    rd = RunDir(run_dir)
    config = rd.read_config()
    assert config["engine"] == "fast" and Path(config["data_dir"]) == MNIST_TEST.resolve()
    records = rd.read_records()
    assert sorted({r.epoch for r in records}) == [0, 2]
    assert [r.layer for r in records[:5]] == ["T1", "T2", "T3", "T4", "T5"]
    assert all(r.n_samples == 10000 and r.bit_width == 8 for r in records)
    assert [m["epoch"] for m in rd.read_metrics()] == [0, 2]
    x, _ = rd.probe_set()
    assert x.shape == (10000, 784)


def test_a_damaged_data_file_is_a_one_line_error(tmp_path, capsys):
    rng = np.random.default_rng(1)
    _write_idx(tmp_path / "data", ("t10k",), rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20))
    images = tmp_path / "data" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # the header still announces 20 images
    assert _main("--run-dir", tmp_path / "run", "--net", "mnist-4x10", "--dataset", "mnist",
                 "--data-dir", tmp_path / "data", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("ib-brevitas train: error: --dataset mnist: ") and "truncated or corrupt" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "config.json").exists()
