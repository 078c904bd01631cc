"""`ib-brevitas sweep --net`: the paper's MNIST nets as a grid axis, their data flags, presets, errors and report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from independent import report_verdict_tables

from ib_brevitas.cli import main as cli_main
from ib_brevitas.files import atomic_write_json, read_jsonl
from ib_brevitas.rundir import RunDir

SMALL = ["--net", "mnist-4x10", "mnist-bottleneck-2", "--dataset", "digits", "--epochs", "4", "--mi-every", "2",
         "--seeds", "0-1", "--checkpoint-secs", "0", "--no-progress", "--workers", "1"]  # one task per net: S = 2
CONFIGS = ["mnist-4x10-digits-tanh-8b", "mnist-bottleneck-2-digits-relu-8b"]
NAMES = [f"{c}-s{s}" for c in CONFIGS for s in (0, 1)]
FILES = ("mi.jsonl", "phases.jsonl", "metrics.jsonl")


def _sweep(sweep_dir: Path, *flags: str) -> int:
    return cli_main(["sweep", "--sweep-dir", str(sweep_dir), *flags])


def _rows(run: Path) -> dict[str, list[dict]]:
    return {f: read_jsonl(run / f) for f in FILES}


def _plan(*flags: str):
    from ib_brevitas.experiments.sweep import plan_sweep
    from ib_brevitas.experiments.sweep_args import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return plan_sweep(p.parse_args(["--sweep-dir", "unused", *flags]))


@pytest.fixture(scope="module")
def mnist_sweep(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("nets") / "sweep"
    assert _sweep(d, *SMALL) == 0
    return d


def _train(run_dir: Path, net: str, seed: int, epochs: int = 4, every: int = 2) -> Path:
    assert cli_main(["train", "--run-dir", str(run_dir), "--net", net, "--dataset", "digits", "--epochs", str(epochs),
                     "--mi-every", str(every), "--seed", str(seed), "--checkpoint-secs", "0", "--no-progress"]) == 0
    return run_dir


def test_a_sweep_of_mnist_nets_writes_train_runs(mnist_sweep, tmp_path):
    manifest = json.loads((mnist_sweep / "sweep.json").read_text())
    assert manifest["grid"]["net"] == ["mnist-4x10", "mnist-bottleneck-2"]
    assert manifest["grid"]["activation"] == ["tanh", "relu"]  # each net's own
    assert manifest["fixed"]["dataset"] == "digits" and manifest["fixed"]["data_dir"] is None
    assert sorted(manifest["runs"]) == sorted(NAMES) and list(manifest["configurations"]) == CONFIGS
    assert manifest["configurations"][CONFIGS[1]]["net"] == "mnist-bottleneck-2"
    for name in NAMES:
        config = RunDir(mnist_sweep / name).read_config()
        assert name.startswith(f"{config['net']}-{config['dataset']}-{config['activation']}-8b-s{config['seed']}")
        assert RunDir(mnist_sweep / name).summary_path("json").exists()
    # a seed trained in a batch of two equals `train` of that seed alone: config and every record
    for net, name in (("mnist-bottleneck-2", NAMES[3]), ("mnist-4x10", NAMES[0])):
        ref = _train(tmp_path / net, net, int(name[-1]))
        ours, theirs = RunDir(mnist_sweep / name).read_config(), RunDir(ref).read_config()
        assert {**ours, "run_dir": None} == {**theirs, "run_dir": None}
        assert _rows(mnist_sweep / name) == _rows(ref), name
    assert _rows(mnist_sweep / NAMES[2]) != _rows(mnist_sweep / NAMES[3])  # the seed reaches the run
    layers = {r["layer"] for r in read_jsonl(mnist_sweep / NAMES[2] / "mi.jsonl")}
    assert layers == {f"T{i}" for i in range(1, 6)}


def test_rerun_skips_finished_runs(mnist_sweep, capsys):
    before = {n: (mnist_sweep / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES}
    assert _sweep(mnist_sweep, *SMALL) == 0
    assert {n: (mnist_sweep / n / "mi.jsonl").stat().st_mtime_ns for n in NAMES} == before
    s = json.loads((mnist_sweep / "sweep.json").read_text())["sessions"][-1]
    assert s["skipped"] == 4 and s["trained"] == 0
    assert "4 finished already" in capsys.readouterr().err


def test_mlps_train_batched_and_the_conv_net_one_seed_at_a_time(tmp_path):
    """train_task (what a worker runs) on two seeds: the MLP's train together, the conv net's one after another;
    the conv seeds equal `train`'s."""
    from ib_brevitas.experiments.sweep_engines import train_task

    for net, epochs, batch in (("mnist-bottleneck-2", 2, 2), ("mnist-conv", 1, 1)):
        _, jobs = _plan("--net", net, "--dataset", "digits", "--epochs", str(epochs), "--mi-every", "1",
                        "--seeds", "0-1")
        task = [(str(tmp_path / "s" / j.name), {**j.config, "run_dir": str(tmp_path / "s" / j.name)}) for j in jobs]
        results = train_task(task, checkpoint_secs=0)
        assert [r["batch"] for r in results] == [batch, batch] and {r["status"] for r in results} == {"trained"}
        assert [r["batch"] for r in train_task(task, checkpoint_secs=0)] == [0, 0]  # finished: skipped
    conv = tmp_path / "s" / "mnist-conv-digits-relu-8b-s1"
    assert RunDir(conv).read_config()["engine"] == "brevitas"
    assert _rows(conv) == _rows(_train(tmp_path / "conv-ref", "mnist-conv", 1, epochs=1, every=1))


def test_report_on_a_sweep_of_mnist_nets(mnist_sweep, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "report"
    assert cli_main(["report", str(mnist_sweep), "-o", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert "data set of the mnist nets digits" in page
    tables = report_verdict_tables(page)
    assert {k for k, rows in tables.items() if rows} == set(CONFIGS)
    for cname in CONFIGS:
        for kind in ("mean", "seeds", "accuracy"):
            image = imread(out / "figures" / f"{cname}-{kind}.png")
            assert image.shape[0] > 200 and image.std() > 0.01
        assert set(tables[cname]) == {f"T{i}" for i in range(1, 6)}
        for layer, row in tables[cname].items():
            finals = [[e for e in read_jsonl(mnist_sweep / f"{cname}-s{s}" / "phases.jsonl")
                       if e["layer"] == layer and not e["provisional"]] for s in (0, 1)]
            n_comp = sum(any(e["kind"] == "compression_confirmed" for e in f) for f in finals)
            assert row[1] == "2" and (row[3].startswith(f"{n_comp}/") or row[3] == "-"), (cname, layer, row)
        # the final accuracy line: mean and sample s.d. over seeds of each run's last metrics row, counted here
        last = [read_jsonl(mnist_sweep / f"{cname}-s{s}" / "metrics.jsonl")[-1] for s in (0, 1)]
        section = page.split(f"\n## {cname}\n")[1]
        assert (f"Final accuracy (epoch 4, 2 seeds): train {np.mean([r['train_acc'] for r in last]):.4f}"
                f" \u00b1 {np.std([r['train_acc'] for r in last], ddof=1):.4f}") in section


def test_presets_and_defaults_of_the_mnist_nets(shared_data):
    plan, jobs = _plan("--preset", "paper-mnist-bottleneck-2", "--dataset", "digits")
    assert len(jobs) == 20 and jobs[0].name == "mnist-bottleneck-2-digits-relu-8b-s0"
    assert {(j.config["net"], j.config["activation"], j.config["bits"], j.config["epochs"], j.config["mi_every"],
             j.config["dataset"]) for j in jobs} == {("mnist-bottleneck-2", "relu", 8, 3000, 2, "digits")}
    _, jobs = _plan("--preset", "paper-mnist-4x10", "--dataset", "digits")
    assert len(jobs) == 40 and {j.configuration for j in jobs} == {"mnist-4x10-digits-tanh-8b", "mnist-4x10-digits-relu-8b"}
    for net in ("mnist-bottleneck-4", "mnist-hourglass", "mnist-conv"):
        _, jobs = _plan("--preset", f"paper-{net}", "--dataset", "digits", "--seeds", "0")
        assert [j.name for j in jobs] == [f"{net}-digits-relu-8b-s0"] and jobs[0].config["epochs"] == 3000
    # --data-dir as train takes it (resolved), the IDX headers checked
    plan, jobs = _plan("--net", "mnist-hourglass", "--dataset", "mnist", "--data-dir", str(shared_data / "mnist-test"))
    assert plan["fixed"]["data_dir"] == str((shared_data / "mnist-test").resolve()) == jobs[0].config["data_dir"]
    assert jobs[0].name == "mnist-hourglass-mnist-relu-8b-s0" and jobs[0].config["mi_every"] == 2
    # syn beside an mnist net: each its own data and paper settings; the varied axes name the configurations
    _, jobs = _plan("--net", "syn", "mnist-4x10", "--dataset", "digits")
    got = {j.name: (j.config["dataset"], j.config["data_dir"], j.config["epochs"], j.config["mi_every"]) for j in jobs}
    assert got == {"syn-tanh-8b-e8000-k5-s0": ("syn", None, 8000, 5),
                   "mnist-4x10-digits-tanh-8b-e3000-k2-s0": ("digits", None, 3000, 2)}
    # a SYN sweep is planned as before --net existed (the background study's names and manifest)
    plan, jobs = _plan("--preset", "paper-syn")
    assert plan["grid"]["net"] == ["syn"] and set(plan["fixed"]) == {"engine", "phase_thresholds"}
    assert jobs[0].name == "syn-tanh-8b-s0" and jobs[0].config["dataset"] == "syn"


def test_a_sweep_from_before_net_resumes(tmp_path, capsys):
    """A manifest with no net axis (written before --net) is a SYN sweep: the same command skips its runs."""
    d = tmp_path / "old"
    flags = ["--epochs", "2", "--mi-every", "2", "--seeds", "0", "--checkpoint-secs", "0", "--no-progress"]
    assert _sweep(d, *flags) == 0
    manifest = json.loads((d / "sweep.json").read_text())
    del manifest["grid"]["net"]
    for point in manifest["configurations"].values():
        del point["net"], point["dataset"]
    atomic_write_json(d / "sweep.json", manifest)
    assert _sweep(d, *flags) == 0
    assert json.loads((d / "sweep.json").read_text())["sessions"][-1]["skipped"] == 1
    capsys.readouterr()
    assert _sweep(d, *flags, "--net", "mnist-4x10", "--dataset", "digits") == 2
    assert "different grid (net: syn there, mnist-4x10 asked)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--net"], "--net has no values: the grid is empty"),
    (["--net", "mnist-4x10", "lenet", "--dataset", "digits"], "--net: unknown network 'lenet'; choose from syn, "),
    (["--net", "mnist-4x10", "mnist-4x10", "--dataset", "digits"], "--net: a value is given twice"),
    (["--net", "mnist-4x10", "mnist-conv", "--activation", "tanh", "--dataset", "digits"],
     "--net mnist-conv has relu hidden layers, not --activation tanh"),
    (["--preset", "paper-mnist-conv", "--activation", "tanh", "relu", "--dataset", "digits"],
     "--net mnist-conv has relu hidden layers, not --activation tanh"),
    (["--net", "mnist-4x10"], "--dataset mnist needs --data-dir DIR"),
    (["--preset", "paper-mnist-bottleneck-2"], "--dataset mnist needs --data-dir DIR"),
    (["--net", "mnist-4x10", "--dataset", "cifar"], "--dataset: unknown data set 'cifar'"),
    (["--net", "mnist-4x10", "--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "no MNIST IDX images there"),
    (["--net", "mnist-4x10", "--dataset", "digits", "--data-dir", "{tmp}"], "--data-dir applies to --dataset mnist"),
    (["--dataset", "digits"], "--net syn cannot train on --dataset digits"),
    (["--net", "syn", "mnist-4x10", "--dataset", "syn"], "--net mnist-4x10 cannot train on --dataset syn"),
])
def test_bad_input_is_one_line_before_anything_starts(tmp_path, capsys, flags, message):
    d = tmp_path / "sweep"
    short = [] if "--preset" in flags else ["--epochs", "1", "--mi-every", "1"]  # were one accepted: a short run
    assert _sweep(d, *[f.format(tmp=tmp_path) for f in flags], *short, "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ib-brevitas sweep: error: ") and message in err and "\n" not in err
    assert not d.exists()


def test_another_data_set_is_another_grid(mnist_sweep, shared_data, capsys):
    before = (mnist_sweep / "sweep.json").read_text()
    flags = [f if f != "digits" else "mnist" for f in SMALL] + ["--data-dir", str(shared_data / "mnist-test")]
    assert _sweep(mnist_sweep, *flags) == 2
    assert "different grid (dataset: \"digits\" there, \"mnist\" asked)" in capsys.readouterr().err
    assert (mnist_sweep / "sweep.json").read_text() == before
