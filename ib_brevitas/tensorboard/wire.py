"""The plugin's wire format: how measurements travel in TensorBoard event files, both ways.

Version 2 (written now): one numeric tensor per measurement, tag
`information_plane/measurements/<layout>`, float64 of shape (layers, fields);
the plugin metadata of the tag names the fields, the layers (row order) and
each row's estimator, so a value costs one small tensor instead of one JSON
string per layer. A layout (layers, estimators) that changes gets a new tag.
`step` and `scale` are nullable: NaN stands for None. Version 1 (written until
this format): one JSON string tensor per layer and measurement under
`information_plane/layer/<module path>`; still read.

Decoding validates every datum (finite numbers, integral counts, known
fields) and skips a bad one with a count, so one bad value never stops a
run from drawing. A series of a newer version is refused with a message.
Only numpy and the standard library: the TensorBoard plugin imports this.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ib_brevitas.records import EXACT, LayerMI, record_from_dict
from ib_brevitas.tensorboard import LAYER_TAG_PREFIX, MEASUREMENTS_TAG_PREFIX, WIRE_VERSION

# Numeric fields of a v2 row (the layer name and estimator live in the metadata).
FIELDS = ("layer_index", "epoch", "step", "i_xt", "i_ty", "h_t", "n_distinct", "n_samples",
          "bit_width", "width", "h_y", "saturated", "scale")
INT_FIELDS = ("layer_index", "epoch", "step", "n_distinct", "n_samples", "bit_width", "width")
NULLABLE = ("step", "scale")
_MAX_INT = 2.0**53  # float64 holds every integer below this exactly


def is_measurement_tag(tag: str) -> bool:
    return tag.startswith(MEASUREMENTS_TAG_PREFIX) or tag.startswith(LAYER_TAG_PREFIX)


def encode(records: Sequence[LayerMI], group: str | None) -> tuple[str, np.ndarray, dict[str, Any]]:
    """(tag, tensor, metadata content) of one measurement (records of distinct layers)."""
    layers = [r.layer for r in records]
    estimators = [r.estimator for r in records]
    layout = hashlib.sha1(json.dumps([layers, estimators]).encode()).hexdigest()[:12]
    rows = []
    for r in records:
        row = []
        for name in FIELDS:
            v = getattr(r, name)
            row.append(math.nan if v is None else float(v))
        rows.append(row)
    meta = {"version": WIRE_VERSION, "kind": "measurements", "fields": list(FIELDS), "layers": layers,
            "estimators": estimators, "group": group}
    return MEASUREMENTS_TAG_PREFIX + layout, np.asarray(rows, dtype=np.float64), meta


@dataclass
class Columns:
    """One layer's measurements (one estimator) as columns, sorted by epoch."""

    layer: str
    index: int
    estimator: str
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return series_label(self.index, self.estimator)

    def __len__(self) -> int:
        return len(self.values["epoch"])


def series_label(index: int, estimator: str) -> str:
    """T1..Tn; an estimated (binned) series says so, so it is never taken for an exact one."""
    return f"T{index + 1}" if estimator == EXACT else f"T{index + 1} ({estimator})"


@dataclass
class Decoded:
    """What a run's measurement series hold: columns per (layer, estimator), skipped data, warnings."""

    columns: dict[tuple[str, str], Columns] = field(default_factory=dict)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, layer: str, estimator: str, values: dict[str, np.ndarray]) -> None:
        index = int(values["layer_index"][0]) if len(values["layer_index"]) else 0
        col = self.columns.get((layer, estimator))
        if col is None:
            self.columns[(layer, estimator)] = Columns(layer, index, estimator, values)
        else:
            col.values = {k: np.concatenate([col.values[k], values[k]]) for k in FIELDS}

    def finish(self) -> "Decoded":
        """Sort each series by epoch; where two values share an epoch, the later written wins."""
        for col in self.columns.values():
            e = col.values["epoch"]
            # stable sort of the reversed arrays + unique keeps the last occurrence per epoch
            rev = {k: v[::-1] for k, v in col.values.items()}
            _, first = np.unique(rev["epoch"], return_index=True)
            col.values = {k: v[first] for k, v in rev.items()} if len(e) else col.values
        self.columns = dict(sorted(self.columns.items(), key=lambda kv: (kv[1].index, kv[0])))
        return self


def check_version(content: dict[str, Any], tag: str) -> str | None:
    """None if this code reads the series, else the message saying why not."""
    v = content.get("version", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        return f"series {tag!r}: wire format version {v!r} is not a positive integer; the data are corrupt"
    if v > WIRE_VERSION:
        return (f"series {tag!r} was written with wire format version {v}, newer than this ib-brevitas reads "
                f"({WIRE_VERSION}); upgrade ib-brevitas (pip install -U ib-brevitas) to show it")
    return None


def _valid_rows(a: np.ndarray, cols: dict[str, int]) -> np.ndarray:
    """Mask of rows (..., F) that are valid measurements."""
    ok = np.ones(a.shape[:-1], dtype=bool)
    for name in FIELDS:
        x = a[..., cols[name]]
        finite = np.isfinite(x)
        ok &= (finite | np.isnan(x)) if name in NULLABLE else finite
        if name in INT_FIELDS:
            xi = np.where(finite, x, 0.0)
            ok &= (xi == np.round(xi)) & (np.abs(xi) < _MAX_INT)
    s = lambda n: a[..., cols[n]]  # noqa: E731
    with np.errstate(invalid="ignore"):
        ok &= (s("n_samples") >= 1) & (s("layer_index") >= 0)  # epochs < 0: a random-label prefit
        ok &= (s("i_xt") >= 0) & (s("i_ty") >= 0) & (s("h_t") >= 0) & (s("h_y") >= 0)
        ok &= (s("saturated") == 0) | (s("saturated") == 1)
    return ok


def decode_v2(decoded: Decoded, tag: str, content: dict[str, Any], arrays: Iterable[Any]) -> None:
    """Add the values of one v2 measurement series (arrays of shape (layers, fields))."""
    fields, layers, estimators = content.get("fields"), content.get("layers"), content.get("estimators")
    arrays = arrays if isinstance(arrays, np.ndarray) else list(arrays)
    if (not isinstance(fields, list) or not isinstance(layers, list) or not isinstance(estimators, list)
            or len(layers) != len(estimators) or not all(isinstance(x, str) for x in layers + estimators)
            or any(f not in fields for f in FIELDS)):
        decoded.skipped += len(arrays) * max(1, len(layers) if isinstance(layers, list) else 1)
        decoded.warnings.append(f"series {tag!r}: its metadata does not describe the layers and fields; skipped")
        return
    cols = {f: i for i, f in enumerate(fields)}
    shape = (len(layers), len(fields))
    if isinstance(arrays, np.ndarray) and arrays.shape[1:] == shape and arrays.dtype.kind == "f":
        stack = arrays.astype(np.float64, copy=False)  # already stacked (tensors.read): (T, L, F)
    else:
        good = []
        for a in arrays:
            a = np.asarray(a)
            if a.shape == shape and a.dtype.kind == "f":
                good.append(a.astype(np.float64, copy=False))
            else:
                decoded.skipped += len(layers)
        if not good:
            return
        stack = np.stack(good)  # (T, L, F)
    ok = _valid_rows(stack, cols)
    decoded.skipped += int((~ok).sum())
    for j, (layer, estimator) in enumerate(zip(layers, estimators)):
        rows = stack[ok[:, j], j, :]
        if len(rows):
            decoded.add(layer, estimator, _typed({f: rows[:, cols[f]] for f in FIELDS}))


def _typed(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(values)
    for f in INT_FIELDS:
        if f not in NULLABLE:
            out[f] = values[f].astype(np.int64)
    out["saturated"] = values["saturated"].astype(bool)
    return out


def load_json(raw: Any) -> Any:
    """A v1 datum: a scalar string tensor holding JSON."""
    value = raw.item() if hasattr(raw, "item") else raw
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.loads(value)


def decode_v1(decoded: Decoded, tag: str, raws: Iterable[Any]) -> None:
    """Add the values of one v1 layer series (JSON records), checked like mi.jsonl."""
    records = []
    for raw in raws:
        try:
            rec = record_from_dict(load_json(raw), f"{tag}")
        except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
            decoded.skipped += 1
            continue
        if rec.n_samples < 1:
            decoded.skipped += 1
            continue
        records.append(rec)
    for (layer, estimator), cols in columns_of(records).items():
        decoded.add(layer, estimator, cols)


def columns_of(records: Sequence[LayerMI]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """LayerMI records as columns per (layer, estimator), in the order given."""
    by_key: dict[tuple[str, str], list[LayerMI]] = {}
    for r in records:
        by_key.setdefault((r.layer, r.estimator), []).append(r)
    out = {}
    for key, rs in by_key.items():
        values = {f: np.asarray([math.nan if getattr(r, f) is None else getattr(r, f) for r in rs], dtype=np.float64)
                  for f in FIELDS}
        out[key] = _typed(values)
    return out


def decode_records(records: Sequence[LayerMI]) -> Decoded:
    """Records already in memory (mi.jsonl) as the same columns the event files give."""
    decoded = Decoded()
    for (layer, estimator), cols in columns_of(records).items():
        decoded.add(layer, estimator, cols)
    return decoded.finish()


def to_records(decoded: Decoded) -> list[LayerMI]:
    """The LayerMI records of decoded columns, sorted by layer and epoch."""
    out = []
    for col in decoded.columns.values():
        v = {k: a.tolist() for k, a in col.values.items()}
        for i in range(len(col)):
            row = {f: v[f][i] for f in FIELDS}
            for f in NULLABLE:
                if isinstance(row[f], float) and math.isnan(row[f]):
                    row[f] = None
            if row["step"] is not None:
                row["step"] = int(row["step"])
            out.append(LayerMI(layer=col.layer, estimator=col.estimator, **row))
    return sorted(out, key=lambda r: (r.layer_index, r.layer, r.epoch))
