"""`InformationPlane`: measure exact per-layer MI of a Brevitas model while it trains.

One measurement is one hooked forward pass over the probe set in eval mode:
hooks on the integer-producing proxies pack each batch's `QuantTensor.int()`
codes into a per-layer store, then the pure functions in `functional` count
them. The monitor only gathers codes; it never computes MI itself, and it
leaves no trace on training (see `state.observation`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor

from ib_brevitas.codes import PackedCodes
from ib_brevitas.functional import as_code_rows, information_plane_point, unique_rows
from ib_brevitas.layers import quant_proxy, select_layers
from ib_brevitas.records import LayerMI, append_jsonl
from ib_brevitas.state import observation

Sink = Callable[[list[LayerMI]], None]

# Codes are read from at most this many activation values at a time, so the
# float temporaries of QuantTensor.int() stay small next to the batch itself.
_CHUNK_VALUES = 1 << 20


def _sample_chunks(out: IntQuantTensor):
    """Split an IntQuantTensor along the batch dimension (scale/zero point follow when batched)."""
    batch = out.value.shape[0]
    step = max(1, _CHUNK_VALUES // max(1, out.value[0].numel()))
    if step >= batch:
        yield out
        return

    def part(t, s):
        batched = t.dim() == out.value.dim() and t.shape[0] == batch and batch > 1
        return t[s : s + step] if batched else t

    for s in range(0, batch, step):
        yield IntQuantTensor(
            out.value[s : s + step], part(out.scale, s), part(out.zero_point, s),
            out.bit_width, out.signed, out.training,
        )


def _as_inputs(inputs: Any) -> torch.Tensor:
    x = torch.as_tensor(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("the probe set is empty: pass inputs of shape (N, ...) with N >= 1")
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("the probe inputs contain NaN or inf; clean them before measuring")
    return x


def _as_labels(labels: Any, n: int) -> np.ndarray:
    y = as_code_rows(labels, "labels")
    if y.shape[0] != n:
        raise ValueError(
            f"labels have {y.shape[0]} rows but inputs have {n}: pass exactly one label per "
            "probe sample, in the same order"
        )
    return y


class JsonlSink:
    """Append each measurement's records to a JSON-lines file (flushed and fsync'ed)."""

    def __init__(self, path):
        self.path = path

    def __call__(self, records: list[LayerMI]) -> None:
        append_jsonl(self.path, [r.to_dict() for r in records])


class InformationPlane:
    """Exact I(X;T) and I(T;Y) of every selected layer on a fixed probe set.

    Parameters
    ----------
    model: a Brevitas model (any nn.Module with quant activations).
    inputs, labels: the probe set (N, ...) and its N integer labels; X is
        uniform over these N samples.
    layers: "auto" (every integer point, see `find_quant_layers`) or names.
    batch_size: samples per forward pass of the probe set.
    device: where the probe batches go; default: the model's device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Any,
        labels: Any,
        layers: Any = "auto",
        batch_size: int = 1024,
        device: Any = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.inputs = _as_inputs(inputs)
        self.labels = _as_labels(labels, self.inputs.shape[0])
        self.batch_size = batch_size
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        example = self.inputs[:2].to(self.device)
        self._modules = select_layers(model, layers, example_input=example)
        self.layer_names = list(self._modules)
        self.history: list[LayerMI] = []
        self._sinks: list[Sink] = []
        self._label_groups = unique_rows(self.labels)

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])

    def add_sink(self, sink: Sink) -> None:
        """Call `sink(records)` after every measurement (e.g. `JsonlSink(path)`)."""
        self._sinks.append(sink)

    def log_to(self, writer) -> None:
        """Log every measurement to a SummaryWriter the user already has.

        Writes the scalars `ib/I_XT/<layer>` and `ib/I_TY/<layer>` and the
        information-plane plugin's data, at global step = epoch.
        """
        from ib_brevitas.tensorboard.summary import TensorBoardSink

        sink = TensorBoardSink(writer=writer)
        self.add_sink(lambda records: sink.write(records, step=records[0].epoch))

    def collect(self) -> dict[str, PackedCodes]:
        """One hooked forward pass over the probe set: packed codes per layer."""
        stores: dict[str, PackedCodes] = {}
        n = self.n_samples

        def hook_for(name: str):
            def hook(_module, _inputs, out):
                if not isinstance(out, IntQuantTensor):
                    raise ValueError(
                        f"layer {name!r}: its quantizer returned {type(out).__name__}, not an "
                        "IntQuantTensor, so it has no integer codes to measure"
                    )
                bit_width = float(out.bit_width)
                if bit_width != int(bit_width):
                    raise ValueError(f"layer {name!r}: bit width {bit_width} is not an integer")
                store = stores.get(name)
                if store is None:
                    width = int(out.value[0].numel())
                    store = stores[name] = PackedCodes(name, n, width, int(bit_width), bool(out.signed))
                elif int(bit_width) != store.bit_width:
                    raise ValueError(f"layer {name!r}: bit width changed within one probe pass")
                for chunk in _sample_chunks(out):
                    if not torch.isfinite(chunk.value).all():
                        raise ValueError(
                            f"layer {name!r}: NaN or inf reached this quantized layer; the model "
                            "has diverged (check the learning rate and the inputs)"
                        )
                    store.append(chunk.int())

            return hook

        handles = [
            quant_proxy(m).register_forward_hook(hook_for(name)) for name, m in self._modules.items()
        ]
        try:
            with observation(self.model):
                for start in range(0, n, self.batch_size):
                    self.model(self.inputs[start : start + self.batch_size].to(self.device))
        finally:
            for h in handles:
                h.remove()
        missing = [name for name in self.layer_names if name not in stores]
        if missing:
            raise ValueError(f"layers {missing} produced no codes during the probe pass")
        for name, store in stores.items():
            if store.filled != n:
                raise ValueError(
                    f"layer {name!r} produced {store.filled} code rows for {n} samples; a layer "
                    "called more or less than once per sample cannot be measured"
                )
        return {name: stores[name] for name in self.layer_names}

    def collect_codes(self) -> dict[str, np.ndarray]:
        """Integer codes per layer, (N, width) int64, exactly as `QuantTensor.int()` gave them."""
        return {name: store.unpack() for name, store in self.collect().items()}

    def measure(self, epoch: int, step: int | None = None) -> list[LayerMI]:
        """Measure every layer now; append to `history`, pass to the sinks, return the records."""
        stores = self.collect()
        records = []
        for index, (name, store) in enumerate(stores.items()):
            point = information_plane_point(store.rows, self.labels, label_groups=self._label_groups)
            records.append(
                LayerMI(
                    layer=name,
                    epoch=int(epoch),
                    step=None if step is None else int(step),
                    i_xt=point.h_t,
                    i_ty=point.i_ty,
                    h_t=point.h_t,
                    n_distinct=point.n_distinct,
                    n_samples=point.n_samples,
                    bit_width=store.bit_width,
                    width=store.width,
                    layer_index=index,
                    h_y=point.h_y,
                )
            )
        self.history.extend(records)
        for sink in self._sinks:
            sink(records)
        return records
