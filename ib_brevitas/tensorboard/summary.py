"""Write exact-MI records into TensorBoard event files for the information-plane tab.

`TensorBoardSink` writes through the user's own `SummaryWriter` (or one it opens
in a run directory), so everything lands in one event file per writer: per
measurement one numeric tensor holding every layer's `LayerMI` fields (wire
format 2, see `wire`), the scalars `ib/I_XT/<layer>` and `ib/I_TY/<layer>`
(`<layer>/<estimator>` for binned records) for the Scalars tab, phase events, and an optional information-versus-hardware
table. The global step is the epoch. It is a sink like `JsonlSink`:
`sink(records)` / `sink.write(records)`, then `close()`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any, Iterable, Mapping

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util

from ib_brevitas.records import LayerMI
from ib_brevitas.tensorboard import (
    HARDWARE_TAG,
    PHASES_TAG,
    PLUGIN_NAME,
    WIRE_VERSION,
    wire,
)


def _json_default(value: Any) -> Any:
    # numpy scalars (np.int64, np.float32, np.bool_) from user code.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, allow_nan=False, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{what} cannot be written to TensorBoard: {e}. "
            "Pass plain numbers/strings (no NaN or inf)."
        ) from None


def plugin_summary(tag: str, payload: str | np.ndarray, metadata: Mapping[str, Any] | None) -> summary_pb2.Summary:
    """A one-value Summary owned by the information-plane plugin.

    `payload`: a numeric array (a tensor), or a JSON string stored as a scalar
    string tensor. DATA_CLASS_TENSOR is required, without it the data provider
    does not return the series. `metadata` (plugin content) only needs to be
    sent with a tag's first value.
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(data))
    if metadata is not None:
        value.metadata.plugin_data.plugin_name = PLUGIN_NAME
        value.metadata.plugin_data.content = _dumps(dict(metadata), "plugin metadata").encode()
        value.metadata.data_class = summary_pb2.DATA_CLASS_TENSOR
    return summary_pb2.Summary(value=[value])


def add_summary(writer: Any, summary: summary_pb2.Summary, step: int) -> None:
    """Write `summary` through the SummaryWriter's own event file.

    torch exposes no public call for a raw Summary proto (`add_tensor`
    hard-codes another plugin name), so this is the one place that uses
    `SummaryWriter._get_file_writer()`; opening a second event file in the
    same run directory would race with the user's writer.
    """
    get = getattr(writer, "_get_file_writer", None)
    if get is None:
        raise TypeError(
            f"writer must be a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}"
        )
    get().add_summary(summary, step)


def _check_step(step: Any, what: str) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"{what} must be a non-negative integer (the epoch + step_offset), got {step!r}")
    return int(step)


def _is_epoch(x: Any, lowest: int = 0) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x >= lowest


def _describe(detail: Any) -> str:
    if isinstance(detail, Mapping):
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in detail.items())
    return str(detail)


def _as_record(rec: Any) -> LayerMI:
    if isinstance(rec, LayerMI):
        return rec
    if isinstance(rec, Mapping):
        return LayerMI.from_dict(rec)
    raise TypeError(
        f"expected LayerMI records (from InformationPlane.measure), got {type(rec).__name__}"
    )


class TensorBoardSink:
    """Writes measurements for the `information_plane` TensorBoard tab.

    Pass the `SummaryWriter` you already use (its purge_step, flush policy and
    event file are respected) or a `log_dir` to open one here; `group` names
    the configuration a run belongs to, so the dashboard can average seeds
    (default: the run name without a seed suffix such as `-seed3`).
    `step_offset`: TensorBoard steps are >= 0, so a run whose epochs start at
    -K (a K-epoch random-label prefit) writes at global step = epoch + K; the
    records keep their own epochs, which the tab draws (the prefit at -K..0).
    """

    def __init__(
        self,
        writer: Any = None,
        log_dir: str | os.PathLike | None = None,
        *,
        group: str | None = None,
        purge_step: int | None = None,
        step_offset: int = 0,
    ) -> None:
        if (writer is None) == (log_dir is None):
            raise ValueError("give exactly one of writer= (a SummaryWriter) or log_dir= (a run directory)")
        if group is not None and not isinstance(group, str):
            raise TypeError(f"group must be a string, got {type(group).__name__}")
        if isinstance(step_offset, bool) or not isinstance(step_offset, numbers.Integral) or step_offset < 0:
            raise ValueError(f"step_offset must be a non-negative integer (K for a K-epoch prefit), got {step_offset!r}")
        self.step_offset = int(step_offset)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=os.fspath(log_dir), purge_step=purge_step)
            self._owns_writer = True
        else:
            if purge_step is not None:
                raise ValueError("purge_step only applies with log_dir=; set it on your own SummaryWriter")
            self._owns_writer = False
        self.writer = writer
        self.group = group
        self._tags_with_metadata: set[str] = set()
        self._phases_by_step: dict[int, list[dict[str, Any]]] = {}

    def _metadata_once(self, tag: str, content: dict[str, Any]) -> dict[str, Any] | None:
        if tag in self._tags_with_metadata:
            return None
        self._tags_with_metadata.add(tag)
        return {"version": WIRE_VERSION, **content}

    def write(self, records: Iterable[LayerMI], step: int | None = None) -> None:
        """Write one measurement (all layers) at global step `step` (default: the records' epoch + step_offset)."""
        records = [_as_record(r) for r in records]
        if not records:
            return
        names = [r.layer for r in records]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"layers {dupes} appear twice in one measurement; write each layer once per step")
        for r in records:
            bad = [f for f in wire.FIELDS if isinstance(getattr(r, f), float) and not math.isfinite(getattr(r, f))]
            if bad:
                raise ValueError(f"record of layer {r.layer!r} cannot be written to TensorBoard: {bad} "
                                 "is NaN or inf. Pass finite numbers.")
        epochs = {r.epoch for r in records}
        if step is None and len(epochs) > 1:
            raise ValueError(f"one measurement holds the epochs {sorted(epochs)}; write each epoch separately")
        s = _check_step(records[0].epoch + self.step_offset if step is None else step, "step")
        records.sort(key=lambda r: (r.layer_index, r.layer))
        tag, tensor, content = wire.encode(records, self.group)
        # One event per measurement: one tensor for every layer, plus the legacy
        # simple_value scalars that SummaryWriter.add_scalar writes, too.
        summary = plugin_summary(tag, tensor, self._metadata_once(tag, content))
        for rec in records:
            name = rec.layer if rec.exact else f"{rec.layer}/{rec.estimator}"  # estimates get their own tag
            summary.value.add(tag=f"ib/I_XT/{name}", simple_value=rec.i_xt)
            summary.value.add(tag=f"ib/I_TY/{name}", simple_value=rec.i_ty)
        add_summary(self.writer, summary, s)

    __call__ = write  # a sink: plane.add_sink(TensorBoardSink(...))

    def write_phase_events(self, events: Iterable[Any], step: int | None = None) -> None:
        """Write `PhaseEvent`s (from `ib_brevitas.phases`) for the plugin's markers.

        The global step is `step`, else the latest `detected_epoch` (the
        measurement that decided the events) + step_offset. Events written at one step are
        merged, so the last value at a step holds them all (TensorBoard's Rust
        loader keeps one value per step). Also written as the text summary
        `ib/phases` for the Text tab.
        """
        from ib_brevitas.phases import PhaseEvent

        events = list(events)
        if not events:
            return
        for e in events:
            if not isinstance(e, PhaseEvent):
                raise TypeError(f"phase events must be ib_brevitas.phases.PhaseEvent objects (from PhaseTracker), "
                                f"got {type(e).__name__}; build one with PhaseEvent.from_dict(d)")
            for name in ("epoch", "detected_epoch"):
                if not _is_epoch(getattr(e, name), -self.step_offset):
                    raise ValueError(f"phase event {e!r}: {name} must be a number >= {-self.step_offset} "
                                     "(-step_offset)")
        s = _check_step(int(max(e.detected_epoch for e in events)) + self.step_offset if step is None else step, "step")
        merged = self._phases_by_step.setdefault(s, [])
        merged.extend(e.to_dict() for e in events)
        meta = self._metadata_once(PHASES_TAG, {"kind": "phases"})
        add_summary(self.writer, plugin_summary(PHASES_TAG, _dumps(merged, "phase events"), meta), s)
        lines = [f"- epoch {e.epoch}, layer `{e.layer}`: **{e.kind}** {_describe(e.detail)}" for e in events]
        self.writer.add_text("ib/phases", "\n".join(lines), global_step=s)

    def write_hardware_table(
        self, rows: list[Mapping[str, Any]], totals: Mapping[str, Any], step: int = 0
    ) -> None:
        """Write the information-versus-hardware-cost table shown under the plane.

        `rows`: one dict per layer (same keys in every row, e.g. layer, i_xt,
        luts, bram); `totals`: one dict for the whole network. The latest
        table written wins.
        """
        if not isinstance(rows, (list, tuple)) or not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("rows must be a list of dicts, one per layer")
        if not isinstance(totals, Mapping):
            raise TypeError("totals must be a dict")
        payload = _dumps({"rows": [dict(r) for r in rows], "totals": dict(totals)}, "hardware table")
        meta = self._metadata_once(HARDWARE_TAG, {"kind": "hardware"})
        add_summary(self.writer, plugin_summary(HARDWARE_TAG, payload, meta), _check_step(step, "step"))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Flush; also close the writer if this sink opened it."""
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()

    def __enter__(self) -> "TensorBoardSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

