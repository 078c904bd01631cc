"""`InformationPlane`: measure exact per-layer MI of a Brevitas model while it trains.

One measurement is one probe pass (`probe`: hooks on the integer-producing
proxies read `QuantTensor.int()` in eval mode, leaving no trace on training)
whose packed codes the pure functions in `functional` count into `LayerMI`
records, which go to the sinks (`sinks`). The monitor only gathers codes.

`measure_async` takes the probe pass now and leaves counting, history and sinks
to one background thread (in call order). `with InformationPlane(...) as
plane:` (or `close()`) flushes and stops that thread, also on an exception;
`state_dict()` / `load_state_dict()` resume it in any loop; `record_to(dir)` is
the one call that writes a run directory's records, phase events and
TensorBoard data as `ib-brevitas train` does. Under `torch.distributed` each
rank probes its slice of the probe set and rank zero counts and writes
(`distributed`); the other ranks' `measure` returns [].

A `codes_fn` (e.g. the fast engine's) is trusted only as far as it is checked:
the first probe pass and every `verify_every`-th one run the hooked pass too and
compare every code; a difference drops it for good, with a warning, and that
measurement records the hooked codes. Between two checks the records are what
`codes_fn` returned (range-checked against each layer's bit width), so a
`codes_fn` that goes wrong after a check can affect at most `verify_every - 1`
measurements before it is caught.
"""

from __future__ import annotations

import collections
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch

from ib_brevitas import distributed, probe
from ib_brevitas.codes import PackedCodes
from ib_brevitas.functional import information_plane_point, unique_rows
from ib_brevitas.layers import select_layers
from ib_brevitas.records import LayerMI, record_from_dict
from ib_brevitas.sinks import JsonlSink, PhaseSink, Sink, as_sink, close_sink, tensorboard_sink

__all__ = ["InformationPlane", "JsonlSink"]

# measure_async: at most this many measurements wait for counting; a further
# call first waits for the oldest, so a slow count cannot pile up codes in memory.
_MAX_PENDING = 2
# Default probe batch: as many samples as keep the float activations of the
# measured layers (x 8 for Brevitas' temporaries) under this many bytes.
PROBE_BATCH_BYTES = 256 << 20
_STATE_VERSION = 1


class InformationPlane:
    """Exact I(X;T) and I(T;Y) of every selected layer on a fixed probe set.

    Parameters
    ----------
    model: a Brevitas model (any nn.Module with quant activations).
    inputs, labels: the probe set (N, ...) and its N integer labels; X is
        uniform over these N samples.
    layers: "auto" (every integer point, see `find_quant_layers`) or names.
    batch_size: samples per forward pass of the probe set; default: as many as
        keep the measured layers' float activations under `PROBE_BATCH_BYTES`
        (256 MiB), so a small model runs its probe set in one pass.
    device: where the probe batches go; default: the model's device.
    codes_fn: optional faster source of the very same codes: called under
        no_grad with a batch of probe inputs, it returns {layer name: integer
        codes of shape (B, ...)} for every selected layer, exactly as
        `QuantTensor.int()` gives them in eval mode, and changes no state.
        Checked against the hooked pass as the module docstring says.
    verify_every: probe passes between two such checks of `codes_fn`.
    scales_fn: optional faster source of the layers' eval-mode quantizer
        scales ({layer name: float}, e.g. the training engine's), used with
        `codes_fn` and checked on the same passes against the quantizers'
        own `scale()`; a difference drops it with a warning.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inputs: Any,
        labels: Any,
        layers: Any = "auto",
        batch_size: int | None = None,
        device: Any = None,
        codes_fn: probe.CodesFn | None = None,
        verify_every: int = 100,
        scales_fn: Callable[[], dict[str, float]] | None = None,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a Brevitas model), got {type(model).__name__}")
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):  # its forward would run collectives
            raise TypeError("pass the wrapped model (ddp_model.module), not the DistributedDataParallel wrapper")
        if layers is None or not isinstance(layers, (str, list, tuple)):
            raise TypeError(f"layers must be 'auto' or a list of module names, got {layers!r}")
        verify_every = probe.check_int("verify_every", verify_every, 1)
        if batch_size is not None:
            batch_size = probe.check_int("batch_size", batch_size, 1)
        if scales_fn is not None and not callable(scales_fn):
            raise TypeError("scales_fn must be callable: () -> {layer name: scale}")
        if codes_fn is not None and not callable(codes_fn):
            raise TypeError("codes_fn must be callable: inputs batch -> {layer name: integer codes}")
        self.model = model
        self.inputs = probe.as_inputs(inputs)
        self.labels = probe.as_labels(labels, self.inputs.shape[0])
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        example = self.inputs[:2].to(self.device)
        try:
            self._modules = select_layers(model, layers, example_input=example)
        except RuntimeError as e:  # e.g. a shape mismatch inside the model's forward
            first = str(e).splitlines()[0][:200]
            raise ValueError(
                f"the model cannot run the probe inputs of shape {tuple(self.inputs.shape)} ({first}); "
                "pass inputs shaped as the model expects"
            ) from None
        self.layer_names = list(self._modules)
        self.batch_size = batch_size or self._default_batch_size(example)
        self.history: list[LayerMI] = []
        self._sinks: list[Sink] = []
        self._phases: PhaseSink | None = None
        self._label_groups = unique_rows(self.labels)
        self.codes_fn = codes_fn
        self.scales_fn = scales_fn
        self.verify_every = verify_every
        self._passes = 0
        self._layout: probe.Layout = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future] = collections.deque()
        self._failed: BaseException | None = None
        self._closed = False

    def _default_batch_size(self, example: torch.Tensor) -> int:
        widths = [s.width for s in probe.hooked_codes(self.model, self._modules, example, 2, self.device).values()]
        per_sample = 4 * 8 * max(1, sum(widths))
        return int(min(self.n_samples, max(1, PROBE_BATCH_BYTES // per_sample)))

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])

    # ------------------------------------------------------------ sinks
    def add_sink(self, sink: Any) -> None:
        """Pass every measurement's records to `sink.write(records)` (or `sink(records)`)."""
        self._sinks.append(as_sink(sink))

    def log_to(self, writer: Any) -> None:
        """Log every measurement to a SummaryWriter the user already has (not closed by the plane).

        Writes the scalars `ib/I_XT/<layer>` and `ib/I_TY/<layer>` and the
        information-plane plugin's data, at global step = epoch.
        """
        self.add_sink(tensorboard_sink(writer))

    def record_to(self, run_dir: Any, writer: Any = None, phases: bool = True,
                  on_events: Callable[[list[Any]], Any] | None = None, sync: bool = True,
                  step_offset: int = 0, **thresholds: float) -> Any:
        """Write records to `run_dir`'s mi.jsonl (+ phase events, + `writer`'s TensorBoard data).

        The run directory is made to agree with this plane first: after
        `load_state_dict`, mi.jsonl and phases.jsonl are rewritten to exactly
        the restored history (what a crash wrote after the checkpoint goes);
        a fresh plane refuses a directory that already holds records.
        sync=False: mi.jsonl is flushed, not fsync'ed, per measurement (the
        caller fsyncs it, e.g. before each checkpoint). step_offset: the
        TensorBoard step is epoch + step_offset (K for a K-epoch prefit, whose
        epochs start at -K). Returns the `RunDir`.
        """
        from ib_brevitas.phases import PhaseTracker
        from ib_brevitas.rundir import RunDir, RunDirError

        rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        if not distributed.is_rank_zero():  # under torch.distributed only rank zero writes
            return rd
        rd.create()
        if not self.history and rd.read_records():
            raise RunDirError(
                f"{rd.records_path} already holds records: load this plane's state_dict from the run's "
                "checkpoint to resume it, or record to another directory"
            )
        last = self.history[-1].epoch if self.history else -1
        rd.truncate_records(last)
        if len(rd.read_records()) != len(self.history):  # a damaged log: the history is the truth
            from ib_brevitas.files import write_jsonl

            write_jsonl(rd.records_path, [r.to_dict() for r in self.history])
        self.add_sink(JsonlSink(rd.records_path, sync=sync))
        tb = tensorboard_sink(writer, step_offset) if writer is not None else None
        if tb is not None:
            self.add_sink(tb)
        if phases:
            tracker = PhaseTracker.from_records(self.history, **thresholds)
            rd.write_events(tracker.events)
            self._phases = PhaseSink(tracker, rd, tb, on_events)
            self.add_sink(self._phases)
        return rd

    @property
    def phase_tracker(self) -> Any:
        """The `PhaseTracker` fed by `record_to(..., phases=True)`, else None."""
        return None if self._phases is None else self._phases.tracker

    def finish_phases(self) -> dict[str, Any]:
        """End of training: flush, emit the final phase events, return the per-layer verdicts."""
        self.flush()
        if self._phases is None and not distributed.is_rank_zero():
            return {}
        if self._phases is None:
            raise RuntimeError("no phase tracking: call record_to(run_dir) (phases=True) first")
        epoch = self.history[-1].epoch if self.history else 0
        self._phases.finish(epoch)
        return self._phases.tracker.verdicts()

    # ------------------------------------------------------------ probe pass
    def collect(self) -> dict[str, PackedCodes]:
        """One probe pass over the probe set: packed codes per layer."""
        self._check_open()
        return self._probe()[0]()

    def collect_codes(self) -> dict[str, np.ndarray]:
        """Integer codes per layer, (N, width) int64, exactly as `QuantTensor.int()` gave them."""
        return {name: store.unpack() for name, store in self.collect().items()}

    def _probe(self) -> tuple[Callable[[], dict[str, PackedCodes]], dict[str, float | None]]:
        """Run the probe pass now; return what packs its codes, and the layers' scales now.

        Under a torch.distributed process group this rank runs only its slice
        and the codes are gathered to rank zero (`distributed`); other ranks pack {}.
        """
        # Also check when no hooked pass has given the layout yet (a plane resumed mid-cadence).
        checking = self.codes_fn is not None and (self._passes % self.verify_every == 0 or not self._layout)
        self._passes += 1
        scales = self._scales(checking)
        part = distributed.share(self.n_samples)
        if part is None:
            return self._local_pass(self.inputs, checking), scales
        inputs = self.inputs[part.start : part.stop]
        stores = distributed.gather_stores(lambda: self._local_pass(inputs, checking)(), part, self.layer_names,
                                           distributed.fingerprint(self.inputs, self.labels))
        return (lambda: stores), scales

    def _scales(self, checking: bool) -> dict[str, float | None]:
        scales, self.scales_fn = probe.checked_scales(self.model, self._modules, self.scales_fn,
                                                      use=self.codes_fn is not None and not checking)
        return scales

    def _local_pass(self, inputs: torch.Tensor, checking: bool) -> Callable[[], dict[str, PackedCodes]]:
        if self.codes_fn is not None and not checking:
            raw = probe.codes_fn_batches(self.codes_fn, inputs, self.batch_size, self.device)
            return lambda: probe.pack_batches(raw, self._layout, self.layer_names, inputs.shape[0])
        stores = probe.hooked_codes(self.model, self._modules, inputs, self.batch_size, self.device)
        self._layout = {name: (s.width, s.bit_width, s.signed) for name, s in stores.items()}
        if checking:
            self._check_codes_fn(stores, inputs)
        return lambda: stores

    def _check_codes_fn(self, hooked: dict[str, PackedCodes], inputs: torch.Tensor) -> None:
        """Compare `codes_fn` with the hooked pass; drop it (with a warning) if any layer differs."""
        try:
            raw = probe.codes_fn_batches(self.codes_fn, inputs, self.batch_size, self.device)
            problem = probe.compare(probe.pack_batches(raw, self._layout, self.layer_names, inputs.shape[0]), hooked)
        except (ValueError, TypeError) as e:
            problem = str(e)
        if problem:
            warnings.warn(
                f"codes_fn disagrees with the hooked Brevitas pass: {problem}. This measurement and all "
                "later ones use the hooked pass (exact, slower); fix codes_fn or leave it unset.",
                RuntimeWarning,
                stacklevel=5,
            )
            self.codes_fn = None

    # ------------------------------------------------------------ measuring
    def measure(self, epoch: int, step: int | None = None) -> list[LayerMI]:
        """Measure every layer now; append to `history`, pass to the sinks, return the records."""
        epoch, step = self._check_call(epoch, step)
        self.flush()
        return self._record(*self._probe(), epoch, step)

    def measure_async(self, epoch: int, step: int | None = None) -> Future:
        """Like `measure`, but only the probe pass runs now; returns a Future of the records.

        The codes are taken from the model as it is at this call, so training
        may go on at once; counting, `history` and the sinks follow on one
        background thread in call order. Call `flush()` before relying on
        `history` or the sinks' files (e.g. before a checkpoint). After a
        failure no later measurement reaches the sinks (no gaps), and the
        error is raised by the next call here or by `flush()`.
        """
        epoch, step = self._check_call(epoch, step)
        self._reap(wait=len(self._pending) >= _MAX_PENDING)
        pack, scales = self._probe()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ib-brevitas-mi")
        future = self._executor.submit(self._record, pack, scales, epoch, step, True)
        self._pending.append(future)
        return future

    def _check_call(self, epoch: Any, step: Any) -> tuple[int, int | None]:
        self._check_open()
        epoch = probe.check_int("epoch", epoch, -(1 << 62))
        return epoch, None if step is None else probe.check_int("step", step, 0)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this InformationPlane is closed; create a new one to measure again")

    def flush(self) -> None:
        """Wait until every `measure_async` so far is counted and in the sinks; raise its error if one failed."""
        self._reap(wait=True, every=True)

    def _reap(self, wait: bool, every: bool = False) -> None:
        """Drop finished measurements (raising the first failure); wait for the oldest or all."""
        while self._pending and (self._pending[0].done() or wait):
            self._pending.popleft().result()
            if not every:
                wait = False

    def _record(self, pack: Callable[[], dict[str, PackedCodes]], scales: dict[str, float | None],
                epoch: int, step: int | None, background: bool = False) -> list[LayerMI]:
        """Pack and count one probe pass: records into `history` and the sinks."""
        if self._failed is not None:
            raise RuntimeError(
                f"a background measurement failed earlier ({self._failed!r}), so later ones would leave a "
                "gap in the records; fix the cause and start a new InformationPlane"
            ) from self._failed
        try:
            stores = pack()
            if not stores:  # a rank other than zero of a process group: rank zero records
                return []
            records = []
            for index, (name, store) in enumerate(stores.items()):
                point = information_plane_point(store.rows, self.labels, label_groups=self._label_groups)
                records.append(LayerMI(
                    layer=name, epoch=epoch, step=step, i_xt=point.h_t, i_ty=point.i_ty, h_t=point.h_t,
                    n_distinct=point.n_distinct, n_samples=point.n_samples, bit_width=store.bit_width,
                    width=store.width, layer_index=index, h_y=point.h_y,
                    saturated=point.n_distinct == point.n_samples, scale=scales.get(name),
                ))
            if not self.history:
                probe.warn_if_all_injective(records, self.n_samples)
            self.history.extend(records)
            for sink in self._sinks:
                sink.write(records)
        except BaseException as e:
            if background:
                self._failed = e
            raise
        return records

    # ------------------------------------------------------------ lifecycle and state
    def close(self) -> None:
        """Flush pending measurements, stop the worker thread, close the sinks; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            for sink in self._sinks:
                close_sink(sink)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "InformationPlane":
        self._check_open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_error:  # keep the user's exception; say what else failed
            warnings.warn(f"InformationPlane.close() after {exc_type.__name__}: {close_error!r}", RuntimeWarning)

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs (flushes first): history, probe-pass count, whether codes_fn survives."""
        self.flush()
        return {
            "version": _STATE_VERSION,
            "layer_names": list(self.layer_names),
            "n_samples": self.n_samples,
            "history": [r.to_dict() for r in self.history],
            "passes": self._passes,
            "codes_fn_dropped": self._passes > 0 and self.codes_fn is None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: same layers and probe size required; before `record_to`."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("not an InformationPlane state_dict (or of another version)")
        if state["layer_names"] != self.layer_names or state["n_samples"] != self.n_samples:
            raise ValueError(
                f"the saved plane measured layers {state['layer_names']} on {state['n_samples']} samples, this "
                f"one {self.layer_names} on {self.n_samples}; build it with the same model and probe set"
            )
        if self._sinks or self.history:
            raise RuntimeError("load_state_dict must come before any measurement or sink (record_to, add_sink)")
        self.history = [record_from_dict(r, "InformationPlane state_dict") for r in state["history"]]
        self._passes = int(state["passes"])
        if state["codes_fn_dropped"]:
            self.codes_fn = None
