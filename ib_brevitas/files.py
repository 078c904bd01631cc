"""The one way this project writes files: atomically, or append-only with torn-tail recovery.

`atomic_write` replaces a file by temp + fsync + rename (+ directory fsync), so a
crash at any instant leaves either the old file or the new one, never a mix; a
failed write removes its temp file and a full disk is reported with the path.
JSON-lines logs are append-only, flushed and fsync'ed after each batch: a crash
loses at most the batch being written (`sync=False` leaves the fsync to a later
`sync_files`, e.g. before a checkpoint: a killed process loses nothing written,
an OS crash at most what came after the last sync). A final line without its newline is an
interrupted write: readers drop it (with a warning) and `truncate_jsonl` removes
it before a resumed run appends. Any other bad line is a corrupt log and raises
a ValueError naming the file and line.
"""

from __future__ import annotations

import errno
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable


def _disk_error(path: Path, e: OSError) -> OSError:
    if e.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on device while writing {path}; free some space and re-run")
    return e


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, e) from None
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through `atomic_write` (a crash keeps the previous checkpoint)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lines(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]], sync: bool = True) -> None:
    """Append rows as JSON lines, then flush and (if `sync`) fsync so they survive a crash."""
    lines = _lines(rows)
    if not lines:
        return
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    except OSError as e:
        raise _disk_error(path, e) from None


def sync_files(paths: Iterable[str | os.PathLike]) -> None:
    """fsync each existing file of `paths` (what `append_jsonl(..., sync=False)` left in the OS cache)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _disk_error(Path(path), e) from None
        try:
            os.fsync(fd)
        except OSError as e:
            raise _disk_error(Path(path), e) from None
        finally:
            os.close(fd)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically replace a JSON-lines file with `rows`."""
    atomic_write(path, _lines(rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines log written by `append_jsonl`.

    A last line cut off mid-write (no trailing newline) is dropped with a
    warning; any other line that is not a JSON object raises ValueError.
    """
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a JSON-lines log, as `read_jsonl` reads it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; the log is corrupt. Restore it or delete the run") from None
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: line {i} is not valid JSON ({e.msg}); the log is corrupt. "
                "Restore it from a backup or delete the run directory and re-run."
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {i} is not a JSON object; the log is corrupt.")
        rows.append((i, row))
    if tail.strip():
        warnings.warn(f"{path}: dropped an incomplete last line (an interrupted write)", RuntimeWarning)
    return rows


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Atomically rewrite a JSONL file keeping the complete rows `keep` accepts.

    Used by resume: rows written after the last checkpoint (and a torn last
    line) are removed, so re-running those epochs neither duplicates nor loses
    a record. Returns the number of rows kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = [r for r in read_jsonl(path) if keep(r)]
    write_jsonl(path, rows)
    return len(rows)


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """A matplotlib figure saved through `atomic_write` (format from the file's suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower(), **kwargs)
    atomic_write(path, buf.getvalue())
