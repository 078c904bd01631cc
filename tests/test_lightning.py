"""InformationPlaneCallback in a real lightning.Trainer (CPU) with a real bnn_pynq TFC-2W2A on digits.

References are independent of the callback: a plain InformationPlane on the
weights Lightning checkpointed after each epoch, and an uninterrupted fit for
the crash-and-resume runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from ib_brevitas.integrations.lightning import InformationPlaneCallback  # noqa: E402
from ib_brevitas.monitor import InformationPlane  # noqa: E402
from ib_brevitas.rundir import RunDir  # noqa: E402
from ib_brevitas.tensorboard.reader import read_event_files  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import lightning_tfc as lit  # noqa: E402

EPOCHS = 4


def _layer_order(records):
    return sorted(records, key=lambda r: (r.layer_index, r.epoch))


def _fit(root, every=1, validate=True, epochs=EPOCHS, ckpt_path=None, extra=(), keep_all=False, version=None):
    x, y = lit.probe_set()
    cb = InformationPlaneCallback(x, y, every_n_epochs=every)
    # With validation, checkpoint at validation end (as with val_check_interval < 1): before on_train_epoch_end.
    ckpt = ModelCheckpoint(save_top_k=-1 if keep_all else 1, every_n_epochs=1,
                           save_on_train_epoch_end=False if validate else None)
    trainer = lit.trainer(root, [cb, ckpt, *extra], epochs, validate=validate, version=version)
    trainer.fit(lit.LitTFC(), ckpt_path=ckpt_path)
    return trainer


class _Crash(pl.Callback):
    """Fails at the end of one epoch: after the callback has measured it, before Lightning checkpoints it."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            raise RuntimeError("crash for the test")


def test_records_equal_a_plain_measurement_of_each_epochs_weights(tmp_path):
    trainer = _fit(tmp_path, keep_all=True)
    rd = RunDir(trainer.log_dir)
    records = rd.read_records()
    x, y = lit.probe_set()
    plain = InformationPlane(lit.LitTFC(), x, y)
    n = len(plain.layer_names)
    assert [r.epoch for r in records] == [e for e in range(EPOCHS + 1) for _ in range(n)]
    assert records[:n] == plain.measure(0, step=0)  # epoch 0: before any training step
    for e in range(1, EPOCHS + 1):
        (path,) = Path(rd.path, "checkpoints").glob(f"epoch={e - 1}-step=*.ckpt")
        ckpt = torch.load(path, weights_only=False)
        model = lit.LitTFC()
        model.load_state_dict(ckpt["state_dict"])
        want = InformationPlane(model, x, y).measure(e, step=ckpt["global_step"])
        assert records[e * n : (e + 1) * n] == want, e
    assert len({r.i_ty for r in records}) > 1  # training moved the codes
    # TensorBoard: the plugin's data in the logger's own event file (one file), equal to mi.jsonl.
    assert len(rd.event_files()) == 1
    tb_records, tb_events = read_event_files(rd.event_files())
    assert tb_records == _layer_order(records)
    assert [e.to_dict() for e in tb_events] == [e.to_dict() for e in rd.read_events()]
    # What ib-brevitas export needs: the module's factory, the probe set, the final weights.
    from ib_brevitas.export.run import load_run

    run = load_run(rd.path)
    assert run.epoch == EPOCHS and torch.equal(run.inputs, x) and torch.equal(run.labels, y)
    assert rd.read_config()["model"] == {"factory": "lightning_tfc:LitTFC", "kwargs": {"seed": 0, "lr": 0.01}}
    assert InformationPlane(run.model, x, y).measure(EPOCHS, step=records[-1].step) == records[-n:]


@pytest.mark.parametrize("validate, every, pinned", [(True, 1, False), (False, 2, True)])
def test_crash_and_resume_from_checkpoint_equals_an_uninterrupted_fit(tmp_path, validate, every, pinned):
    """pinned: TensorBoardLogger(version="run") on both fits, so Lightning resumes into the same directory."""
    version = "run" if pinned else None
    whole = RunDir(_fit(tmp_path / "whole", every, validate).log_dir)
    with pytest.raises(RuntimeError, match="crash for the test"):
        _fit(tmp_path / "cut", every, validate, extra=[_Crash(3)], version=version)
    first = RunDir(tmp_path / "cut" / "lit" / (version or "version_0"))
    assert max(r.epoch for r in first.read_records()) == (3 if every == 1 else 2)  # on_exception flushed it
    (ckpt,) = Path(first.path, "checkpoints").glob("*.ckpt")
    saved = torch.load(ckpt, weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("InformationPlaneCallback"))
    if validate:  # Lightning checkpointed epoch 3 at validation end, before the callback measured it;
        assert saved["epoch"] == 2 and state["last_epoch"] == 2  # the resumed fit ends epoch 3 and measures it
    else:  # the checkpoint of epoch 2; epoch 3 was measured, then the crash, never checkpointed
        assert saved["epoch"] == 1 and state["last_epoch"] == 2
    resumed = _fit(tmp_path / "cut", every, validate, ckpt_path=ckpt, version=version)
    assert first.read_records() == whole.read_records()
    assert [e.to_dict() for e in first.read_events()] == [e.to_dict() for e in whole.read_events()]
    assert {r.epoch for r in whole.read_records()} == set(range(0, EPOCHS + 1, every))
    # Two event files in the run's directory: the first fit's, and the resumed one's (the logger's own when
    # pinned, else the callback's); TensorBoard's view of them is exactly the records.
    tb_records, _ = read_event_files(first.event_files())
    assert len(first.event_files()) == 2 and tb_records == _layer_order(whole.read_records())
    if pinned:
        assert Path(resumed.log_dir) == first.path
    else:  # Lightning's new version directory gets Lightning's scalars, not the records
        assert Path(resumed.log_dir).name == "version_1" and not RunDir(resumed.log_dir).records_path.exists()


def test_a_fresh_fit_into_a_directory_with_records_is_refused(tmp_path):
    _fit(tmp_path, epochs=1, version="run")
    with pytest.raises(ValueError, match="already holds records.*ckpt_path="):
        _fit(tmp_path, epochs=1, version="run")


def test_bad_arguments_are_refused():
    x, y = lit.probe_set()
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1"):
        InformationPlaneCallback(x, y, every_n_epochs=0)
    cb = InformationPlaneCallback(x, y)
    with pytest.raises(ValueError, match="checkpoint state of version 9"):
        cb.load_state_dict({"version": 9})
