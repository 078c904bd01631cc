"""--prefit-random K: K epochs on permuted labels first, recorded as epochs -K..-1; resume across the boundary."""

import pytest
import torch

from ib_brevitas.experiments import loop
from ib_brevitas.experiments.paper_run import build_run, train_epoch
from ib_brevitas.rundir import RunDir

CONFIG = dict(seed=3, test_fraction=0.2, activation="relu", bits=8, lr=1e-3, batch_size=256, mi_every=2, epochs=4)


def test_prefit_labels_are_one_fixed_permutation_of_the_training_labels():
    run = build_run({**CONFIG, "prefit_random": 2})
    assert sorted(run.y_prefit.tolist()) == sorted(run.y_train.tolist())  # same classes, same counts
    assert (run.y_prefit != run.y_train).float().mean() > 0.3  # SYN's two classes: about half differ
    assert torch.equal(build_run({**CONFIG, "prefit_random": 2}).y_prefit, run.y_prefit)
    assert not torch.equal(build_run({**CONFIG, "prefit_random": 2, "seed": 4}).y_prefit, run.y_prefit)
    assert build_run(CONFIG).y_prefit is None


def test_prefit_trains_on_the_permuted_labels_and_normal_training_on_the_true_ones():
    run, reference = build_run({**CONFIG, "prefit_random": 2}), build_run({**CONFIG, "prefit_random": 2})
    reference.y_train, true_labels = reference.y_prefit, reference.y_train  # an independent way to the same prefit
    for _ in range(2):
        train_epoch(run, prefit=True)
        train_epoch(reference)
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), reference.model.state_dict().values()))
    reference.y_train = true_labels
    train_epoch(run)
    train_epoch(reference)
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), reference.model.state_dict().values()))
    with pytest.raises(ValueError, match="no random-label prefit"):
        train_epoch(build_run(CONFIG), prefit=True)


def _config(run_dir, **extra):
    return {**CONFIG, "net": "syn", "dataset": "syn", "engine": "fast", "prefit_random": 4, "estimators": None,
            "phase_thresholds": {}, "run_dir": str(run_dir), **extra}


def _values(rd):
    return [(r.estimator, r.layer, r.epoch, r.step, r.i_xt, r.i_ty, r.n_distinct) for r in rd.read_records()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rd = RunDir(tmp_path_factory.mktemp("prefit") / "ref")
    assert loop.train_and_measure(rd, _config(rd.path), resume=False, progress=False) == 0
    return rd


def test_prefit_is_recorded_at_negative_epochs(reference):
    records = reference.read_records()
    assert sorted({r.epoch for r in records}) == [-4, -2, 0, 2, 4]
    steps = {r.epoch: r.step for r in records}
    assert steps[-4] == 0 and steps[0] == 4 * 13 and steps[4] == 8 * 13  # optimizer steps since the start
    metrics = reference.read_metrics()
    assert [m["epoch"] for m in metrics] == [-4, -2, 0, 2, 4]
    assert [m.get("prefit_random", False) for m in metrics] == [True, True, False, False, False]


@pytest.mark.parametrize("stop_after", [1, 3, 4, 5])  # in the prefit, at its last epoch, at epoch 0, after it
def test_resume_across_the_prefit_boundary_loses_nothing(reference, tmp_path, monkeypatch, stop_after):
    """Ctrl-C after `stop_after` trained epochs (checkpoint at that epoch's end), then --resume: the same run."""
    rd = RunDir(tmp_path / "run")
    real, calls = loop.train_epoch, []

    def counting(run, prefit=False):
        calls.append(prefit)
        out = real(run, prefit)
        if len(calls) == stop_after:
            monkeypatch.setattr(loop._StopAtEpochEnd, "requested", True)  # as the first Ctrl-C does
        return out

    monkeypatch.setattr(loop, "train_epoch", counting)
    assert loop.train_and_measure(rd, _config(rd.path, checkpoint_secs=1000), resume=False, progress=False) == 130
    assert rd.load_checkpoint()["epoch"] == stop_after - 4
    monkeypatch.setattr(loop._StopAtEpochEnd, "requested", False)
    assert loop.train_and_measure(rd, _config(rd.path), resume=True, progress=False) == 0
    assert calls[:4] == [True] * min(4, len(calls)) and calls.count(True) == 4  # 4 prefit epochs in all
    assert _values(rd) == _values(reference)
    assert rd.read_metrics() == reference.read_metrics()
    assert rd.phases_path.read_text() == reference.phases_path.read_text()
    assert _tb_records(rd)[0] == sorted(_values(reference))  # TensorBoard too: nothing lost or doubled


def test_cli_prefit_flag(tmp_path, capsys):
    from ib_brevitas.cli import main

    run_dir = tmp_path / "cli"
    assert main(["train", "--no-progress", "--run-dir", str(run_dir), "--prefit-random", "2", "--epochs", "2",
                 "--mi-every", "2", "--bits", "32", "--estimators", "binning-uniform-30-layer"]) == 0
    rd = RunDir(run_dir)
    assert rd.read_config()["prefit_random"] == 2
    assert sorted({r.epoch for r in rd.read_records()}) == [-2, 0, 2]
    assert all(r.estimator == "binning-uniform-30-layer" for r in rd.read_records())
    assert main(["train", "--no-progress", "--run-dir", str(run_dir), "--resume", "--prefit-random", "3"]) == 2
    assert "was run with prefit_random=2" in capsys.readouterr().err


def _tb_records(rd):
    from ib_brevitas.tensorboard.reader import read_event_files

    records, events = read_event_files(rd.event_files())
    return sorted((r.estimator, r.layer, r.epoch, r.step, r.i_xt, r.i_ty, r.n_distinct) for r in records), events


def test_the_prefit_reaches_tensorboard_at_steps_epoch_plus_k(reference):
    """TensorBoard steps are >= 0: a 4-epoch prefit's epochs -4..0 are written at steps 0..4 (every step is
    epoch + 4), the records keep their own epochs, so the tab draws what mi.jsonl holds, prefit included."""
    from tensorboard.backend.event_processing import event_file_loader

    got, events = _tb_records(reference)
    assert got == sorted(_values(reference)) and {v[2] for v in got} == {-4, -2, 0, 2, 4}
    assert [e.to_dict() for e in events] == [e.to_dict() for e in reference.read_events()]
    steps = {}
    for path in reference.event_files():
        for ev in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            for v in ev.summary.value if ev.HasField("summary") else ():
                steps.setdefault(v.tag.split("/")[0], set()).add(ev.step)
    assert steps["ib"] == {0, 2, 4, 6, 8}  # ib/I_XT/<layer> at epoch + 4
    assert steps["acc"] == {4, 6, 8}  # metrics from epoch 0 on, at the same steps
