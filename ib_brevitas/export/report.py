"""Reports of the export checks: plain dataclasses that print as tables and save as JSON/CSV.

`ExportReport` (from `verify`): does the exported graph carry the analysed integers?
`HardwareReport` (from the FINN step): information versus hardware cost per layer.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ib_brevitas.files import atomic_write
from ib_brevitas.formatting import fmt, format_table


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float) and abs(value) >= 1e6:
        return f"{value:.3g}"
    return fmt(value, f".{digits}f")


def _count(value: Any) -> Any:
    """Resource counts print as integers when FINN reports them as whole floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return format_table(header, [[_fmt(v) for v in row] for row in rows])


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, buf.getvalue())
    return Path(path)


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    atomic_write(path, json.dumps(data, indent=2, allow_nan=True) + "\n")
    return Path(path)


def _report_from_dict(cls, layer_cls, data: dict[str, Any]):
    """A report from its `to_dict()` form: derived keys (properties) are dropped, rows rebuilt."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["layers"] = [layer_cls(**row) for row in data.get("layers", [])]
    return cls(**kwargs)


@dataclass
class LayerCheck:
    """One analysed layer: where it lives in the graph and whether its codes match.

    `tensor` is None when the layer could not be mapped; `reason` then says why.
    `mismatches` counts code values (not samples) that differ from the model's;
    `max_step` is the largest such difference in quantization steps.
    """

    layer: str
    tensor: str | None
    mismatches: int | None
    i_xt_model: float
    i_xt_graph: float | None
    i_ty_model: float | None
    i_ty_graph: float | None
    n_values: int = 0
    bit_width: int | None = None
    width: int | None = None
    op_type: str | None = None
    max_step: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.tensor is not None
            and self.mismatches == 0
            and self.i_xt_graph == self.i_xt_model
            and self.i_ty_graph == self.i_ty_model
        )


@dataclass
class ExportReport:
    """Result of `verify`: `ok` only if every layer mapped, matched and the outputs agree.

    `max_abs_diff` is max |graph output - model output| over the probe set;
    `output_exact` says whether the output is a quantizer's (then it must be 0)
    or a float tensor (then it must be <= `tolerance`).
    """

    ok: bool
    max_abs_diff: float
    layers: list[LayerCheck]
    onnx_path: str = ""
    format: str = "qonnx"
    n_samples: int = 0
    output_exact: bool = False
    tolerance: float = 0.0
    outputs_ok: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def unmapped(self) -> list[str]:
        return [c.layer for c in self.layers if c.tensor is None]

    @property
    def failed_layers(self) -> list[str]:
        return [c.layer for c in self.layers if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unmapped"] = self.unmapped
        data["failed_layers"] = self.failed_layers
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        return _report_from_dict(cls, LayerCheck, data)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (the format `ExportReport.load` reads)."""
        return _write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ExportReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save_csv(self, path: str | Path) -> Path:
        """One row per layer (the table printed by `str(report)`)."""
        return _write_csv(Path(path), [asdict(c) | {"ok": c.ok} for c in self.layers])

    def __str__(self) -> str:
        header = ["layer", "graph tensor", "op", "bits", "width", "mismatches",
                  "I(X;T) model", "I(X;T) graph", "I(T;Y) model", "I(T;Y) graph", "ok"]
        rows = [
            [c.layer, c.tensor, c.op_type, c.bit_width, c.width, c.mismatches,
             c.i_xt_model, c.i_xt_graph, c.i_ty_model, c.i_ty_graph, c.ok]
            for c in self.layers
        ]
        limit = "must be 0 (quantized output)" if self.output_exact else f"tolerance {self.tolerance:g}"
        lines = [
            f"{self.format.upper()} export check of {self.onnx_path} on {self.n_samples} samples: "
            + ("OK" if self.ok else "FAILED"),
            _table(header, rows),
            f"outputs: max |graph - model| = {self.max_abs_diff:.3g} ({limit}): "
            + ("ok" if self.outputs_ok else "FAILED"),
        ]
        for c in self.layers:
            if c.reason:
                lines.append(f"  {c.layer}: {c.reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class HardwareLayer:
    """One row of the information-versus-hardware-cost table.

    A row is an analysed layer (with I(X;T), I(T;Y)) and/or a FINN hardware
    node (with its estimates); `matched` says whether the node's integer output
    equals the layer's codes up to `offset` (hardware value = code - offset).
    """

    layer: str | None
    hw_node: str | None
    op_type: str | None
    bit_width: int | None
    width: int | None
    i_xt: float | None
    i_ty: float | None
    lut: float | None
    bram: float | None
    dsp: float | None
    cycles: int | None
    datatype: str | None = None
    matched: bool | None = None
    mismatches: int | None = None
    offset: int | None = None
    note: str | None = None


@dataclass
class HardwareReport:
    """FINN step result: bit-exactness of the converted graph and the estimate table."""

    ok: bool
    bit_exact: bool
    max_abs_diff: float
    layers: list[HardwareLayer]
    totals: dict[str, Any]
    fpga_part: str
    clock_ns: float
    n_samples: int = 0
    graph_stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def matched_layers(self) -> list[str]:
        return [r.layer for r in self.layers if r.matched]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["matched_layers"] = self.matched_layers
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareReport:
        return _report_from_dict(cls, HardwareLayer, data)

    def table_rows(self) -> list[dict[str, Any]]:
        """The table as the TensorBoard plugin shows it: same keys in every row."""
        return [
            {"layer": r.layer or "", "hw_node": r.hw_node or "", "bit_width": r.bit_width,
             "width": r.width, "i_xt": r.i_xt, "i_ty": r.i_ty, "lut": _count(r.lut),
             "bram": _count(r.bram), "dsp": _count(r.dsp), "cycles": r.cycles,
             "ints_match": r.matched}
            for r in self.layers
        ]

    def table_totals(self) -> dict[str, Any]:
        t = self.totals
        return {"lut": _count(t.get("lut")), "bram": _count(t.get("bram")), "dsp": _count(t.get("dsp")),
                "fps": t.get("fps"), "latency_ns": t.get("latency_ns"), "fpga_part": self.fpga_part,
                "clock_ns": self.clock_ns, "bit_exact": self.bit_exact}

    def save(self, path: str | Path) -> Path:
        return _write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HardwareReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save_csv(self, path: str | Path) -> Path:
        rows = [asdict(r) for r in self.layers]
        total = {k: None for k in (rows[0] if rows else {})}
        total.update(layer="TOTAL", lut=self.totals.get("lut"), bram=self.totals.get("bram"),
                     dsp=self.totals.get("dsp"), cycles=self.totals.get("max_cycles"),
                     note=f"fps={self.totals.get('fps')} latency_ns={self.totals.get('latency_ns')}")
        return _write_csv(Path(path), rows + [total])

    def __str__(self) -> str:
        header = ["layer", "hw node", "bits", "width", "I(X;T)", "I(T;Y)", "LUT", "BRAM", "DSP",
                  "cycles", "ints match"]
        rows = [
            [r.layer, r.hw_node, r.bit_width, r.width, r.i_xt, r.i_ty, _count(r.lut), _count(r.bram),
             _count(r.dsp), r.cycles, r.matched]
            for r in self.layers
        ]
        t = self.totals
        rows.append(["TOTAL", None, None, None, None, None, _count(t.get("lut")), _count(t.get("bram")),
                     _count(t.get("dsp")), t.get("max_cycles"), None])
        lines = [
            f"FINN estimate ({self.fpga_part}, {self.clock_ns:g} ns clock) on {self.n_samples} samples: "
            + ("OK" if self.ok else "FAILED"),
            _table(header, rows),
            (f"throughput {_fmt(t.get('fps'), 1)} fps, latency {_fmt(t.get('latency_ns'), 1)} ns "
             f"({_fmt(t.get('latency_cycles'))} cycles)"),
            "converted graph vs Brevitas: "
            + ("bit-exact" if self.bit_exact else f"max |diff| {self.max_abs_diff:.3g} (NOT bit-exact)"),
        ]
        for r in self.layers:
            if r.note:
                lines.append(f"  {r.layer or r.hw_node}: {r.note}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
