"""Export a Brevitas model to QONNX or QCDQ ONNX, tagged so layers can be found again.

Brevitas' exporters name each node after the module that emitted it
(TorchScript: `/T1/act_quant/export_handler/Quant`; dynamo: the
`pkg.torch.onnx.name_scopes` metadata). qonnx's cleanup renames nodes to
`Quant_0`..., so before cleaning up we copy that module path into each node's
metadata (`ib_brevitas.scope`); `verify` and the FINN worker read it back to
find the graph tensor that carries an analysed layer.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from ib_brevitas.state import observation

SCOPE_KEY = "ib_brevitas.scope"
# QONNX ops whose output is a quantizer's integer grid times its scale.
QONNX_QUANT_OPS = ("Quant", "BipolarQuant")


def node_scope(node: onnx.NodeProto) -> str:
    """Dotted module path of the module that emitted `node` ('' for the top level).

    Reads, in order: our own tag, the dynamo exporter's name scopes, the
    TorchScript exporter's `/a/b/Op` node name.
    """
    meta = {p.key: p.value for p in node.metadata_props}
    if SCOPE_KEY in meta:
        return meta[SCOPE_KEY]
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        # cumulative dotted module paths ('', 'a', 'a.b', ...) then the op's own short name
        scope = ""
        for entry in ast.literal_eval(scopes)[:-1]:
            if entry and (not scope or entry.startswith(scope + ".")):
                scope = entry
        return scope
    if node.name.startswith("/"):
        return ".".join(node.name.split("/")[1:-1])
    return ""


def tag_scopes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Write each node's module path into its metadata so it survives renaming."""
    for node in model.graph.node:
        scope = node_scope(node)
        if not any(p.key == SCOPE_KEY for p in node.metadata_props):
            entry = node.metadata_props.add()
            entry.key, entry.value = SCOPE_KEY, scope
    return model


def _example(model: torch.nn.Module, example_input: Any) -> torch.Tensor:
    x = torch.as_tensor(example_input)
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    param = next(model.parameters(), None)
    return x.to(param.device) if param is not None else x


def _export(exporter, model, example_input, path, dynamo: bool, **kwargs) -> onnx.ModelProto:
    """The exporter writes into a scratch directory; only `_save` writes `path` (atomically)."""
    import tempfile

    x = _example(model, example_input)
    with tempfile.TemporaryDirectory(prefix="ib-brevitas-export-") as scratch:
        raw = Path(scratch) / Path(path).name
        with observation(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # opset/TorchScript-deprecation chatter, not the user's concern
            exporter(model, x, str(raw), dynamo=dynamo, **kwargs)
        return onnx.load(str(raw))  # pulls in `.onnx.data` external weights if dynamo wrote any


def _save(model: onnx.ModelProto, path: Path) -> Path:
    """One self-contained file (no external data) so Netron and FINN open it directly; atomic."""
    from ib_brevitas.files import atomic_write

    atomic_write(path, model.SerializeToString())
    return path


def to_qonnx(
    model: torch.nn.Module, example_input: Any, path: str | Path, dynamo: bool = False
) -> Path:
    """Export `model` to QONNX at `path` and clean it up with qonnx; return the path.

    `example_input` fixes the graph's input shape; use one sample (batch 1) for
    FINN. `verify` re-batches the graph itself. The model's train/eval flags and
    statistics are left as they were. `dynamo=False` (TorchScript exporter) is
    the default because it is ~8x faster here and gives the same graph.
    """
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    raw = tag_scopes(_export(export_qonnx, model, example_input, path, dynamo))
    clean = cleanup_model(ModelWrapper(raw))
    return _save(clean.model, path)


def to_qcdq(
    model: torch.nn.Module, example_input: Any, path: str | Path, dynamo: bool = False
) -> Path:
    """Export `model` to standard ONNX with QuantizeLinear/Clip/DequantizeLinear; return the path.

    Runs in onnxruntime; quantizers below 8 bits appear as a Clip after
    QuantizeLinear. Binary (1-bit) quantizers have no QCDQ form: use QONNX.
    """
    from brevitas.export import export_onnx_qcdq

    path = Path(path)
    raw = tag_scopes(_export(export_onnx_qcdq, model, example_input, path, dynamo))
    return _save(raw, path)
