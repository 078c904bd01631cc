"""The one record schema every sink shares.

`LayerMI` is what a measurement produces; `mi.jsonl`, TensorBoard, the plugin's
JSON and the plots all carry exactly its fields. Add a field here, once, with a
default, and raise `SCHEMA_VERSION`: records written by an older version then
still read (the new field takes its default); a record of a newer version than
this library knows is refused with the file and line, never read wrong.

Version history: 1 - the first twelve fields (no "v" key in the JSON);
2 - `estimator` ("exact", or the binning estimator that produced the numbers),
`saturated` (every probe sample has its own code) and `scale` (the layer
quantizer's scale, None where unknown).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ib_brevitas.files import read_jsonl_numbered

SCHEMA_VERSION = 2
EXACT = "exact"


@dataclass(frozen=True)
class LayerMI:
    """Information-plane coordinates of one layer at one measurement.

    Entropies and MI are in bits. `i_xt` = H(T) (T is a deterministic function
    of X, X uniform over the probe set); `i_ty` = H(T) + H(Y) - H(T, Y).
    `layer_index` is the layer's position in forward order (T1 is index 0).
    Bounds: `i_xt <= log2(n_samples)`, `i_ty <= min(h_t, h_y)`. `estimator` is
    "exact" for counted integer codes; anything else names an estimate.
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
    estimator: str = EXACT
    saturated: bool = False
    scale: float | None = None

    @property
    def label(self) -> str:
        """Short name used in plots: T1, T2, ... in forward order."""
        return f"T{self.layer_index + 1}"

    @property
    def log2_n(self) -> float:
        return math.log2(self.n_samples)

    @property
    def exact(self) -> bool:
        return self.estimator == EXACT

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerMI":
        return dataclass_from_dict(cls, d)


_FIELD_TYPES = {
    "layer": (str,), "epoch": (int,), "step": (int, type(None)), "i_xt": (int, float), "i_ty": (int, float),
    "h_t": (int, float), "n_distinct": (int,), "n_samples": (int,), "bit_width": (int,), "width": (int,),
    "layer_index": (int,), "h_y": (int, float), "estimator": (str,), "saturated": (bool,),
    "scale": (int, float, type(None)),
}


def check_version(d: dict[str, Any], where: str) -> None:
    """Refuse a record of a schema version newer than this library knows."""
    v = d.get("v", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{where}: schema version {v!r} is not a positive integer; the record is corrupt")
    if v > SCHEMA_VERSION:
        raise ValueError(
            f"{where}: written with record schema version {v}, newer than this ib-brevitas reads "
            f"({SCHEMA_VERSION}); upgrade ib-brevitas to read it"
        )


def dataclass_from_dict(cls, d: Any):
    """Build dataclass `cls` from a dict (e.g. a JSON line), naming any missing field.

    Fields with a default may be missing (a record of an older schema version).
    """
    if not isinstance(d, dict):
        raise ValueError(f"{d!r} is not a {cls.__name__} (not a JSON object)")
    fields = dataclasses.fields(cls)
    missing = [
        f.name for f in fields
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{dict(d)!r} lacks the {cls.__name__} fields {missing}")
    return cls(**{f.name: d[f.name] for f in fields if f.name in d})


def record_from_dict(d: dict[str, Any], where: str = "record") -> LayerMI:
    """A checked LayerMI from a JSON object: version, fields and their types, finite numbers."""
    check_version(d, where)
    try:
        record = LayerMI.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not an MI record ({e})") from None
    for name, types in _FIELD_TYPES.items():
        value = getattr(record, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: field {name!r} = {value!r} is non-finite; the record is corrupt")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{where}: field {name!r} = {value!r} is not a valid {'/'.join(t.__name__ for t in types)}")
    return record


LAYER_MI_FIELDS = tuple(f.name for f in dataclasses.fields(LayerMI))


def read_records(path: str | os.PathLike) -> list[LayerMI]:
    """All LayerMI records of an `mi.jsonl` file, in file order (checked, see `record_from_dict`)."""
    return [record_from_dict(row, f"{path}: line {i}") for i, row in read_jsonl_numbered(path)]
