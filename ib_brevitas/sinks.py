"""Where records go: one protocol for every sink.

A sink has `write(records)` (one measurement's `LayerMI` list, every layer) and
may have `close()`; a plain callable `fn(records)` is a sink too (`as_sink`).
Sinks read records, never models: the data path runs one way.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol, runtime_checkable

from ib_brevitas.files import append_jsonl
from ib_brevitas.records import LayerMI


@runtime_checkable
class Sink(Protocol):
    def write(self, records: list[LayerMI]) -> None: ...


class CallableSink:
    """A user's function `fn(records)` as a sink."""

    def __init__(self, fn: Callable[[list[LayerMI]], Any]):
        self.fn = fn

    def write(self, records: list[LayerMI]) -> None:
        self.fn(records)


def as_sink(sink: Any) -> Sink:
    if isinstance(sink, Sink):
        return sink
    if callable(sink):
        return CallableSink(sink)
    raise TypeError(
        f"a sink must have write(records) (e.g. JsonlSink(path)) or be callable as fn(records), "
        f"got {type(sink).__name__}"
    )


def close_sink(sink: Sink) -> None:
    close = getattr(sink, "close", None)
    if callable(close):
        close()


def tensorboard_sink(writer: Any, step_offset: int = 0):
    """A `TensorBoardSink` on a user's open SummaryWriter (the sink does not close it); step = epoch + step_offset."""
    from ib_brevitas.tensorboard.summary import TensorBoardSink

    if not hasattr(writer, "add_summary") and not hasattr(writer, "_get_file_writer"):
        raise TypeError(
            f"log_to takes a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}; "
            "for a directory use SummaryWriter(log_dir) or record_to(run_dir)"
        )
    if getattr(writer, "all_writers", True) is None:
        raise ValueError("log_to: this SummaryWriter is closed; pass an open one")
    return TensorBoardSink(writer=writer, step_offset=step_offset)


class JsonlSink:
    """Append each measurement's records to a JSON-lines file (flushed and fsync'ed; `sync=False`: flushed)."""

    def __init__(self, path: str | os.PathLike, sync: bool = True):
        self.path = path
        self.sync = sync

    def write(self, records: list[LayerMI]) -> None:
        append_jsonl(self.path, [r.to_dict() for r in records], sync=self.sync)

    __call__ = write  # older code called the sink as a function


class PhaseSink:
    """Feeds a `PhaseTracker` and passes its typed `PhaseEvent`s on (phases.jsonl, TensorBoard, a callback)."""

    def __init__(self, tracker: Any, run_dir: Any = None, tensorboard: Any = None,
                 on_events: Callable[[list[Any]], Any] | None = None):
        self.tracker = tracker
        self.run_dir = run_dir
        self.tensorboard = tensorboard
        self.on_events = on_events

    def write(self, records: list[LayerMI]) -> None:
        self._emit(self.tracker.update(records), records[0].epoch)

    def finish(self, epoch: int) -> list[Any]:
        """Final events of the finished run (compression confirmed or retracted at its end)."""
        events = self.tracker.finish()
        self._emit(events, epoch)
        return events

    def _emit(self, events: list[Any], epoch: int) -> None:
        if not events:
            return
        if self.run_dir is not None:
            self.run_dir.append_events(events)
        if self.tensorboard is not None:
            self.tensorboard.write_phase_events(events, step=epoch)
        if self.on_events is not None:
            self.on_events(events)
