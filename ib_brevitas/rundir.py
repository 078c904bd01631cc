"""`RunDir`: one run's directory, and the only code that knows its file names.

    config.json          the run's settings, how to rebuild its model and probe set, versions
    mi.jsonl             one LayerMI record per layer per measurement: the source of truth
    phases.jsonl         typed phase events (fitting ended, compression started, ...)
    metrics.jsonl        train/test loss and accuracy per measured epoch
    summary.json/.txt    the end-of-run table (start, peak, final MI per layer; verdicts)
    events.out.tfevents.*  TensorBoard scalars and the Information Plane tab's data
    checkpoints/last.pt  everything a resume needs (written atomically)
    snapshots/e<epoch>.pt  the model's state at each measurement, for post-hoc binning (global bounds)
    probe.npz            the probe set, when it is not rebuilt from a factory
    export/              ONNX files and the export / hardware reports

`ib-brevitas train`, `plot`, `phases`, `export`, the Lightning callback and the
library's sinks all go through it. Every write is atomic or append-only (see
`files`); `lock()` keeps a second process out while one writes.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ib_brevitas.files import append_jsonl, atomic_torch_save, atomic_write, atomic_write_json, read_jsonl, truncate_jsonl
from ib_brevitas.records import LayerMI, read_records

# Settings that define what a run computes: runs that agree on these (the seed
# aside) are one configuration, and a resumed run must match them and its seed.
IDENTITY_KEYS = ("net", "dataset", "activation", "bits", "mi_every", "lr", "batch_size", "test_fraction")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says what to do."""


class RunDirLocked(RunDirError):
    """Another live process writes this run directory."""


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The identity part of a config (missing keys as None)."""
    return {k: config.get(k) for k in IDENTITY_KEYS}


@dataclass
class RunData:
    """What a run directory holds, read and checked: the one run loader's answer."""

    path: Path
    records: list[LayerMI]
    events: list[Any] = field(default_factory=list)  # PhaseEvent
    config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name


def load_run(run: str | os.PathLike[str] | RunData) -> RunData:
    """A run directory's `RunData`; one already loaded is passed through (read once, used many times)."""
    return run if isinstance(run, RunData) else RunDir(run).load()


class RunDir:
    """A run's directory. Paths are properties; reading checks and names the file on error."""

    CONFIG = "config.json"
    RECORDS = "mi.jsonl"
    PHASES = "phases.jsonl"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary"
    CHECKPOINT = "checkpoints/last.pt"
    PROBE = "probe.npz"
    MODEL = "model.pt"
    EXPORT = "export"
    SNAPSHOTS = "snapshots"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------ paths
    config_path = property(lambda self: self.path / self.CONFIG)
    records_path = property(lambda self: self.path / self.RECORDS)
    phases_path = property(lambda self: self.path / self.PHASES)
    metrics_path = property(lambda self: self.path / self.METRICS)
    checkpoint_path = property(lambda self: self.path / self.CHECKPOINT)
    probe_path = property(lambda self: self.path / self.PROBE)
    model_path = property(lambda self: self.path / self.MODEL)
    export_dir = property(lambda self: self.path / self.EXPORT)
    snapshots_dir = property(lambda self: self.path / self.SNAPSHOTS)

    def summary_path(self, suffix: str) -> Path:
        return self.path / f"{self.SUMMARY}.{suffix}"

    def event_files(self) -> list[Path]:
        return sorted(self.path.glob("events.out.tfevents.*"))

    def holds_run(self) -> bool:
        """True when records or a checkpoint are here already."""
        return self.records_path.exists() or self.checkpoint_path.exists()

    def create(self) -> "RunDir":
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} is a file, not a directory; pass another --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ------------------------------------------------------------ lock
    def lock(self) -> "RunLock":
        """An OS lock on the directory while this process writes it (dies with the process)."""
        return RunLock(self.create().path / self.LOCK)

    # ------------------------------------------------------------ config
    def read_config(self) -> dict[str, Any]:
        path = self.config_path
        if not path.is_file():
            raise RunDirError(f"{self.path} holds no {self.CONFIG}; is it a run directory written by ib-brevitas?")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}); restore it or start a new run") from None
        if not isinstance(config, dict):
            raise RunDirError(f"{path} holds {type(config).__name__}, not a JSON object; restore it or start a new run")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.create().config_path, config)

    # ------------------------------------------------------------ records and events
    def read_records(self) -> list[LayerMI]:
        if not self.records_path.exists():
            return []
        try:
            return read_records(self.records_path)
        except ValueError as e:
            raise RunDirError(f"{e}; repair or delete that line (a resume restores the records up to its "
                              "checkpoint)") from None

    def append_records(self, records: Iterable[LayerMI]) -> None:
        append_jsonl(self.create().records_path, [r.to_dict() for r in records])

    def truncate_records(self, last_epoch: int) -> list[LayerMI]:
        """Drop records after `last_epoch` (and a torn tail); return those kept. A damaged line is an error."""
        self.read_records()
        truncate_jsonl(self.records_path, lambda r: isinstance(r.get("epoch"), int) and r["epoch"] <= last_epoch)
        return self.read_records()

    def read_events(self) -> list[Any]:
        from ib_brevitas.phases import read_events

        return read_events(self.phases_path) if self.phases_path.exists() else []

    def write_events(self, events: Iterable[Any]) -> None:
        from ib_brevitas.phases import write_events

        write_events(self.create().phases_path, events)

    def append_events(self, events: Iterable[Any]) -> None:
        append_jsonl(self.create().phases_path, [e.to_dict() for e in events])

    def append_metrics(self, row: dict[str, Any], sync: bool = True) -> None:
        append_jsonl(self.create().metrics_path, [row], sync=sync)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path) if self.metrics_path.exists() else []

    def truncate_metrics(self, last_epoch: int) -> None:
        truncate_jsonl(self.metrics_path, lambda r: isinstance(r.get("epoch"), int) and r["epoch"] <= last_epoch)

    def write_summary(self, data: dict[str, Any], text: str) -> None:
        atomic_write_json(self.summary_path("json"), data)
        atomic_write(self.summary_path("txt"), text.rstrip("\n") + "\n")

    def load(self) -> RunData:
        """Records, events and config: from mi.jsonl, else from the TensorBoard event files."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        config = self.read_config() if self.config_path.exists() else None
        if self.records_path.exists():
            records, events = self.read_records(), self.read_events()
        else:
            from ib_brevitas.tensorboard.reader import read_event_files

            records, events = read_event_files(self.event_files())
        if not records:
            raise RunDirError(
                f"{self.path} holds no measurements: no {self.RECORDS} records and no information-plane "
                "data in its TensorBoard event files (is it a run directory written by ib-brevitas?)"
            )
        return RunData(self.path, records, events, config)

    # ------------------------------------------------------------ model, probe set, checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replace checkpoints/last.pt (a crash leaves the previous one intact)."""
        atomic_torch_save(state, self.create().checkpoint_path)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> dict[str, Any] | None:
        """The checkpoint's state dict, None when there is none; a damaged file is a RunDirError."""
        import pickle

        import torch

        path = Path(path) if path is not None else self.checkpoint_path
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, OSError, ValueError) as e:
            raise RunDirError(f"{path} is damaged or not a checkpoint ({str(e).splitlines()[0][:120]}); "
                              "restore it, or delete it (a resumed run then trains again from the start)") from None
        if not isinstance(state, dict) or "epoch" not in state:
            raise RunDirError(f"{path} is not an ib-brevitas checkpoint (no epoch in it); restore it, or delete it "
                              "(a resumed run then trains again from the start)")
        return state

    def save_snapshot(self, epoch: int, step: int | None, state: dict[str, Any]) -> None:
        """Keep the model's state at a measured epoch (atomic; binning with global bounds reads them post hoc)."""
        self.create().snapshots_dir.mkdir(exist_ok=True)
        atomic_torch_save({"epoch": epoch, "step": step, "state": state}, self.snapshots_dir / f"e{epoch}.pt")

    def _snapshot_files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.snapshots_dir.glob("e*.pt") if self.snapshots_dir.is_dir() else []:
            try:
                found.append((int(path.stem[1:]), path))
            except ValueError:
                continue  # not ours (e.g. an editor's backup)
        return sorted(found)

    def read_snapshots(self) -> list[tuple[int, int | None, dict[str, Any]]]:
        """(epoch, step, state_dict) of every snapshot, in epoch order; a damaged one is a RunDirError."""
        out = []
        for epoch, path in self._snapshot_files():
            snap = self.load_checkpoint(path)
            out.append((int(snap["epoch"]), snap.get("step"), snap["state"]))
        return out

    def truncate_snapshots(self, last_epoch: int) -> None:
        """Drop the snapshots after `last_epoch` (a resume re-trains those epochs)."""
        for epoch, path in self._snapshot_files():
            if epoch > last_epoch:
                path.unlink()

    def save_probe(self, inputs: Any, labels: Any) -> None:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, inputs=np.asarray(inputs), labels=np.asarray(labels))
        atomic_write(self.create().probe_path, buf.getvalue())

    def probe_set(self) -> tuple[Any, Any]:
        """(inputs, labels): the run's probe set, from probe.npz or the factory named in config.json."""
        import numpy as np

        if self.probe_path.exists():
            with np.load(self.probe_path) as f:
                return f["inputs"], f["labels"]
        spec = self.read_config().get("probe")
        return _call_factory(spec, self.config_path, "probe")

    def save_model(self, model: Any) -> None:
        """Keep the whole model (pickled with torch.save) for runs without a model factory in config."""
        atomic_torch_save(model, self.create().model_path)

    def build_model(self) -> Any:
        """A fresh model of the run: the factory named in config.json, else the pickled model.pt."""
        import torch

        spec = self.read_config().get("model")
        if spec is not None:
            return _call_factory(spec, self.config_path, "model")
        if self.model_path.exists():
            return torch.load(self.model_path, map_location="cpu", weights_only=False)
        raise RunDirError(
            f"{self.config_path} names no model factory and {self.model_path} does not exist, so the model "
            "cannot be rebuilt; record one with RunDir.save_model(model) or a 'model' entry in config.json"
        )


def factory_spec(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """{"factory": "module:name", "kwargs": ...}: how config.json says to rebuild a model or probe set."""
    return {"factory": f"{fn.__module__}:{fn.__qualname__}", "kwargs": kwargs}


def _call_factory(spec: Any, where: Path, what: str) -> Any:
    if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str) or ":" not in spec["factory"]:
        raise RunDirError(f"{where}: no valid {what!r} factory ({{'factory': 'module:function', 'kwargs': {{...}}}})")
    module, _, name = spec["factory"].partition(":")
    try:
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as e:
        raise RunDirError(f"{where}: cannot import the {what} factory {spec['factory']!r} ({e})") from None
    return fn(**(spec.get("kwargs") or {}))


class RunLock:
    """Exclusive `flock` on a run directory's lock file, holding the owner's PID."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirLocked(
                    f"{self.path.parent} is in use by process {holder}; wait for it to finish, stop it, "
                    "or use another run directory"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
