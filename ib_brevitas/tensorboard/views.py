"""What the tab's JSON routes answer, computed from decoded data (no TensorBoard import).

The plugin feeds these with what TensorBoard's data provider returns;
`ib-brevitas plot --html` feeds them with a run directory's records, so the
self-contained HTML file shows exactly what the tab shows. Every datum is
validated here or in `wire` (bad ones skipped and counted, the count and a
warning shown by the page), so no route answers 500 for bad data.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ib_brevitas.seedmean import group_of, mean_sd
from ib_brevitas.tensorboard import LAYER_TAG_PREFIX, tensors, wire


def current_data(data: dict[str, list[Any]], layer_tags: list[str]) -> dict[str, list[Any]]:
    """`tensors.current` on lists of datums (step, wall_time, numpy): what a resumed run left current."""
    series = {}
    for t, d in data.items():
        s = tensors.Series.of_datums(d)
        series[t] = tensors.Series(s.steps, s.walls, list(d))
    return {t: s.values for t, s in tensors.current(series, layer_tags).items()}


def decode(current: Mapping[str, tensors.Series], contents: Mapping[str, dict[str, Any]]) -> wire.Decoded:
    """Decode every measurement series (both wire formats); a future version is refused with a warning."""
    decoded = wire.Decoded()
    for tag, series in current.items():
        if not wire.is_measurement_tag(tag):
            continue
        content = contents.get(tag, {})
        problem = wire.check_version(content, tag)
        if problem:
            decoded.warnings.append(problem)
            continue
        arrays = series.values
        if tag.startswith(LAYER_TAG_PREFIX):
            wire.decode_v1(decoded, tag, arrays)
        else:
            wire.decode_v2(decoded, tag, content, arrays)
    return decoded.finish()


def _column(a: np.ndarray) -> list[Any]:
    out = a.tolist()
    if a.dtype.kind == "f" and np.isnan(a).any():
        out = [None if isinstance(v, float) and math.isnan(v) else v for v in out]
    return out


def bounds(decodeds: Iterable[wire.Decoded]) -> dict[str, float | None]:
    """log2 N and H(Y) over every series: the plane's dashed lines."""
    n = [int(c.values["n_samples"].max()) for d in decodeds for c in d.columns.values() if len(c)]
    h = [float(c.values["h_y"].max()) for d in decodeds for c in d.columns.values() if len(c)] if n else []
    return {"log2_n": math.log2(max(n)) if n else None, "h_y": max(h) if h else None}


def parse_fields(arg: str | None) -> tuple[str, ...]:
    """The `fields` query argument: a comma list of measurement fields, default all."""
    if not arg:
        return wire.FIELDS
    fields = tuple(f for f in arg.split(",") if f)
    unknown = [f for f in fields if f not in wire.FIELDS]
    if unknown:
        raise ValueError(f"unknown fields {unknown}; choose from {list(wire.FIELDS)}")
    return tuple(dict.fromkeys(("epoch", *fields)))


def points_body(decoded: wire.Decoded, group: str, fields: Sequence[str] = wire.FIELDS) -> dict[str, Any]:
    """One run: its layers' series as columns, labels, bounds, skipped count and warnings."""
    series = []
    for col in decoded.columns.values():
        entry = {"layer": col.layer, "label": col.label, "index": col.index, "estimator": col.estimator,
                 "n": len(col)}
        entry.update({f: _column(col.values[f]) for f in fields})
        series.append(entry)
    return {"group": group, "series": series, "bounds": bounds([decoded]),
            "skipped": decoded.skipped, "warnings": decoded.warnings}


def mean_body(runs: Sequence[tuple[str, wire.Decoded]]) -> dict[str, Any]:
    """Seeds of one configuration: per (layer, estimator) and epoch, mean +- s.d. (`seeds.mean_sd`)."""
    first: dict[tuple[str, str], wire.Columns] = {}
    for _, d in runs:
        for key, col in d.columns.items():
            first.setdefault(key, col)
    means = mean_sd({k: (c.values["epoch"], c.values["i_xt"], c.values["i_ty"]) for k, c in d.columns.items()}
                    for _, d in runs)
    series = []
    for key, col in sorted(first.items(), key=lambda kv: (kv[1].index, kv[0])):
        m = means[key]
        series.append({"layer": col.layer, "label": col.label, "index": col.index, "estimator": col.estimator,
                       "n": len(m.epoch), "epoch": m.epoch.tolist(), "i_xt": m.i_xt.tolist(),
                       "sd_xt": m.sd_xt.tolist(), "i_ty": m.i_ty.tolist(), "sd_ty": m.sd_ty.tolist(),
                       "n_runs": m.n_runs.tolist()})
    names = [r for r, _ in runs]
    return {"group": group_of(names[0]) if names else "", "runs": names, "series": series,
            "bounds": bounds(d for _, d in runs), "skipped": sum(d.skipped for _, d in runs),
            "warnings": [w for _, d in runs for w in d.warnings]}


def plane_binary(runs: Mapping[str, tuple[str, str, wire.Decoded]]) -> bytes:
    """Several runs' (epoch, i_xt, i_ty) per series as one binary body, for drawing a sweep fast.

    Layout: uint32 little-endian length of a JSON header, the header (UTF-8,
    padded with spaces to a multiple of 4 bytes), then float32 little-endian
    data. Header: {"runs": {run: {"group", "version", "skipped", "warnings",
    "series": [{"layer", "label", "index", "estimator", "n", "offset"}]}}};
    a series' epochs, i_xt and i_ty are 3 x n floats from float `offset`.
    float32 keeps 7 significant digits: enough to draw, not to quote
    (tooltips and `points` carry the exact values).
    """
    header: dict[str, Any] = {"runs": {}}
    chunks, offset = [], 0
    for run, (group, version, decoded) in runs.items():
        series = []
        for col in decoded.columns.values():
            n = len(col)
            series.append({"layer": col.layer, "label": col.label, "index": col.index, "estimator": col.estimator,
                           "n": n, "offset": offset})
            chunks += [col.values["epoch"], col.values["i_xt"], col.values["i_ty"]]
            offset += 3 * n
        header["runs"][run] = {"group": group, "version": version, "skipped": decoded.skipped,
                               "warnings": decoded.warnings, "series": series}
    head = dumps(header).encode("utf-8")
    head += b" " * (-len(head) % 4)
    data = np.concatenate([np.asarray(c, dtype="<f4") for c in chunks]) if chunks else np.zeros(0, "<f4")
    return len(head).to_bytes(4, "little") + head + data.tobytes()


def phases_body(batches: Iterable[Any]) -> dict[str, Any]:
    """Phase events (checked as `PhaseEvent`s, each once), sorted by epoch; bad ones skipped and counted."""
    from ib_brevitas.phases import PhaseEvent, shown_events

    events, seen, skipped = [], set(), 0
    for batch in batches:
        for e in batch if isinstance(batch, list) else [batch]:
            try:
                ev = PhaseEvent.from_dict(e)
                numbers = [ev.epoch, ev.detected_epoch, ev.i_xt, ev.i_ty]
                if not isinstance(ev.layer, str) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
                    raise ValueError("not a finite number")
                d = ev.to_dict()
                key = json.dumps(d, sort_keys=True, allow_nan=False, default=str)
            except (ValueError, TypeError):
                skipped += 1
                continue
            if key not in seen:  # a step's value repeats the events written before at that step
                seen.add(key)
                events.append(ev)
    events = [json.loads(json.dumps(e.to_dict(), sort_keys=True, default=str)) for e in shown_events(events)]
    events.sort(key=lambda e: (e["epoch"], e["layer"]))
    return {"events": events, "skipped": skipped}


def hardware_body(tables: Sequence[Any]) -> dict[str, Any]:
    """The latest information-versus-hardware table; cells that are not plain values are dropped."""
    table = tables[-1] if tables and isinstance(tables[-1], dict) else {}
    plain = (str, int, float, bool, type(None))

    def clean(d: Any) -> dict[str, Any]:
        return {str(k): v for k, v in d.items() if isinstance(v, plain)
                and not (isinstance(v, float) and not math.isfinite(v))} if isinstance(d, dict) else {}

    rows = table.get("rows") if isinstance(table.get("rows"), list) else []
    return {"rows": [clean(r) for r in rows if isinstance(r, dict)], "totals": clean(table.get("totals")),
            "skipped": int(bool(tables) and not table)}


def dumps(body: Any) -> str:
    return json.dumps(body, allow_nan=False, separators=(",", ":"))
