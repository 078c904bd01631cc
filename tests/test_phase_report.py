"""Cross-seed phase statistics and the `ib-brevitas phases` CLI, checked against independent computations."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from ib_brevitas.cli import main as cli_main
from ib_brevitas.files import append_jsonl
from ib_brevitas.phase_report import (
    clopper_pearson,
    positive_drop_tests,
    signed_drops,
    summarize_runs,
)
from ib_brevitas.phases import PhaseTracker, run_summary
from ib_brevitas.records import LayerMI
from ib_brevitas.rundir import RunDir

EPOCHS = np.arange(80) * 5


def layer_curve(kind: str, rng: np.random.Generator, onset: int = 40):
    """(i_xt, i_ty) over EPOCHS: rise to 6 bits by measurement 15, then flat or falling by 1 bit from `onset`."""
    k = np.arange(len(EPOCHS))
    x = 6 * np.minimum(k / 15, 1)
    if kind == "compress":
        x = x - np.clip((k - onset) / (len(k) - 1 - onset), 0, 1)
    y = 0.9 * np.minimum(k / 15, 1)
    return x + rng.normal(0, 0.02, len(k)), y + rng.normal(0, 0.004, len(k))


def write_run(path: Path, layers: dict[str, tuple[np.ndarray, np.ndarray]], config: dict | None = None) -> Path:
    """A run directory as `ib-brevitas train` leaves it: mi.jsonl (one line per layer and measurement), config.json."""
    path.mkdir(parents=True)
    append_jsonl(path / "mi.jsonl", [  # one measurement after another, all layers each
        LayerMI(layer=name, epoch=int(e), step=None, i_xt=float(x[j]), i_ty=float(y[j]), h_t=float(x[j]),
                n_distinct=1, n_samples=4096, bit_width=8, width=4, layer_index=i, h_y=1.0).to_dict()
        for j, e in enumerate(EPOCHS) for i, (name, (x, y)) in enumerate(layers.items())
    ])
    cfg = {"dataset": "syn", "activation": "tanh", "bits": 8, "seed": 0, **(config or {})}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture
def six_runs(tmp_path):
    """Six seeds: `hidden.act` compresses in five (onsets 30..50), `out` never does."""
    rng = np.random.default_rng(0)
    dirs = []
    for s in range(6):
        kind = "compress" if s < 5 else "plateau"
        dirs.append(write_run(tmp_path / f"run-seed{s}", {
            "hidden.act": layer_curve(kind, rng, onset=30 + 5 * s),
            "out": layer_curve("plateau", rng),
        }, {"seed": s}))
    return dirs


# ---------------------------------------------------------------- statistics vs independent computations


def test_clopper_pearson_matches_beta_quantiles_and_hand_values():
    assert clopper_pearson(0, 5) == pytest.approx((0.0, 1 - 0.025 ** (1 / 5)))
    assert clopper_pearson(5, 5) == pytest.approx((0.025 ** (1 / 5), 1.0))
    for k, n in [(1, 4), (3, 10), (17, 20)]:
        assert clopper_pearson(k, n) == pytest.approx((beta.ppf(0.025, k, n - k + 1), beta.ppf(0.975, k + 1, n - k)))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(3, 2)


def _wilcoxon_exact_greater(d):
    """P(W+ >= observed) over all 2^n sign assignments (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w = ranks[d > 0].sum()
    hits = sum(ranks[list(signs)].sum() >= w for signs in
               (np.array(bits, bool) for bits in itertools.product([0, 1], repeat=len(d))))
    return hits / 2 ** len(d)


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.5, 0.2, 0.9], [0.4, 0.1, 0.7, 1.1, 0.2, 0.35, 0.9],
                               [-0.2, -0.5, 0.1, -0.05, 0.3, -0.6]])
def test_positive_drop_tests_match_enumeration(d):
    d = np.array(d)
    p_w, p_s, n = positive_drop_tests(np.r_[d, 0.0])  # the zero is dropped
    assert n == len(d)
    assert p_w == pytest.approx(_wilcoxon_exact_greater(d))
    pos = int((d > 0).sum())
    assert p_s == pytest.approx(sum(math.comb(len(d), k) for k in range(pos, len(d) + 1)) / 2 ** len(d))
    assert positive_drop_tests(np.zeros(4)) == (1.0, 1.0, 0)


def test_signed_drops_use_the_other_runs_peak():
    e = np.arange(6.0)
    curves = [
        (e, np.array([1, 5, 4, 3, 2, 2.0])),  # run 0 peaks at 1
        (e, np.array([1, 2, 3, 6, 3, 3.0])),  # run 1 peaks at 3
        (e, np.array([1, 2, 3, 4, 5, 5.0])),  # run 2 never falls
    ]
    smooth = 1  # no smoothing: the reference epochs can be worked out by hand
    # run 0: others' mean = [1, 2, 3, 5, 4, 4] -> peak at 3 -> 3 - 2 = 1
    # run 1: others' mean = [1, 3.5, 3.5, 3.5, 3.5, 3.5] -> first max at 1 -> 2 - 3 = -1
    # run 2: others' mean = [1, 3.5, 3.5, 4.5, 2.5, 2.5] -> peak at 3 -> 4 - 5 = -1
    np.testing.assert_allclose(signed_drops(curves, smooth), [1.0, -1.0, -1.0])
    # runs measured on different grids share only their common epochs
    odd = (np.arange(1.0, 6.0, 2), np.array([4.0, 9.0, 1.0]))
    np.testing.assert_allclose(signed_drops([curves[0], odd], smooth), [3 - 2, 4 - 1])
    assert signed_drops(curves[:1], smooth) is None
    assert signed_drops([curves[0], (np.array([0.0, 9.0]), np.array([1.0, 2.0]))], smooth) is None


def _smoothed_by_hand(x, window=5):
    """The documented running median, written out: centred windows, shrinking symmetrically at the
    start and losing their future half at the end."""
    h, n = window // 2, len(x)
    return np.array([np.median(x[: 2 * i + 1] if i < h else x[max(0, i - h) : i + h + 1]) for i in range(n)])


def test_summary_of_six_seeds(six_runs):
    s = summarize_runs(six_runs)
    assert [x.layer for x in s.layers] == ["hidden.act", "out"]
    hid, out = s.layers
    # independent of detect(): the series read back from the files, smoothed by hand
    rows = [[json.loads(line) for line in (d / "mi.jsonl").read_text().splitlines()] for d in six_runs]
    hidden = [np.array([r["i_xt"] for r in rs if r["layer"] == "hidden.act"]) for rs in rows]
    drops = [sm.max() - sm[-1] for sm in map(_smoothed_by_hand, hidden)]
    assert [v.compression for v in (r.verdicts["hidden.act"] for r in s.runs)] == [True] * 5 + [False]
    assert (hid.n_runs, hid.n_compression, hid.n_no_compression, hid.n_undecided) == (6, 5, 1, 0)
    assert hid.frac_compression == pytest.approx(5 / 6)
    assert (hid.ci_low, hid.ci_high) == pytest.approx((beta.ppf(0.025, 5, 2), beta.ppf(0.975, 6, 1)))
    # the true onsets are measurements 30, 35, ..., 50 (median: 40); within 2 % of the run
    assert abs(hid.median_onset_epoch - EPOCHS[40]) <= 0.02 * EPOCHS[-1]
    assert hid.median_drop_bits == pytest.approx(np.median(drops))
    assert hid.median_drop_bits == pytest.approx(1.0, abs=0.1)  # the falls are 1 bit (run 5: ~0)
    assert hid.frac_fitting == 1.0 and hid.label == "T1"
    assert hid.p_value == pytest.approx(_wilcoxon_exact_greater(np.array(signed_drops(
        [s.runs[i].series["hidden.act"][:2] for i in range(6)], 5))))
    assert hid.p_value < 0.05 and hid.median_signed_drop_bits > 0.5
    assert out.n_compression == 0 and out.ci_low == 0.0 and out.p_value > 0.05
    # every run's events were replayed; the compressing layer confirmed live in the five, and finally
    for r, compressing in zip(s.runs, [True] * 5 + [False]):
        mine = [e for e in r.events if e.kind == "compression_confirmed" and e.layer == "hidden.act"]
        assert [e.provisional for e in mine] == ([True, False] if compressing else [])


def test_readings_and_the_mean_curve(six_runs):
    s = summarize_runs(six_runs, events=False)
    hid = s.layers[0]
    rows = [[json.loads(line) for line in (d / "mi.jsonl").read_text().splitlines()] for d in six_runs]
    for mi in ("i_xt", "i_ty"):
        curves = [_smoothed_by_hand(np.array([r[mi] for r in rs if r["layer"] == "hidden.act"])) for rs in rows]
        for k, f in (("start", lambda c: c[0]), ("peak", np.max), ("final", lambda c: c[-1])):
            vals = [f(c) for c in curves]
            assert getattr(hid, f"{mi}_{k}_mean") == pytest.approx(np.mean(vals))
            assert getattr(hid, f"{mi}_{k}_sd") == pytest.approx(np.std(vals, ddof=1))
    # the mean of five 1-bit falls and a plateau falls by 5/6 bit
    assert hid.per_run_compression == "yes yes yes yes yes no"
    assert hid.mean_curve_compression is True
    assert hid.mean_curve_drop_bits == pytest.approx(5 / 6, abs=0.08)
    # staggered falls average to a curve that bends down gradually: its knee lies among the onsets
    assert EPOCHS[30] <= hid.mean_curve_onset_epoch <= EPOCHS[50]
    assert s.mean_verdicts["hidden.act"].drop_bits == hid.mean_curve_drop_bits


def test_thresholds_reach_the_verdicts(six_runs):
    s = summarize_runs(six_runs, events=False, min_drop_bits=2.0)
    assert s.layers[0].n_compression == 0 and all(not r.events for r in s.runs)
    with pytest.raises(TypeError, match="unknown phase thresholds"):
        summarize_runs(six_runs, min_drop=2.0)


# ---------------------------------------------------------------- the CLI


def test_cli_table_json_and_csv(six_runs, tmp_path, capsys):
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    rc = cli_main(["phases", *map(str, six_runs), "--json", str(js), "--csv", str(cs), "--per-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "6 run(s)" in out and "T1 hidden.act" in out and "5/6" in out and "compression confirmed" in out
    data = json.loads(js.read_text())
    assert [d["layer"] for d in data["layers"]] == ["hidden.act", "out"]
    assert data["layers"][0]["n_compression"] == 5 and data["thresholds"]["min_drop_bits"] == 0.1
    assert len(data["runs"]) == 6 and data["runs"][0]["verdicts"]["hidden.act"]["compression"] is True
    assert any(e["kind"] == "compression_started" for e in data["runs"][0]["events"])
    rows = list(csv.DictReader(cs.open()))
    assert [r["layer"] for r in rows] == ["hidden.act", "out"]
    assert float(rows[0]["frac_compression"]) == pytest.approx(5 / 6) and rows[1]["median_onset_epoch"] == ""


def test_cli_threshold_flags(six_runs, capsys):
    assert cli_main(["phases", *map(str, six_runs), "--min-drop-bits", "2", "--smooth", "3", "--json", os.devnull]) == 0
    assert "0/6" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["phases", str(six_runs[0]), "--min-drop-bits", "lots"])


def _cli_error(args, capsys) -> str:
    assert cli_main(["phases", *map(str, args)]) == 2
    return capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys, six_runs):
    err = _cli_error([six_runs[0], tmp_path / "nope"], capsys)
    assert f"run directory {tmp_path / 'nope'} does not exist" in err
    (tmp_path / "empty").mkdir()
    assert "no mi.jsonl records" in _cli_error([tmp_path / "empty"], capsys)
    (tmp_path / "empty" / "mi.jsonl").write_text("")
    assert "holds no measurements" in _cli_error([tmp_path / "empty"], capsys)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    lines = (six_runs[0] / "mi.jsonl").read_text().splitlines()
    (bad / "mi.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    err = _cli_error([bad], capsys)
    assert "corrupt" in err and "line 2" in err and str(bad / "mi.jsonl") in err
    (bad / "mi.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")
    assert "two records for epoch 0" in _cli_error([bad], capsys)
    (bad / "mi.jsonl").write_text(lines[0].replace('"i_xt": ', '"i_xt": NaN, "x": ') + "\n")
    assert "non-finite" in _cli_error([bad], capsys)
    (bad / "mi.jsonl").write_text('{"layer": "T1", "epoch": 0}\n')
    assert "lacks the LayerMI fields" in _cli_error([bad], capsys)


def test_mixed_configurations_warn(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = write_run(tmp_path / "a", {"T": layer_curve("compress", rng)}, {"activation": "tanh"})
    b = write_run(tmp_path / "b", {"T": layer_curve("compress", rng)}, {"activation": "relu"})
    assert cli_main(["phases", str(a), str(b), "--no-events"]) == 0
    assert "differ in 'activation'" in capsys.readouterr().err


# ---------------------------------------------------------------- real SYN runs end to end


def _train_all(jobs: list[tuple[Path, str, int]], epochs: int, every: int) -> None:
    """`ib-brevitas train` for each (run_dir, activation, seed), two at a time (one per core)."""
    def start(run_dir, activation, seed):
        cmd = [sys.executable, "-m", "ib_brevitas", "train", "--dataset", "syn", "--activation", activation,
               "--bits", "8", "--epochs", str(epochs), "--mi-every", str(every), "--seed", str(seed),
               "--run-dir", str(run_dir), "--no-progress", "--threads", "1"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    for pair in (jobs[i : i + 2] for i in range(0, len(jobs), 2)):
        procs = [start(*job) for job in pair]
        for p in procs:
            out, _ = p.communicate(timeout=3600)
            assert p.returncode == 0, out


def _real_runs_through_cli(tmp_path, capsys, epochs, every, seeds):
    dirs = {act: [tmp_path / f"{act}-s{s}" for s in seeds] for act in ("tanh", "relu")}
    _train_all([(d, act, s) for act, ds in dirs.items() for d, s in zip(ds, seeds)], epochs, every)
    results = {}
    for act, ds in dirs.items():
        js = tmp_path / f"{act}.json"
        assert cli_main(["phases", *map(str, ds), "--json", str(js), "--per-run"]) == 0
        out = capsys.readouterr().out
        assert f"{len(ds)} run(s)" in out
        data = json.loads(js.read_text())
        assert [d["label"] for d in data["layers"]] == [f"T{i}" for i in range(1, 7)]
        for run in data["runs"]:
            assert len(run["verdicts"]) == 6
            # the events the training loop wrote equal the CLI's replay (same default thresholds)
            written = Path(run["run_dir"]) / "phases.jsonl"
            live = [json.loads(line) for line in written.read_text().splitlines()] if written.exists() else []
            replay = run["events"]
            assert replay[: len(live)] == live
            # the rest can only be what PhaseTracker.finish() adds at the end of the run
            assert all(e["detected_epoch"] == epochs and not e["provisional"] for e in replay[len(live):])
            # the final events are the final verdicts' fitting ends and onsets
            for layer, v in run["verdicts"].items():
                final = [(e["kind"], e["epoch"]) for e in replay if e["layer"] == layer and not e["provisional"]
                         and e["kind"] != "compression_retracted"]
                assert final == ([("fitting_ended", v["fit_end_epoch"])] if v["fitting"] else []) + (
                    [("compression_confirmed", v["onset_epoch"])] if v["compression"] else [])
        results[act] = data
    return results


@pytest.mark.slow
def test_real_syn_runs_end_to_end(tmp_path, capsys):
    """Two seeds of tanh and ReLU, 8 bit, 300 epochs: the output layer T6 fits and then compresses."""
    results = _real_runs_through_cli(tmp_path, capsys, epochs=300, every=5, seeds=(0, 1))
    for act, data in results.items():
        t6 = data["layers"][-1]
        assert t6["n_fitting"] == 2 and t6["n_compression"] == 2, (act, t6)
        assert data["layers"][0]["n_compression"] == 0  # T1 stays at log2 N = 12 bits


def test_short_real_syn_runs_end_to_end(tmp_path, capsys):
    """A few epochs of tanh and ReLU through train and the CLI: verdicts, events and the table appear;
    tanh T1-T3 are injective on the probe set (saturated, fitting not observable)."""
    results = _real_runs_through_cli(tmp_path, capsys, epochs=4, every=1, seeds=(0,))
    tanh = results["tanh"]["runs"][0]["verdicts"]
    for name, v in list(tanh.items())[:3]:
        assert v["saturated"] and v["fitting"] is None and v["reason"] == "saturated", name
    assert not list(tanh.values())[-1]["saturated"]  # the output layer is far below log2 N
    run = RunDir(tmp_path / "tanh-s0").load()
    tracker = PhaseTracker.from_records(run.records)
    data, text = run_summary(run.records, tracker.verdicts())
    json.dumps(data, allow_nan=False)
    assert [d["label"] for d in data["layers"]] == [f"T{i}" for i in range(1, 7)]
    assert [d["saturated"] for d in data["layers"]][:3] == [True] * 3 and "not observable" in text


def test_exact_and_binned_series_are_decided_apart(tmp_path, capsys):
    """A run holding exact and binned records: each estimator's series is read alone, never mixed."""
    import dataclasses

    from ib_brevitas.phase_report import analyse_run

    rd = RunDir(tmp_path / "mixed")
    exact = [LayerMI("T1", e, None, 10 - 0.01 * e, 0.9, 10 - 0.01 * e, 900, 1000, 8, 4, 0, 1.0) for e in range(0, 60, 2)]
    binned = [dataclasses.replace(r, i_xt=5.0, h_t=5.0, estimator="binning-uniform-30-global") for r in exact]
    rd.append_records(exact + binned)
    a = analyse_run(rd.path)
    b = analyse_run(rd.path, estimator="binning-uniform-30-global")
    assert a.verdicts["T1"].peak_i_xt > 9 and b.verdicts["T1"].peak_i_xt == 5.0
    assert cli_main(["phases", str(rd.path), "--estimator", "binning-uniform-99-global"]) == 2
    assert "holds no 'binning-uniform-99-global' records" in capsys.readouterr().err
