"""`ib-brevitas report`: figures exist and hold the seeds' data, the verdict table counts what phases.jsonl says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from independent import report_verdict_tables
from phase_curves import EPOCHS as ALL_EPOCHS
from phase_curves import LOG2_N, family

from ib_brevitas.cli import main as cli_main
from ib_brevitas.experiments.sweep_plan import VERSION, write_manifest
from ib_brevitas.files import append_jsonl, atomic_write_json, read_jsonl
from ib_brevitas.phases import PhaseTracker
from ib_brevitas.records import LayerMI
from ib_brevitas.rundir import RunDir

SEEDS = range(6)
# per configuration and layer: the curve family of each seed (phase_curves.family)
KINDS = {
    "syn-tanh-8b": {"T1": ["saturated"] * 6, "T2": ["held_peak"] * 4 + ["plateau"] * 2,
                    "T3": ["fall_recover_fall", "slow_late_fall", "plateau", "plateau", "held_peak", "plateau"]},
    "syn-relu-8b": {"T1": ["plateau"] * 6, "T2": ["held_peak"] * 6, "T3": ["plateau"] * 5 + ["held_peak"]},
}
STRIDE = 4  # every 4th point of the families' 400: 100 measurements, a quicker report
EPOCHS = ALL_EPOCHS[::STRIDE]
EVERY = 5 * STRIDE


def scale(activation: str, index: int, epoch: int) -> float | None:
    """ReLU layers' scale grows (to 3x at the end for T2), tanh records carry none."""
    if activation != "relu":
        return None
    return 0.01 * (index + 1) * (1 + (index + 1) * epoch / EPOCHS[-1])


def _write_run(rd: RunDir, activation: str, seed: int, kinds: list[str], rng) -> None:
    rd.create()
    config = {"net": "syn", "dataset": "syn", "activation": activation, "bits": 8, "epochs": int(EPOCHS[-1]),
              "mi_every": EVERY, "seed": seed, "lr": 1e-4, "batch_size": 256, "test_fraction": 0.2, "engine": "fast",
              "phase_thresholds": {}}
    rd.write_config(config)
    curves = [(x[::STRIDE], y[::STRIDE]) for x, y, _ in (family(kind, rng, sigma=0.02) for kind in kinds)]
    records = [LayerMI(layer=f"T{i + 1}", epoch=int(e), step=None, i_xt=float(min(x[j], LOG2_N)), i_ty=float(y[j]),
                       h_t=float(min(x[j], LOG2_N)), n_distinct=1, n_samples=4096, bit_width=8, width=4,
                       layer_index=i, h_y=1.0, scale=scale(activation, i, int(e)))
               for j, e in enumerate(EPOCHS) for i, (x, y) in enumerate(curves)]
    rd.append_records(records)
    tracker = PhaseTracker.from_records(records)  # what the monitor writes live, replayed
    tracker.finish()
    rd.write_events(tracker.events)
    acc = 0.5 + 0.4 * (1 - np.exp(-EPOCHS / 300))
    append_jsonl(rd.metrics_path, [{"epoch": int(e), "train_acc": float(a + 0.01 * seed), "test_acc": float(a),
                                    "train_loss": 0.0, "test_loss": 0.0} for e, a in zip(EPOCHS, acc)])
    rd.write_summary({"layers": []}, "synthetic")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report") / "sweep"
    rng = np.random.default_rng(7)
    runs = {}
    for cname, layers in KINDS.items():
        for s in SEEDS:
            runs[f"{cname}-s{s}"] = cname
            _write_run(RunDir(d / f"{cname}-s{s}"), cname.split("-")[1], s, [layers[f"T{i}"][s] for i in (1, 2, 3)], rng)
    write_manifest(d, {
        "version": VERSION, "grid": {"activation": ["tanh", "relu"], "bits": [8], "epochs": [int(EPOCHS[-1])]},
        "seeds": list(SEEDS), "fixed": {"engine": "fast", "phase_thresholds": {}},
        "configurations": {c: {"activation": c.split("-")[1], "bits": 8, "epochs": int(EPOCHS[-1])} for c in KINDS},
        "runs": runs,
        "sessions": [{"started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:10:00+00:00", "engine": "local",
                      "workers": 2, "skipped": 0, "trained": 12, "failed": 0, "wall_s": 600.0}],
    })
    return d


@pytest.fixture(scope="module")
def report(sweep) -> Path:
    assert cli_main(["report", str(sweep), "-o", str(sweep.parent / "out")]) == 0
    return sweep.parent / "out"


def test_figures_exist_and_are_readable(report):
    from matplotlib.image import imread

    for cname in KINDS:
        for kind in ("mean", "seeds", "accuracy"):
            png = report / "figures" / f"{cname}-{kind}.png"
            image = imread(png)
            assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01  # not blank
            assert (report / "figures" / f"{cname}-{kind}.pdf").read_bytes()[:5] == b"%PDF-"
            assert f"](figures/{cname}-{kind}.png)" in (report / "report.md").read_text()


def test_verdict_counts_equal_the_runs_phase_events(sweep, report):
    tables = report_verdict_tables((report / "report.md").read_text())
    assert {k for k, rows in tables.items() if rows} == set(KINDS)
    for cname in KINDS:
        for layer in ("T1", "T2", "T3"):
            finals = [[e for e in read_jsonl(sweep / f"{cname}-s{s}" / "phases.jsonl")
                       if e["layer"] == layer and not e["provisional"]] for s in SEEDS]
            n_fit = sum(any(e["kind"] == "fitting_ended" for e in f) for f in finals)
            n_comp = sum(any(e["kind"] == "compression_confirmed" for e in f) for f in finals)
            row = tables[cname][layer]
            assert row[1] == str(len(SEEDS))
            assert row[2].startswith(f"{n_fit}/") or (n_fit == 0 and row[2] == "- (6 n/o)"), (cname, layer, row)
            assert row[3].startswith(f"{n_comp}/"), (cname, layer, row)
    # the curves' truth, independently of the detector: held peaks compress, plateaus do not
    assert tables["syn-relu-8b"]["T2"][3].startswith("6/6 (100%)")
    assert tables["syn-tanh-8b"]["T2"][3].startswith("4/6 (67%)")
    assert tables["syn-relu-8b"]["T1"][3].startswith("0/6 (0%)")
    # the overview repeats the counts, one row per configuration
    page = (report / "report.md").read_text()
    assert "| syn-relu-8b | exact | 6 | 6/6, 0/6 | 6/6, 6/6 | " in page
    assert "| syn-tanh-8b | exact | 6 | n/o, 0/6 sat | 6/6, 4/6 |" in page


def test_saturation_flag_counts_seeds_at_log2_n(sweep, report):
    tables = report_verdict_tables((report / "report.md").read_text())
    for cname in KINDS:
        for layer in ("T1", "T2", "T3"):
            n_sat = 0
            for s in SEEDS:
                x = np.array([r["i_xt"] for r in read_jsonl(sweep / f"{cname}-s{s}" / "mi.jsonl") if r["layer"] == layer])
                n_sat += bool(np.mean(x >= LOG2_N - 0.01) >= 0.95)  # the documented defaults
            cell = tables[cname][layer][-1]
            assert cell.startswith(f"{n_sat}/6") and ("SATURATED" in cell) == (2 * n_sat > 6)
    assert tables["syn-tanh-8b"]["T1"][-1] == "6/6 **SATURATED**"


def test_seed_figure_mean_is_the_mean_over_seeds(sweep):
    from ib_brevitas.experiments.report_figures import seeds_figure

    runs = [RunDir(sweep / f"syn-tanh-8b-s{s}").load() for s in SEEDS]
    fig = seeds_figure(runs, "t")
    (line,) = [a for ax in fig.axes for a in ax.lines if a.get_gid() == "mean:T3"]
    x = np.mean([[r.i_xt for r in sorted(run.records, key=lambda r: r.epoch) if r.layer == "T3"] for run in runs], 0)
    np.testing.assert_allclose(line.get_xdata(), x, rtol=0, atol=1e-12)
    scatters = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "seeds:T3"]
    assert len(scatters) == len(SEEDS)


def test_quantizer_scale_table(report):
    page = (report / "report.md").read_text()
    tanh, relu = page.split("## syn-relu-8b")
    assert "Quantizer scale" not in tanh  # no scale recorded
    assert "| T1 | 0.01 | 0.02 | 2.00x | 6 |" in relu and "| T2 | 0.02 | 0.06 | 3.00x | 6 |" in relu


def test_run_time_and_rate_from_the_manifest(report):
    page = (report / "report.md").read_text()
    assert "| 2026-01-01T00:00:00+00:00 | 2026-01-01T00:10:00+00:00 | local (2 workers) | 0 | 12 | 0 | 600.0 | 72.0 |" in page
    assert "12 seed runs trained in 600.0 s of sweep wall time (72.0 seeds/hour)" in page


def test_an_unfinished_sweep_reports_what_is_measured(sweep, tmp_path):
    import shutil

    d = tmp_path / "partial"
    shutil.copytree(sweep, d)
    for s in (4, 5):
        shutil.rmtree(d / f"syn-relu-8b-s{s}")
    (d / "syn-relu-8b-s3" / "summary.json").unlink()
    manifest = json.loads((d / "sweep.json").read_text())
    del manifest["configurations"]["syn-tanh-8b"]  # one configuration is enough here (and quicker to draw)
    atomic_write_json(d / "sweep.json", manifest)
    assert cli_main(["report", str(d)]) == 0
    page = (d / "report" / "report.md").read_text()
    assert "3 of 6 seeds finished, 4 reported here (each run with measurements, to its last measured epoch)" in page
    assert report_verdict_tables(page)["syn-relu-8b"]["T2"][1] == "4"
    assert cli_main(["report", str(d), "--finished-only"]) == 0
    page = (d / "report" / "report.md").read_text()
    assert "3 of 6 seeds finished, 3 reported here (the finished ones)" in page
    assert report_verdict_tables(page)["syn-relu-8b"]["T2"][1] == "3"


def test_not_a_sweep_is_one_line(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ib-brevitas report: error: {tmp_path} holds no sweep.json; pass a directory written by ib-brevitas sweep"
    atomic_write_json(tmp_path / "sweep.json", {"version": 99})
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "is not an ib-brevitas sweep manifest" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_a_float_configuration_reports_each_estimator_apart(tmp_path):
    """A float net's runs hold binned series only (one per estimator): the report gives each estimator its
    own figures and verdict table, labelled as an estimate, with the curves' truth (held peaks compress,
    plateaus do not) per estimator, and never an exact table."""
    rng = np.random.default_rng(3)
    kinds = {"binning-uniform-30-global": ["held_peak", "plateau"], "binning-uniform-256-global": ["plateau", "held_peak"]}
    d, runs = tmp_path / "sweep", {}
    for s in range(4):
        rd = RunDir(d / f"syn-tanh-32b-s{s}")
        rd.create()
        rd.write_config({"net": "syn", "dataset": "syn", "activation": "tanh", "bits": 32, "epochs": int(EPOCHS[-1]),
                         "mi_every": EVERY, "seed": s, "lr": 1e-4, "batch_size": 256, "test_fraction": 0.2,
                         "engine": "fast", "phase_thresholds": {}})
        records = []
        for est, layer_kinds in kinds.items():
            curves = [(x[::STRIDE], y[::STRIDE]) for x, y, _ in (family(k, rng, sigma=0.02) for k in layer_kinds)]
            records += [LayerMI(layer=f"T{i + 1}", epoch=int(e), step=None, i_xt=float(min(x[j], LOG2_N)),
                                i_ty=float(y[j]), h_t=float(min(x[j], LOG2_N)), n_distinct=1, n_samples=4096,
                                bit_width=32, width=4, layer_index=i, h_y=1.0, estimator=est)
                        for j, e in enumerate(EPOCHS) for i, (x, y) in enumerate(curves)]
        rd.append_records(records)
        runs[rd.path.name] = "syn-tanh-32b"
    write_manifest(d, {"version": VERSION, "grid": {"bits": [32], "epochs": [int(EPOCHS[-1])]}, "seeds": list(range(4)),
                       "fixed": {"engine": "fast", "phase_thresholds": {}}, "runs": runs, "sessions": [],
                       "configurations": {"syn-tanh-32b": {"activation": "tanh", "bits": 32, "epochs": int(EPOCHS[-1])}}})
    loads = []
    load = RunDir.load
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "load", lambda self: (loads.append(self.path.name), load(self))[1])
        assert cli_main(["report", str(d), "-o", str(tmp_path / "out")]) == 0
    assert sorted(loads) == sorted(runs)  # each run read once, not once per estimator and figure
    page = (tmp_path / "out" / "report.md").read_text()
    assert "Verdicts per layer:" not in page  # no exact table for a float net
    for est, (t1, t2) in kinds.items():
        part = page.split(f"### {est}: an estimate by binning, not exact MI")[1].split("\n### ")[0]
        table = part.split(f"Verdicts per layer of the {est} series (an estimate):\n\n")[1].split("\n\n")[0]
        rows = {r.strip("|").split(" | ")[0].strip(): r.strip("|").split(" | ")[3].strip()
                for r in table.splitlines() if r.startswith("| T")}
        truth = {"held_peak": "4/4 (100%)", "plateau": "0/4 (0%)"}
        assert rows["T1"].startswith(truth[t1]) and rows["T2"].startswith(truth[t2]), (est, rows)
        for kind in ("mean", "seeds"):
            assert (tmp_path / "out" / "figures" / f"syn-tanh-32b-{est}-{kind}.png").stat().st_size > 0
        assert f"| syn-tanh-32b | {est} (estimate) | 4 |" in page
    # estimators in bin order, 30 before 256
    assert page.index("### binning-uniform-30-global") < page.index("### binning-uniform-256-global")
