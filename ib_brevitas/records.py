"""The one record schema every sink shares, and crash-safe JSON-lines files.

`LayerMI` is what a measurement produces; `mi.jsonl`, TensorBoard, the plugin's
JSON and the plots all carry exactly its fields. Add a field here, once.

JSONL files are append-only, flushed and fsync'ed after each batch of records,
so a crash loses at most the batch being written. A final line without its
newline is an interrupted write: readers drop it (with a warning) and
`truncate_jsonl` removes it before a resumed run appends. Any other bad line is
a corrupt log and raises a ValueError naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class LayerMI:
    """Exact information-plane coordinates of one layer at one measurement.

    Entropies and MI are in bits. `i_xt` = H(T) (T is a deterministic function
    of X, X uniform over the probe set); `i_ty` = H(T) + H(Y) - H(T, Y).
    `layer_index` is the layer's position in forward order (T1 is index 0).
    Bounds: `i_xt <= log2(n_samples)`, `i_ty <= min(h_t, h_y)`.
    """

    layer: str
    epoch: int
    step: int | None
    i_xt: float
    i_ty: float
    h_t: float
    n_distinct: int
    n_samples: int
    bit_width: int
    width: int
    layer_index: int
    h_y: float

    @property
    def label(self) -> str:
        """Short name used in plots: T1, T2, ... in forward order."""
        return f"T{self.layer_index + 1}"

    @property
    def log2_n(self) -> float:
        return math.log2(self.n_samples)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerMI":
        return dataclass_from_dict(cls, d)


def dataclass_from_dict(cls, d: Any):
    """Build dataclass `cls` from a dict (e.g. a JSON line), naming any missing field."""
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in d]
    if missing:
        raise ValueError(f"{dict(d)!r} lacks the {cls.__name__} fields {missing}")
    return cls(**{n: d[n] for n in names})


LAYER_MI_FIELDS = tuple(f.name for f in dataclasses.fields(LayerMI))


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as JSON lines, then flush and fsync so they survive a crash."""
    lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    if not lines:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines log written by `append_jsonl`.

    A last line cut off mid-write (no trailing newline) is dropped with a
    warning; any other line that is not a JSON object raises ValueError.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
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
        rows.append(row)
    if tail.strip():
        warnings.warn(
            f"{path}: dropped an incomplete last line (an interrupted write)", RuntimeWarning
        )
    return rows


def read_records(path: str | os.PathLike) -> list[LayerMI]:
    """All LayerMI records of an `mi.jsonl` file, in file order."""
    return [LayerMI.from_dict(r) for r in read_jsonl(path)]


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Atomically rewrite a JSONL file keeping the complete rows `keep` accepts.

    Used by `--resume`: rows written after the last checkpoint (and a torn last
    line) are removed, so re-running those epochs neither duplicates nor loses
    a record. Returns the number of rows kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = [r for r in read_jsonl(path) if keep(r)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(rows)
