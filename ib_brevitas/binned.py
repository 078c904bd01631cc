"""Binning estimates of any model's per-layer MI, from its float activations.

The exact monitor (`InformationPlane`) counts integer codes and refuses float
layers; this module is the other path, kept apart: `BinnedPlane` hooks the
outputs of the chosen modules (a float network's activations, or the float
values of a quantized network's layers: their quantizer's output, codes x scale), bins them with `ib_brevitas.binning`
estimators and returns `LayerMI` records whose `estimator` field is the
estimator's label (e.g. "binning-uniform-30-global"), never "exact". Every pass
runs under `state.observation`, so measuring leaves no trace on training.

Global bounds are known only after a run (the paper's post-hoc binning):
`measure_snapshots` takes the model states saved at each measurement, finds the
range over all of them, then measures each.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ib_brevitas import binning
from ib_brevitas.binning import BinningEstimator
from ib_brevitas.functional import as_code_rows, unique_rows
from ib_brevitas.layers import find_quant_layers, quant_proxy
from ib_brevitas.records import LayerMI
from ib_brevitas.state import observation

FLOAT_BIT_WIDTH = 32  # `bit_width` of a record binned from float (not quantized) values
_BATCH_VALUES = 1 << 24  # float activations held per probe batch, summed over the layers


def _value(out: Any) -> tuple[torch.Tensor, int]:
    """A module output's float values and their bit width (a QuantTensor's, else 32)."""
    if hasattr(out, "value") and hasattr(out, "bit_width"):  # a Brevitas QuantTensor
        return out.value, int(out.bit_width)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"its output is a {type(out).__name__}, not a tensor")
    return out, FLOAT_BIT_WIDTH


def default_layers(model: torch.nn.Module) -> list[str]:
    """What "auto" bins: the model's integer points (see `find_quant_layers`), else its `layer_names`."""
    found = list(find_quant_layers(model))
    if found:
        return found
    names = getattr(model, "layer_names", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    raise ValueError(
        f"{type(model).__name__} has no quantized layer and no `layer_names`: pass layers=[...], the "
        "names of the modules (as in model.named_modules()) whose outputs to bin"
    )


class BinnedPlane:
    """Binning estimates of I(X;T) and I(T;Y) for the outputs of `layers` on a fixed probe set.

    estimators: `BinningEstimator`s or their labels (default: the paper's
    uniform 30/100/256 bins with global bounds). Layers are ordered as the
    forward pass reaches them; each must output one tensor row per sample.
    """

    def __init__(self, model: torch.nn.Module, inputs: Any, labels: Any,
                 estimators: Sequence[BinningEstimator | str] = binning.PAPER_ESTIMATORS,
                 layers: Any = "auto", batch_size: int | None = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.inputs = torch.as_tensor(inputs)
        if self.inputs.ndim == 0 or self.inputs.shape[0] == 0:
            raise ValueError("the probe set is empty: pass inputs of shape (N, ...) with N >= 1")
        self.labels = as_code_rows(labels, "labels")
        if self.labels.shape[0] != self.inputs.shape[0]:
            raise ValueError(f"{self.labels.shape[0]} labels for {self.inputs.shape[0]} probe inputs: pass one per sample")
        self.estimators = [binning.parse_estimator(e) if isinstance(e, str) else e for e in estimators]
        if not self.estimators or not all(isinstance(e, BinningEstimator) for e in self.estimators):
            raise ValueError("estimators must be a non-empty list of BinningEstimator or labels "
                             "such as 'binning-uniform-30-global'")
        names = default_layers(model) if isinstance(layers, str) and layers == "auto" else (
            [layers] if isinstance(layers, str) else list(layers))
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules or not n]
        if missing or not names:
            raise ValueError(f"the model has no module named {missing or names!r}; pass names from model.named_modules()")
        self._modules = {n: modules[n] for n in names}
        labels_seen = [e.label for e in self.estimators]
        if len(set(labels_seen)) != len(labels_seen):
            raise ValueError(f"estimators repeat a label: {labels_seen}; give each binning once")
        self.batch_size = 1
        self.bit_widths: dict[str, int] = {}  # per layer, as the latest pass found them
        first = self._gather(self.inputs[:1])
        self.layer_names = list(first)
        per_sample = max(1, sum(a.shape[1] for a in first.values()))
        self.batch_size = batch_size or int(min(self.inputs.shape[0], max(1, _BATCH_VALUES // per_sample)))
        self._label_groups = unique_rows(self.labels)

    def _gather(self, inputs: torch.Tensor) -> dict[str, np.ndarray]:
        """One observed forward over `inputs`: float32 activations (N, width) per layer, in forward order."""
        parts: dict[str, list[np.ndarray]] = {}
        bits: dict[str, int] = {}

        def hook_for(name):
            def hook(_module, _inputs, out):
                try:
                    value, bit_width = _value(out)
                except TypeError as e:
                    raise ValueError(f"layer {name!r}: {e}; bin a module that returns a tensor") from None
                parts.setdefault(name, []).append(value.detach().float().reshape(value.shape[0], -1).cpu().numpy())
                bits[name] = bit_width
            return hook

        # A quantized layer is read where the exact monitor reads it, at its integer proxy (value and bit width).
        handles = [(quant_proxy(m) or m).register_forward_hook(hook_for(n)) for n, m in self._modules.items()]
        device = next(self.model.parameters(), torch.empty(0)).device
        try:
            with observation(self.model):
                for s in range(0, inputs.shape[0], self.batch_size):
                    self.model(inputs[s:s + self.batch_size].to(device))
        finally:
            for h in handles:
                h.remove()
        absent = [n for n in self._modules if n not in parts]
        if absent:
            raise ValueError(f"layers {absent} are never reached by the model's forward pass; bin other layers")
        out = {n: np.concatenate(p) for n, p in parts.items()}
        for n, a in out.items():
            if a.shape[0] != inputs.shape[0]:
                raise ValueError(f"layer {n!r} gave {a.shape[0]} rows for {inputs.shape[0]} samples; "
                                 "bin a module called once per sample")
        self.bit_widths = bits
        return out

    def activations(self) -> dict[str, np.ndarray]:
        """The float activations of every layer over the probe set, now (float32, (N, width))."""
        return self._gather(self.inputs)

    def value_range(self, activations: dict[str, np.ndarray] | None = None) -> tuple[float, float]:
        """(min, max) over every layer now: one measurement's part of the run's global range."""
        acts = self.activations() if activations is None else activations
        return binning.global_range(binning.value_range(a, f"layer {n!r}") for n, a in acts.items())

    def measure(self, epoch: int, step: int | None = None, global_range: tuple[float, float] | None = None,
                activations: dict[str, np.ndarray] | None = None) -> list[LayerMI]:
        """One record per estimator and layer (estimator-major, layers in forward order).

        `global_range` is required when an estimator has global bounds (see
        `measure_snapshots` for the post-hoc run).
        """
        acts = self.activations() if activations is None else activations
        absent = [n for n in self.layer_names if n not in acts]
        if absent:
            raise ValueError(f"activations lack layers {absent}; pass what activations() returns")
        by_layer = {}
        for index, name in enumerate(self.layer_names):
            rows = binning.as_activation_rows(acts[name], f"layer {name!r}")
            points = binning.plane_points(rows, self.labels, self.estimators, global_range,
                                          label_groups=self._label_groups, name=f"layer {name!r}")
            for est, point in zip(self.estimators, points):
                by_layer[est.label, name] = LayerMI(
                    layer=name, epoch=epoch, step=step, i_xt=point.h_t, i_ty=point.i_ty, h_t=point.h_t,
                    n_distinct=point.n_distinct, n_samples=point.n_samples,
                    bit_width=self.bit_widths.get(name, FLOAT_BIT_WIDTH), width=rows.shape[1],
                    layer_index=index, h_y=point.h_y, estimator=est.label,
                    saturated=point.n_distinct == point.n_samples,
                )
        return [by_layer[e.label, n] for e in self.estimators for n in self.layer_names]


def measure_snapshots(plane: BinnedPlane, snapshots: Iterable[tuple[int, int | None, dict]]) -> list[LayerMI]:
    """Post-hoc binning of a run: every (epoch, step, state_dict) snapshot, global bounds over all of them.

    Two passes over the snapshots (range, then measure); the model's own state
    is restored afterwards.
    """
    snapshots = list(snapshots)
    if not snapshots:
        raise ValueError("no snapshots to measure: save the model's state_dict at each measurement")
    model = plane.model
    saved = copy.deepcopy(model.state_dict())
    try:
        ranges = []
        for _, _, state in snapshots:
            model.load_state_dict(state)
            ranges.append(plane.value_range())
        run_range = binning.global_range(ranges)
        records = []
        for epoch, step, state in snapshots:
            model.load_state_dict(state)
            records.extend(plane.measure(epoch, step, global_range=run_range))
        return records
    finally:
        model.load_state_dict(saved)
