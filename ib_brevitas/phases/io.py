"""Phase events on disk, and verdicts as text: the per-layer table and the end-of-run summary."""

from __future__ import annotations

import os
import textwrap
from typing import Any, Iterable, Mapping

from ib_brevitas.files import read_jsonl, write_jsonl
from ib_brevitas.formatting import fmt, format_table
from ib_brevitas.phases.types import Episode, PhaseEvent, PhaseVerdict
from ib_brevitas.records import LayerMI

PEAK_NOTE = ("start / peak / final: first value, global maximum and last value of the running median of "
             "`smooth` measurements (start = the first measurement itself); drop = peak - final of I(X;T)")


def write_events(path: str | os.PathLike, events: Iterable[PhaseEvent]) -> None:
    """Atomically replace a phases.jsonl with `events` (e.g. a resumed tracker's `.events`).

    On resume this makes the file exactly the replayed history, whatever a
    crash left in it; later events are appended with `append_jsonl`.
    """
    write_jsonl(path, [e.to_dict() for e in events])


def read_events(path: str | os.PathLike) -> list[PhaseEvent]:
    """All events of a phases.jsonl file, in file order."""
    rows = read_jsonl(path)
    try:
        return [PhaseEvent.from_dict(r) for r in rows]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a phase-event log ({e})") from None


def shown_events(events: Iterable[PhaseEvent]) -> list[PhaseEvent]:
    """The events a display marks: a layer's final events once it has any, else its provisional ones.

    A finished run logs both the live (provisional) events and the final ones at the verdict's epochs;
    marking both would show one phase twice.
    """
    events = list(events)
    final = {e.layer for e in events if not e.provisional}
    return [e for e in events if not e.provisional or e.layer not in final]


def saturation_text(v: PhaseVerdict) -> str:
    """'yes' / 'no' with the share of measurements at log2 N, '-' where N was not known."""
    if v.log2_n is None:
        return "-"
    return f"{'yes' if v.saturated else 'no'} ({v.saturated_frac:.0%})"


def compression_text(v: PhaseVerdict) -> str:
    """'yes (compressed)', 'no (i_ty_dropped: 0.181 > 0.166 bit)': a dropped I(T;Y) says by how much."""
    reason = v.reason
    if reason == "i_ty_dropped" and v.ty_tolerance_bits is not None:
        reason += f": {v.i_ty_fall_bits:.3f} > {v.ty_tolerance_bits:.3f} bit"
    return f"{ {True: 'yes', False: 'no', None: 'undecided'}[v.compression]} ({reason})"


def episodes_text(episodes: Iterable[Episode]) -> str:
    """'15-55 -2.90 bit (recovered); 320-1000 -0.30 bit' (onset-trough epochs, depth)."""
    return "; ".join(f"{e.start_epoch}-{e.end_epoch} -{e.depth_bits:.2f} bit" + (" (recovered)" if e.recovered else "")
                     for e in episodes)


def format_verdicts(verdicts: Mapping[str, PhaseVerdict], markdown: bool = False) -> str:
    """Per-layer verdict table (plain text, or Markdown for TensorBoard's text tab), episodes below it."""
    head = ["layer", "saturated", "fitting", "fit end", "I(T;Y) gain", "compression", "onset",
            "peak I(X;T)", "final I(X;T)", "drop", "episodes", "I(T;Y) change"]
    rows = []
    for name, v in verdicts.items():
        fitting = "not observable (at log2 N)" if v.fitting is None else v.fitting_text
        rows.append([
            name, saturation_text(v), fitting, fmt(v.fit_end_epoch), fmt(v.fit_gain_bits),
            compression_text(v), fmt(v.onset_epoch), fmt(v.peak_i_xt), fmt(v.final_i_xt),
            fmt(v.drop_bits), str(len(v.episodes)), fmt(v.i_ty_change, "+.3f"),
        ])
    lines = [format_table(head, rows, markdown)]
    for name, v in verdicts.items():
        if v.episodes:
            lines.append(f"{'- ' if markdown else ''}{name} episodes: {episodes_text(v.episodes)}")
    return "\n".join(lines)


def run_summary(records: Iterable[LayerMI], verdicts: Mapping[str, PhaseVerdict]) -> tuple[dict[str, Any], str]:
    """The end-of-run table: per layer start, peak, final I(X;T) and I(T;Y), and the verdicts.

    Returns (JSON-able dict, text). Every "peak" is the verdict's (see
    PEAK_NOTE, printed as the table's footnote). `records` give the labels
    and the bounds log2 N and H(Y); `verdicts` are the tracker's (or
    `detect`'s), one per layer, in layer order.
    """
    first: dict[str, LayerMI] = {}
    for r in records:
        first.setdefault(r.layer, r)
    missing = [name for name in verdicts if name not in first]
    if missing:
        raise ValueError(f"run_summary: no records for the layers {missing} that have verdicts")
    layers = []
    for name, v in verdicts.items():
        r = first[name]
        layers.append({
            "layer": name, "label": r.label,
            "i_xt": {"start": v.start_i_xt, "peak": v.peak_i_xt, "peak_epoch": v.peak_epoch, "final": v.final_i_xt},
            "i_ty": {"start": v.start_i_ty, "peak": v.peak_i_ty, "final": v.final_i_ty},
            "saturated": v.saturated, "fitting": v.fitting, "fit_end_epoch": v.fit_end_epoch,
            "compression": v.compression, "reason": v.reason, "onset_epoch": v.onset_epoch,
            "drop_bits": v.drop_bits, "episodes": [e.to_dict() for e in v.episodes],
        })
    any_r = next(iter(first.values()), None)
    bounds = {"log2_n": any_r.log2_n if any_r else None, "h_y": any_r.h_y if any_r else None}
    head = ["layer", "", "I(X;T) start", "peak", "final", "I(T;Y) start", "peak", "final",
            "saturated", "fitting", "compression", "onset", "drop", "episodes"]
    rows = []
    for d, v in zip(layers, verdicts.values()):
        rows.append([d["layer"], "" if d["layer"] == d["label"] else d["label"],
                     *(fmt(d["i_xt"][k]) for k in ("start", "peak", "final")),
                     *(fmt(d["i_ty"][k]) for k in ("start", "peak", "final")),
                     saturation_text(v), v.fitting_text, compression_text(v), fmt(v.onset_epoch),
                     fmt(v.drop_bits), episodes_text(v.episodes) or "-"])
    text = format_table(head, rows) + "\n" + textwrap.fill(f"({PEAK_NOTE})", width=100)
    if any_r is not None:
        text += f"\n(bits; bounds: I(X;T) <= log2 N = {any_r.log2_n:.3f}, I(T;Y) <= H(Y) = {any_r.h_y:.3f})"
    return {"note": PEAK_NOTE, "bounds": bounds, "layers": layers}, text
