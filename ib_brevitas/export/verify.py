"""`verify`: run an exported graph on the probe set and check it carries the analysed integers.

For every analysed layer we find the graph tensor that its quantizer produced
(the node tagged with the layer's proxy scope, see `qonnx.node_scope`), recover
integer codes from it and compare them with the codes the monitor reads from
Brevitas (`QuantTensor.int()`):

- QONNX `Quant(x, scale, zero_point, bits)` outputs (q - z) * scale, so
  code = output / scale + zero_point; `BipolarQuant` outputs +-scale, code +-1.
  Codes must be integral to within 1e-3 before rounding, else the layer fails.
- QCDQ: the code is the QuantizeLinear output (or the Clip after it, below 8 bits).

Outputs: if the graph output is a quantizer's, it must equal the model's output
exactly; otherwise max |diff| <= ATOL + RTOL * max |model output|.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from ib_brevitas.codes import PackedCodes
from ib_brevitas.export.qonnx import QONNX_QUANT_OPS, node_scope
from ib_brevitas.export.report import ExportReport, LayerCheck
from ib_brevitas.functional import information_plane_point
from ib_brevitas.layers import quant_proxy_attr

RTOL = 1e-5  # float outputs: relative to the largest |model output|
ATOL = 1e-6
INTEGRAL_TOL = 1e-3  # how far value/scale + zero_point may sit from an integer
# Float functions whose runtime implementations are not bit-identical to PyTorch's.
FLOAT_FUNCTIONS = ("Tanh", "Sigmoid", "Softmax", "Exp", "Log", "Erf", "HardSigmoid")


proxy_attr = quant_proxy_attr  # the name verify has always used


def locate(graph: onnx.GraphProto, scope: str, fmt: str) -> tuple[onnx.NodeProto | None, str]:
    """The node whose output carries the codes of quantizer `scope`, or (None, reason)."""
    ops = QONNX_QUANT_OPS if fmt == "qonnx" else ("QuantizeLinear",)
    found = [
        n for n in graph.node
        if n.op_type in ops and (node_scope(n) == scope or node_scope(n).startswith(scope + "."))
    ]
    if not found:
        return None, (
            f"no {'/'.join(ops)} node from quantizer {scope!r} in the graph: export the file "
            "with ib_brevitas.export.to_qonnx/to_qcdq (or Brevitas' exporter) from this very model"
        )
    node = found[-1]
    if fmt == "qcdq":  # below 8 bits Brevitas clips the int8 code right after QuantizeLinear
        consumers = [n for n in graph.node if node.output[0] in n.input]
        clip = [n for n in consumers if n.op_type == "Clip"]
        if clip:
            node = clip[0]
    return node, ""


def graph_format(model: onnx.ModelProto) -> str:
    ops = {n.op_type for n in model.graph.node}
    if ops & set(QONNX_QUANT_OPS):
        return "qonnx"
    if "QuantizeLinear" in ops:
        return "qcdq"
    raise ValueError(
        "the ONNX file holds no Quant/BipolarQuant (QONNX) nor QuantizeLinear (QCDQ) nodes, so no "
        "layer's integers can be read from it; export with to_qonnx or to_qcdq"
    )


def _rebatch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """Copy of `model` with batch size `batch` (graph input/output and Reshape constants)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(onnx.ModelProto.FromString(model.SerializeToString()))
    wrapped = wrapped.transform(ChangeBatchSize(batch))
    return wrapped.transform(InferShapes()).model


class _QonnxRunner:
    """Executes a QONNX graph node by node with qonnx; returns every tensor asked for."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self._by_batch: dict[int, Any] = {}

    def __call__(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx

        if x.shape[0] not in self._by_batch:
            self._by_batch[x.shape[0]] = ModelWrapper(_rebatch(self.model, x.shape[0]))
        wrapped = self._by_batch[x.shape[0]]
        inp = wrapped.graph.input[0].name
        ctx = execute_onnx(wrapped, {inp: x}, return_full_exec_context=True)
        return {n: ctx[n] for n in names}


class _OrtRunner:
    """Executes a standard (QCDQ) graph in onnxruntime with the code tensors as extra outputs."""

    def __init__(self, model: onnx.ModelProto, names: list[str]):
        import onnxruntime as ort

        model = onnx.ModelProto.FromString(model.SerializeToString())
        inits = {i.name for i in model.graph.initializer}  # old exporters list weights as inputs too
        data_inputs = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(data_inputs)
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
        for node in model.graph.node:  # let Reshape follow the batch size
            if node.op_type == "Reshape":
                for init in model.graph.initializer:
                    if init.name == node.input[1]:
                        shape = onnx.numpy_helper.to_array(init).copy()
                        shape[0] = 0 if -1 in shape[1:] else -1  # 0: copy the input's batch dimension
                        init.CopyFrom(onnx.numpy_helper.from_array(shape, init.name))
        del model.graph.value_info[:]
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        present = {o.name for o in model.graph.output}
        for name in names:
            if name not in present:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.input = model.graph.input[0].name

    def __call__(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        out = self.session.run(names, {self.input: x})
        return dict(zip(names, out))


def _codes_from(node: onnx.NodeProto, ctx: dict[str, np.ndarray], fmt: str) -> np.ndarray:
    """Integer codes (N, width) from the quantizer node's output, or ValueError if not integral."""
    y = np.asarray(ctx[node.output[0]])
    if fmt == "qcdq":
        return y.reshape(y.shape[0], -1).astype(np.int64)
    scale = np.asarray(ctx[node.input[1]], dtype=np.float64)
    zero = np.asarray(ctx[node.input[2]], dtype=np.float64) if node.op_type == "Quant" else 0.0
    raw = y.astype(np.float64) / scale + zero
    codes = np.round(raw)
    worst = float(np.max(np.abs(raw - codes))) if raw.size else 0.0
    if not worst <= INTEGRAL_TOL:
        raise ValueError(f"value/scale + zero_point is not integral (off by up to {worst:.3g})")
    return codes.reshape(codes.shape[0], -1).astype(np.int64)


def model_probe(model: torch.nn.Module, inputs: Any, labels: Any, layers: Any, batch_size: int):
    """One monitored probe pass: (monitor, packed codes per layer, model outputs as numpy).

    The codes are the monitor's own (exactly what the information plane counts);
    the outputs are caught by a hook during the same pass.
    """
    from ib_brevitas.monitor import InformationPlane

    probe_labels = np.zeros(len(inputs), dtype=np.int64) if labels is None else labels
    plane = InformationPlane(model, inputs, probe_labels, layers=layers, batch_size=batch_size)
    outs: list[np.ndarray] = []

    def keep(_module, _inputs, out):
        if isinstance(out, (tuple, list)):
            out = out[0]
        outs.append(getattr(out, "value", out).detach().cpu().numpy())

    handle = model.register_forward_hook(keep)
    try:
        stores = plane.collect()
    finally:
        handle.remove()
    return plane, stores, np.concatenate(outs)


def output_tolerance(ref: np.ndarray, exact: bool) -> float:
    """0 for a quantizer's output, else ATOL + RTOL * max |model output|."""
    return 0.0 if exact else ATOL + RTOL * float(np.abs(ref).max(initial=0.0))


def verify(
    model: torch.nn.Module,
    onnx_path: str | Path,
    inputs: Any,
    labels: Any = None,
    layers: Any = "auto",
    batch_size: int = 1024,
) -> ExportReport:
    """Check that the graph at `onnx_path` computes the model's outputs and analysed integer codes.

    `inputs`/`labels` are the probe set (labels optional: without them I(T;Y)
    is not compared). `layers` as for `InformationPlane`. Returns an
    `ExportReport`; `report.ok` is False on any mismatch, unmapped layer or
    output difference beyond the documented tolerance.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ValueError(f"ONNX file {str(onnx_path)!r} does not exist; export it first with to_qonnx")
    graph_model = onnx.load(str(onnx_path))
    fmt = graph_format(graph_model)

    plane, stores, ref = model_probe(model, inputs, labels, layers, batch_size)
    x = plane.inputs
    modules = dict(model.named_modules())

    # Graph side: which node carries which layer.
    checks: dict[str, LayerCheck] = {}
    nodes: dict[str, onnx.NodeProto] = {}
    for name, store in stores.items():
        node, reason = locate(graph_model.graph, f"{name}.{proxy_attr(modules[name])}", fmt)
        checks[name] = LayerCheck(
            layer=name, tensor=node.output[0] if node else None, mismatches=None,
            i_xt_model=0.0, i_xt_graph=None, i_ty_model=None, i_ty_graph=None,
            n_values=store.n_samples * store.width, bit_width=store.bit_width, width=store.width,
            op_type=node.op_type if node else None, reason=reason or None,
        )
        if node is not None:
            nodes[name] = node
    out_name = graph_model.graph.output[0].name
    producer = next((n for n in graph_model.graph.node if out_name in n.output), None)
    output_exact = producer is not None and producer.op_type in (*QONNX_QUANT_OPS, "DequantizeLinear")

    # Run the graph chunk by chunk; compare each chunk's codes with the model's as they come and
    # keep the graph's codes packed like the monitor's (memory: N x width x bits / 8).
    wanted = sorted({out_name} | {t for n in nodes.values() for t in (*n.input[1:3], n.output[0])} - {""})
    if fmt == "qonnx":
        runner = _QonnxRunner(graph_model)
    else:
        wanted = sorted({out_name} | {n.output[0] for n in nodes.values()})
        runner = _OrtRunner(graph_model, wanted)
    xs = x.cpu().numpy().astype(np.float32)
    n = xs.shape[0]
    graph_stores = {
        name: PackedCodes(name, n, stores[name].width, stores[name].bit_width, stores[name].signed)
        for name in nodes
    }
    outs = []
    bad: dict[str, str] = {}
    for start in tqdm(range(0, n, batch_size), desc=f"executing {fmt} graph", leave=False,
                      disable=n <= batch_size):
        ctx = runner(xs[start : start + batch_size], wanted)
        outs.append(ctx[out_name])
        for name, node in nodes.items():
            if name in bad:
                continue
            check = checks[name]
            try:
                codes = _codes_from(node, ctx, fmt)
                if codes.shape[1] != check.width:
                    raise ValueError(f"holds {codes.shape[1]} values per sample, the layer {check.width}")
                graph_stores[name].append(torch.from_numpy(codes))  # refuses codes outside the bit width
            except ValueError as exc:
                bad[name] = f"graph tensor {node.output[0]!r}: {exc}"
                continue
            diff = np.abs(codes - stores[name].unpack(start, start + codes.shape[0]))
            check.mismatches = (check.mismatches or 0) + int(np.count_nonzero(diff))
            check.max_step = max(check.max_step or 0, int(diff.max(initial=0)))
    graph_out = np.concatenate(outs).reshape(ref.shape) if outs else ref
    diff = np.abs(graph_out.astype(np.float64) - ref.astype(np.float64))
    max_abs_diff = float(diff.max()) if diff.size else 0.0
    tolerance = output_tolerance(ref, output_exact)
    outputs_ok = bool(max_abs_diff <= tolerance)

    # Information from both sides, counted on packed rows exactly as the monitor counts it.
    y = None if labels is None else plane.labels
    for name, store in stores.items():
        check = checks[name]
        model_point = information_plane_point(store.rows, plane.labels)
        check.i_xt_model = model_point.h_t
        check.i_ty_model = None if y is None else model_point.i_ty
        if name in bad:
            check.mismatches, check.max_step, check.reason = None, None, bad[name]
            continue
        if name not in nodes:
            continue
        graph_point = information_plane_point(graph_stores[name].rows, plane.labels)
        check.i_xt_graph = graph_point.h_t
        check.i_ty_graph = None if y is None else graph_point.i_ty
        if check.mismatches:
            check.reason = (
                f"{check.mismatches} of {check.n_values} code values differ from the model's "
                f"(by up to {check.max_step} step{'s' if check.max_step > 1 else ''})"
            )

    layer_list = [checks[name] for name in stores]
    ok = outputs_ok and all(c.ok for c in layer_list)
    notes = [] if labels is not None else ["no labels given: I(T;Y) not compared"]
    float_ops = sorted({n.op_type for n in graph_model.graph.node} & set(FLOAT_FUNCTIONS))
    if float_ops and any(c.mismatches for c in layer_list):
        notes.append(
            f"the graph computes {', '.join(float_ops)} in float: the runtime's implementation may "
            "differ from PyTorch's in the last bit, which moves a value sitting exactly on a rounding "
            "boundary to the neighbouring code (one step; see docs/export.md)"
        )
    return ExportReport(
        ok=ok, max_abs_diff=max_abs_diff, layers=layer_list, onnx_path=str(onnx_path), format=fmt,
        n_samples=n, output_exact=output_exact, tolerance=tolerance, outputs_ok=outputs_ok, notes=notes,
    )
