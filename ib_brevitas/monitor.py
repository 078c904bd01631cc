"""`InformationPlane`: measure exact per-layer MI of a Brevitas model while it trains.

One measurement is one hooked forward pass over the probe set in eval mode:
hooks on the integer-producing proxies pack each batch's `QuantTensor.int()`
codes into a per-layer store, then the pure functions in `functional` count
them. The monitor only gathers codes; it never computes MI itself, and it
leaves no trace on training (see `state.observation`).

`measure_async` takes the probe pass now and leaves counting, history and sinks
to one background thread (in call order), so on a machine with a spare core a
training loop only waits for the probe pass.

A model with a faster exact way to its codes (the SYN net's
`fastpath.SynFastPath.codes`) can hand it over as `codes_fn`; the monitor keeps
checking it against the hooked pass and records hooked codes whenever the two
would differ, so records never depend on trusting it.
"""

from __future__ import annotations

import collections
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor

from ib_brevitas.codes import PackedCodes
from ib_brevitas.functional import as_code_rows, information_plane_point, unique_rows
from ib_brevitas.layers import forward_with_proxy_hooks, select_layers
from ib_brevitas.files import append_jsonl
from ib_brevitas.records import LayerMI

Sink = Callable[[list[LayerMI]], None]
CodesFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

# Codes are read from at most this many activation values at a time, so the
# float temporaries of QuantTensor.int() stay small next to the batch itself.
_CHUNK_VALUES = 1 << 20

# measure_async: at most this many measurements wait for counting; a further
# call first waits for the oldest, so a slow count cannot pile up codes in memory.
_MAX_PENDING = 2


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
    codes_fn: optional faster source of the very same codes: called under
        no_grad with a batch of probe inputs, it returns {layer name: integer
        codes of shape (B, ...)} for every selected layer, exactly as
        `QuantTensor.int()` gives them in eval mode, and changes no state (e.g.
        `SynFastPath(model).codes`). The first probe pass and every
        `verify_every`-th one after it also run the hooked Brevitas pass and
        compare: if the codes differ in any layer, that pass records the hooked
        codes, a RuntimeWarning names the layer, and `codes_fn` is dropped.
    verify_every: probe passes between two such checks of `codes_fn`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Any,
        labels: Any,
        layers: Any = "auto",
        batch_size: int = 1024,
        device: Any = None,
        codes_fn: CodesFn | None = None,
        verify_every: int = 100,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if verify_every < 1:
            raise ValueError(f"verify_every must be >= 1, got {verify_every}")
        if codes_fn is not None and not callable(codes_fn):
            raise TypeError("codes_fn must be callable: inputs batch -> {layer name: integer codes}")
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
        self.codes_fn = codes_fn
        self.verify_every = verify_every
        self._passes = 0
        self._layout: dict[str, tuple[int, int, bool]] = {}  # name -> (width, bit width, signed)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future] = collections.deque()
        self._failed: BaseException | None = None

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
        """One probe pass over the probe set: packed codes per layer.

        The hooked Brevitas pass, or `codes_fn` once it has been checked
        against that pass (see the class docstring).
        """
        return self._probe()()

    def _probe(self) -> Callable[[], dict[str, PackedCodes]]:
        """Run the probe pass now; return what packs its codes (done already by the hooked pass)."""
        checking = self.codes_fn is not None and self._passes % self.verify_every == 0
        self._passes += 1
        if self.codes_fn is not None and not checking:
            batches = self._codes_fn_batches()
            return lambda: self._pack(batches)
        stores = self._collect_hooked()
        self._layout = {name: (s.width, s.bit_width, s.signed) for name, s in stores.items()}
        if checking:
            self._check_codes_fn(stores)
        return lambda: stores

    def _collect_hooked(self) -> dict[str, PackedCodes]:
        """One hooked forward pass of the model over the probe set."""
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

        batches = (self.inputs[s : s + self.batch_size].to(self.device) for s in range(0, n, self.batch_size))
        forward_with_proxy_hooks(self.model, self._modules, hook_for, batches)
        missing = [name for name in self.layer_names if name not in stores]
        if missing:
            raise ValueError(f"layers {missing} produced no codes during the probe pass")
        return self._complete(stores)

    def _complete(self, stores: dict[str, PackedCodes]) -> dict[str, PackedCodes]:
        n = self.n_samples
        for name, store in stores.items():
            if store.filled != n:
                raise ValueError(
                    f"layer {name!r} produced {store.filled} code rows for {n} samples; a layer "
                    "called more or less than once per sample cannot be measured"
                )
        return {name: stores[name] for name in self.layer_names}

    def _codes_fn_batches(self) -> list[Mapping[str, torch.Tensor]]:
        """The probe set through `codes_fn`: its raw output per batch."""
        with torch.no_grad():
            return [
                self.codes_fn(self.inputs[start : start + self.batch_size].to(self.device))
                for start in range(0, self.n_samples, self.batch_size)
            ]

    def _pack(self, batches: list[Mapping[str, torch.Tensor]]) -> dict[str, PackedCodes]:
        """Pack `codes_fn` output like the hooked pass packs its codes (same layout)."""
        stores = {name: PackedCodes(name, self.n_samples, *self._layout[name]) for name in self.layer_names}
        for codes in batches:
            missing = [name for name in self.layer_names if name not in codes]
            if missing:
                raise ValueError(
                    f"codes_fn returned no codes for the layers {missing}; it must return "
                    f"{{name: codes}} for every measured layer ({self.layer_names})"
                )
            for name, store in stores.items():
                c = codes[name]
                if torch.is_floating_point(c) or torch.is_complex(c):
                    raise TypeError(f"codes_fn returned {c.dtype} codes for layer {name!r}; return integer codes")
                store.append(c)
        return self._complete(stores)

    def _check_codes_fn(self, hooked: dict[str, PackedCodes]) -> None:
        """Compare `codes_fn` with the hooked pass; drop it (with a warning) if any layer differs."""
        try:
            mine = self._pack(self._codes_fn_batches())
            differ = {
                name: int((mine[name].rows != store.rows).any(axis=1).sum())
                for name, store in hooked.items()
                if not np.array_equal(mine[name].rows, store.rows)
            }
            problem = ", ".join(f"{name!r} ({k} of {self.n_samples} samples)" for name, k in differ.items())
        except (ValueError, TypeError) as e:
            problem = str(e)
        if problem:
            warnings.warn(
                f"codes_fn disagrees with the hooked Brevitas pass: {problem}. This measurement and all "
                "later ones use the hooked pass (exact, slower); fix codes_fn or leave it unset.",
                RuntimeWarning,
                stacklevel=3,
            )
            self.codes_fn = None

    def collect_codes(self) -> dict[str, np.ndarray]:
        """Integer codes per layer, (N, width) int64, exactly as `QuantTensor.int()` gave them."""
        return {name: store.unpack() for name, store in self.collect().items()}

    def measure(self, epoch: int, step: int | None = None) -> list[LayerMI]:
        """Measure every layer now; append to `history`, pass to the sinks, return the records."""
        self.flush()
        return self._record(self._probe(), epoch, step)

    def measure_async(self, epoch: int, step: int | None = None) -> Future:
        """Like `measure`, but only the probe pass runs now; returns a Future of the records.

        The codes are taken from the model as it is at this call, so training
        may go on at once; counting, `history` and the sinks follow on one
        background thread in call order. Call `flush()` before relying on
        `history` or the sinks' files (e.g. before a checkpoint). After a
        failure no later measurement reaches the sinks (no gaps), and the
        error is raised by the next call here or by `flush()`.
        """
        self._reap(wait=len(self._pending) >= _MAX_PENDING)
        pack = self._probe()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-brevitas-mi")
        future = self._executor.submit(self._record, pack, epoch, step, True)
        self._pending.append(future)
        return future

    def flush(self) -> None:
        """Wait until every `measure_async` so far is counted and in the sinks; raise its error if one failed."""
        self._reap(wait=True, every=True)

    def _reap(self, wait: bool, every: bool = False) -> None:
        """Drop finished measurements (raising the first failure); wait for the oldest or all."""
        while self._pending and (self._pending[0].done() or wait):
            self._pending.popleft().result()
            if not every:
                wait = False

    def _record(
        self, pack: Callable[[], dict[str, PackedCodes]], epoch: int, step: int | None, background: bool = False
    ) -> list[LayerMI]:
        """Pack and count one probe pass: records into `history` and the sinks."""
        if self._failed is not None:
            raise RuntimeError(
                f"a background measurement failed earlier ({self._failed!r}), so later ones would leave a "
                "gap in the records; fix the cause and start a new InformationPlane"
            ) from self._failed
        try:
            records = []
            for index, (name, store) in enumerate(pack().items()):
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
        except BaseException as e:
            if background:
                self._failed = e
            raise
        return records
