"""`InformationPlaneCallback`: exact MI of a LightningModule's quantized layers, epoch by epoch.

    trainer = lightning.Trainer(callbacks=[InformationPlaneCallback(probe_x, probe_y)])

The callback measures the LightningModule itself (its forward, every integer
layer with layers="auto") before training (epoch 0) and after every
`every_n_epochs`-th training epoch, asynchronously; record epoch e = e
training epochs done. It writes into the logger's directory
(`trainer.log_dir`) through `InformationPlane.record_to`: mi.jsonl,
phases.jsonl, and the scalars plus the Information Plane tab's data through
the TensorBoardLogger's own SummaryWriter. It also writes what
`ib-brevitas export LOG_DIR` needs: config.json (how to rebuild the module:
`model_spec`, or its class and saved hyperparameters, else model.pt), probe.npz, and at fit end
checkpoints/last.pt with the module's weights.

Resume: the callback's state (the plane's history, the run directory, the
last measured epoch) travels in Lightning checkpoints, so
`trainer.fit(..., ckpt_path=...)` gives no duplicated or missing record. A
resumed run keeps writing into the run directory it started in, even when
the TensorBoardLogger opens a new version directory (then the callback's
TensorBoard data goes through a SummaryWriter of its own in the first
directory); pin `TensorBoardLogger(version=...)` to keep Lightning's own
scalars there too. A checkpoint saved at validation end, before this
callback measured the epoch, resumes at that epoch's end: Lightning calls
`on_train_epoch_end` again and the epoch is measured from the checkpoint's
weights (tested both ways).

Under DDP every rank measures its slice of the probe set and rank zero counts
and writes (`ib_brevitas.distributed`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from ib_brevitas.monitor import InformationPlane
from ib_brevitas.rundir import RunDir, RunDirError

__all__ = ["InformationPlaneCallback"]

_STATE_VERSION = 1


def _numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _hparams_spec(pl_module: pl.LightningModule) -> dict[str, Any] | None:
    """factory_spec(the module's class, **its saved hyperparameters), when they are plain JSON values."""
    import json

    from ib_brevitas.rundir import factory_spec

    cls = type(pl_module)
    if not pl_module.hparams or cls.__module__ == "__main__":
        return None
    try:
        json.dumps(dict(pl_module.hparams), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return factory_spec(cls, **dict(pl_module.hparams))


class InformationPlaneCallback(pl.Callback):
    """Measure I(X;T), I(T;Y) of every quantized layer on a fixed probe set during `trainer.fit`.

    probe_x, probe_y: the probe set (N, ...) inputs and N integer labels, the
        same on every rank under DDP.
    every_n_epochs: measure after every n-th training epoch (and at epoch 0).
    layers: "auto" or module names of the LightningModule.
    phases: detect fitting/compression phases into phases.jsonl and TensorBoard.
    model_spec: `ib_brevitas.rundir.factory_spec(fn, **kwargs)` rebuilding the
        LightningModule for `ib-brevitas export`; default: its class with its
        saved hyperparameters (`save_hyperparameters()`), else model.pt (pickled).
    plane_kwargs: passed to `InformationPlane` (batch_size, device, codes_fn, ...).
    """

    def __init__(self, probe_x: Any, probe_y: Any, every_n_epochs: int = 1, layers: Any = "auto",
                 phases: bool = True, model_spec: dict[str, Any] | None = None, **plane_kwargs: Any):
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.probe_x, self.probe_y = probe_x, probe_y
        self.every_n_epochs = every_n_epochs
        self.layers = layers
        self.phases = bool(phases)
        self.model_spec = model_spec
        self.plane_kwargs = plane_kwargs
        self.plane: InformationPlane | None = None
        self.run_dir: Path | None = None
        self._last_epoch = -1
        self._restored: dict[str, Any] | None = None
        self._writer: Any = None
        self._owns_writer = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, layers=self.layers)

    # ------------------------------------------------------------ fit
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.plane is not None:  # a second fit with the same callback: the first one is over
            self.plane.close()
        self.plane = InformationPlane(pl_module, self.probe_x, self.probe_y, layers=self.layers, **self.plane_kwargs)
        restored, self._restored = self._restored, None
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if restored is not None:
            self.plane.load_state_dict(restored["plane"])
            self._last_epoch = restored["last_epoch"]
            self.run_dir = Path(restored["run_dir"]) if restored["run_dir"] else None
        else:
            self._last_epoch = -1
            self.run_dir = Path(log_dir) if log_dir else None
        if trainer.is_global_zero:
            if self.run_dir is None:
                raise ValueError("InformationPlaneCallback: the trainer has no log directory; give it a logger "
                                 "or default_root_dir")
            try:
                rd = self.plane.record_to(self.run_dir, writer=self._open_writer(trainer, restored is not None),
                                          phases=self.phases)
            except RunDirError as e:
                raise RunDirError(f"{e} (with Lightning: resume with trainer.fit(..., ckpt_path=...), or give the "
                                  "logger another version)") from None
            if restored is None:
                self._describe_run(rd, pl_module)
        self._measure_if_due(trainer, trainer.current_epoch)  # epoch 0 (or a resumed epoch not yet measured)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure_if_due(trainer, trainer.current_epoch + 1)

    def _measure_if_due(self, trainer: pl.Trainer, epoch: int) -> None:
        # The same decision on every rank: under DDP the probe pass is collective.
        if self.plane is not None and epoch % self.every_n_epochs == 0 and epoch > self._last_epoch:
            self.plane.measure_async(epoch, step=trainer.global_step)
            self._last_epoch = epoch

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, completed=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer, pl_module, completed=False)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, completed: bool) -> None:
        """Flush and close; after a completed fit also the final phase events and the export checkpoint."""
        plane, self.plane = self.plane, None
        if plane is None:
            return
        try:
            if completed and trainer.is_global_zero:
                plane.finish_phases() if self.phases else plane.flush()
                RunDir(self.run_dir).save_checkpoint(
                    {"epoch": int(trainer.current_epoch), "model": pl_module.state_dict(), "framework": "lightning"})
        finally:
            try:
                plane.close()  # what was measured before an exception is recorded
            finally:
                if self._writer is not None:
                    self._writer.close() if self._owns_writer else self._writer.flush()
                self._writer, self._owns_writer = None, False

    # ------------------------------------------------------------ where it writes
    def _open_writer(self, trainer: pl.Trainer, resumed: bool) -> Any:
        """The TensorBoardLogger's SummaryWriter, or one of ours where the logger writes elsewhere."""
        logger = trainer.logger
        same_dir = isinstance(logger, TensorBoardLogger) and Path(logger.log_dir).resolve() == self.run_dir.resolve()
        if same_dir:
            self._writer, self._owns_writer = logger.experiment, False
        else:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.plane.history[-1].epoch + 1 if resumed and self.plane.history else 0
            self._writer, self._owns_writer = SummaryWriter(str(self.run_dir), purge_step=purge), True
        return self._writer

    def _describe_run(self, rd: RunDir, pl_module: pl.LightningModule) -> None:
        """config.json, probe.npz and (without a model_spec) model.pt: what `ib-brevitas export` rebuilds."""
        import brevitas

        from ib_brevitas import __version__

        cls = type(pl_module)
        config = {
            "framework": "lightning",
            "lightning_module": f"{cls.__module__}:{cls.__qualname__}",
            "every_n_epochs": self.every_n_epochs,
            "layers": list(self.plane.layer_names),
            "probe_description": f"{self.plane.n_samples} samples given to InformationPlaneCallback",
            "versions": {"ib_brevitas": __version__, "torch": torch.__version__, "brevitas": brevitas.__version__,
                         "lightning": pl.__version__},
        }
        spec = self.model_spec if self.model_spec is not None else _hparams_spec(pl_module)
        if spec is not None:
            config["model"] = spec
        else:
            try:
                rd.save_model(pl_module)
            except Exception as e:  # noqa: BLE001 - an unpicklable module must not stop training
                warnings.warn(f"InformationPlaneCallback: {cls.__qualname__} has no saved hyperparameters and "
                              f"cannot be pickled into {rd.model_path} ({type(e).__name__}); call "
                              "self.save_hyperparameters() in its __init__ or pass model_spec=factory_spec(...) so "
                              "that `ib-brevitas export` can rebuild it", RuntimeWarning)
        rd.save_probe(_numpy(self.probe_x), _numpy(self.probe_y))
        rd.write_config(config)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.plane is None:
            return dict(self._restored) if self._restored is not None else {}
        state = {"version": _STATE_VERSION, "plane": self.plane.state_dict(), "last_epoch": self._last_epoch,
                 "run_dir": None if self.run_dir is None else str(self.run_dir)}
        if self._writer is not None:  # records up to here are on disk before the checkpoint says so
            self._writer.flush()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:  # a checkpoint saved before training started
            return
        if state_dict.get("version") != _STATE_VERSION:
            raise ValueError(f"InformationPlaneCallback: checkpoint state of version {state_dict.get('version')!r}, "
                             f"this library reads version {_STATE_VERSION}; resume with the version that wrote it")
        self._restored = state_dict
