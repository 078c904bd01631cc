"""What `ib-brevitas export` needs from a run directory: the trained model and the probe set.

Any run the library writes: the model comes from `RunDir.build_model()` (the
factory named in config.json's "model" entry, or a pickled model.pt) plus the
checkpoint's weights, the probe set from `RunDir.probe_set()` (probe.npz, or
the factory in config.json's "probe" entry). Run directories written before
config.json named its factories (SYN runs: dataset, activation, bits) are
rebuilt by `legacy_syn`, which alone imports the paper's code, and only then.
Every problem with a file is a `RunDirError` that names it and says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ib_brevitas.rundir import RunDir, RunDirError


@dataclass
class ExportRun:
    """A run's model (weights loaded, eval mode) and probe set, ready to export and verify."""

    run_dir: RunDir
    model: Any  # torch.nn.Module
    inputs: Any  # torch.Tensor (N, ...)
    labels: Any  # torch.Tensor (N,)
    epoch: int
    checkpoint: Path


def legacy_syn(config: dict[str, Any]) -> tuple[Any, Any] | None:
    """(model factory, probe factory) for an old SYN run's config, else None."""
    if config.get("dataset", "syn") != "syn" or "activation" not in config or "bits" not in config:
        return None
    from ib_brevitas.experiments.data import (
        syn_dataset,  # lazily: the library does not need the paper
    )
    from ib_brevitas.experiments.models import syn_mlp

    return (lambda: syn_mlp(config["activation"], int(config["bits"]))), syn_dataset


def build_model(rd: RunDir, config: dict[str, Any]) -> Any:
    """A fresh model of the run (factory, model.pt, or an old SYN config)."""
    legacy = None if config.get("model") is not None or rd.model_path.exists() else legacy_syn(config)
    source = rd.config_path if config.get("model") is not None or legacy else rd.model_path
    try:
        return legacy[0]() if legacy else rd.build_model()
    except RunDirError:
        raise
    except Exception as e:  # noqa: BLE001 - a factory refusing its kwargs, a damaged model.pt, ...
        raise RunDirError(f"{source}: rebuilding the run's model failed ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:160]}); restore the file or fix its entry") from None


def probe_set(rd: RunDir, config: dict[str, Any]) -> tuple[Any, Any]:
    """(inputs, labels) as tensors: float inputs, integer labels, same length."""
    import numpy as np
    import torch

    legacy = None
    if not rd.probe_path.exists() and config.get("probe") is None:
        legacy = legacy_syn(config)
    source = rd.probe_path if rd.probe_path.exists() else rd.config_path
    try:
        x, y = legacy[1]() if legacy else rd.probe_set()
    except RunDirError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged probe.npz (BadZipFile, KeyError, ...), a failing factory
        raise RunDirError(f"{source}: cannot read the run's probe set ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                          "restore it, or record it again with RunDir.save_probe(inputs, labels)") from None
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise RunDirError(f"{source}: the probe set has inputs {tuple(x.shape)} and labels {tuple(y.shape)}; "
                          "it needs N >= 1 inputs and N labels; record it again with RunDir.save_probe")
    return x, y


def load_weights(model: Any, state: dict[str, Any], path: Path) -> None:
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise RunDirError(f"{path} holds no 'model' state dict; pass the checkpoint of this run (--checkpoint FILE)")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path} does not fit the run's model ({' '.join(str(e).split())[:240]}); "
                          "pass the checkpoint of this run (--checkpoint FILE)") from None


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> ExportRun:
    """The run's model at its checkpoint, and its probe set; RunDirError naming the file on any problem."""
    from ib_brevitas.layers import find_quant_layers  # torch: only when a run is loaded

    rd = RunDir(run_dir)
    if not rd.path.is_dir():
        raise RunDirError(f"run directory {rd.path} does not exist; pass a directory written by ib-brevitas")
    config = rd.read_config()
    path = Path(checkpoint) if checkpoint is not None else rd.checkpoint_path
    state = rd.load_checkpoint(path)
    if state is None:
        raise RunDirError(f"checkpoint {path} does not exist: train the run first or pass --checkpoint FILE")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise RunDirError(f"{path}: its epoch {epoch!r} is not a whole number >= 0; restore the checkpoint")
    model = build_model(rd, config)
    load_weights(model, state, path)
    model.eval()
    if not find_quant_layers(model):
        raise RunDirError(f"the model of {rd.path} ({type(model).__name__}) has no quantized layer (a float network?), "
                          "so there are no integer codes to export and verify; export a quantized run")
    x, y = probe_set(rd, config)
    return ExportRun(rd, model, x, y, epoch, path)
