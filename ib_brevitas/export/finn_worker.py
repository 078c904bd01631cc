"""FINN step, run INSIDE the FINN environment (`python finn_worker.py ...`), never imported by ib_brevitas.

It only needs finn-plus, qonnx and numpy, so it runs as a plain script
with no ib_brevitas installed. Files in, files out (see `finn_bridge`):

in:  a cleaned QONNX file (batch 1), the probe inputs (.npy)
out: OUT_DIR/results.json, the probe-set outputs of each graph stage
     (stage_<name>.npy) and of every activation-carrying hardware node
     (act_<k>.npy, integers), and FINN's own build directory.

Steps: FINN's estimate-only builder (QONNX -> FINN-ONNX, tidy-up, streamline,
convert to hardware layers, partition, specialize, folding, estimate
reports) with the intermediate models saved; then the FINN-ONNX, streamlined
and hardware graphs are executed in Python on the probe set. Specialized
`_hls`/`_rtl` layers are not executed: that needs Vivado (cppsim/rtlsim).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

# Run as a script, Python puts this directory first on sys.path, where our own
# `qonnx.py` would shadow the qonnx package: drop it before importing anything else.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402 - after the sys.path fix above

# Hardware nodes whose output is the result of a quantized activation (thresholds).
THRESHOLD_OPS = ("Thresholding", "Requant")
MATRIX_OPS = ("MVAU", "VVAU")
STAGES = {  # report name -> builder intermediate model
    "finn_onnx": "step_qonnx_to_finn",
    "streamlined": "step_streamline",
    "hw": "step_convert_to_hw",
}


def log(msg: str) -> None:
    print(f"[finn-worker] {msg}", flush=True)


def prepare_finn_imports(build_dir: Path) -> None:
    """Make the estimate-only builder importable without Vivado (facts: docs/export.md)."""
    os.environ.setdefault("FINN_BUILD_DIR", str(build_dir))
    os.environ.setdefault("XILINX_VIVADO", "/nonexistent-vivado")  # only read for build metadata
    build_dir.mkdir(parents=True, exist_ok=True)
    import finn.xsi

    finn.xsi.SimEngine = None  # the builder imports it; it needs Vivado's simulator


def drop_noop_casts(model) -> None:
    """Remove float->float Cast nodes (`x.float()` in a forward); FINN cannot convert them."""
    from onnx import TensorProto

    for node in list(model.graph.node):
        if node.op_type != "Cast":
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if to != TensorProto.FLOAT:
            continue
        src, dst = node.input[0], node.output[0]
        if dst in [o.name for o in model.graph.output]:
            continue
        for other in model.graph.node:
            for i, name in enumerate(other.input):
                if name == dst:
                    other.input[i] = src
        model.graph.node.remove(node)


def run_build(onnx_in: Path, out_dir: Path, fpga_part: str, clock_ns: float, target_fps) -> Path:
    """FINN's estimate-only build; returns its output dir or raises with FINN's error."""
    import finn.builder.build_dataflow_config as bc
    from finn.builder.build_dataflow import build_dataflow_cfg

    build_out = out_dir / "finn_build"
    cfg = bc.DataflowBuildConfig(
        output_dir=str(build_out),
        synth_clk_period_ns=float(clock_ns),
        fpga_part=fpga_part,
        target_fps=target_fps,
        steps=list(bc.estimate_only_dataflow_steps),
        generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS],
        save_intermediate_models=True,
    )
    rc = build_dataflow_cfg(str(onnx_in), cfg)
    if rc != 0:
        log_file = build_out / "build_dataflow.log"
        lines = log_file.read_text().strip().splitlines() if log_file.exists() else []
        errors = [line for line in lines if "ERROR" in line]
        raise RuntimeError("FINN's estimate-only build failed: " + "\n".join(errors[-3:] or lines[-15:]))
    return build_out


def _rebatched(model, n: int):
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    return model.transform(ChangeBatchSize(n)).transform(InferShapes())


def execute_batched(model, x: np.ndarray) -> np.ndarray:
    """Whole probe set at once (standard + qonnx ops only; FINN-ONNX and streamlined graphs)."""
    from qonnx.core.onnx_exec import execute_onnx

    wide = _rebatched(model, x.shape[0])
    ctx = execute_onnx(wide, {wide.graph.input[0].name: x})
    return ctx[wide.graph.output[0].name]


def execute_per_sample(model, x: np.ndarray, keep: list[str], label: str) -> dict[str, np.ndarray]:
    """Hardware graph, one sample at a time (HW layers fix their batch in attributes).

    Node instances and the initializer context are built once and node
    attributes are memoised (nothing changes them while executing; parsing
    them on every call was 3/4 of the time), so each sample costs little more
    than the nodes' own numpy work.
    """
    import functools

    from qonnx.core.onnx_exec import execute_node
    from qonnx.custom_op.registry import getCustomOp

    inp, out = model.graph.input[0].name, model.graph.output[0].name
    base = model.make_empty_exec_context()
    steps = []
    for node in model.graph.node:
        try:
            op = getCustomOp(node)
            op.get_nodeattr = functools.lru_cache(maxsize=None)(op.get_nodeattr)
            steps.append(lambda ctx, op=op: op.execute_node(ctx, model.graph))
        except Exception:  # noqa: BLE001 - a standard ONNX op left in the graph
            steps.append(lambda ctx, node=node: execute_node(node, ctx, model.graph, 13))
    results: dict[str, list[np.ndarray]] = {name: [] for name in [out, *keep]}
    n = x.shape[0]
    start = time.time()
    for i in range(n):
        ctx = dict(base)
        ctx[inp] = x[i : i + 1]
        for step in steps:
            step(ctx)
        for name, kept in results.items():
            kept.append(np.asarray(ctx[name]))
        if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
            log(f"{label}: {i + 1}/{n} samples ({time.time() - start:.1f} s)")
    return {name: np.concatenate(v) for name, v in results.items()}


def activation_nodes(model) -> list:
    """Hardware nodes whose output is a quantized activation, in graph order."""
    from qonnx.custom_op.registry import getCustomOp

    found = []
    for node in model.graph.node:
        absorbed = node.op_type in MATRIX_OPS and getCustomOp(node).get_nodeattr("noActivation") == 0
        if node.op_type in THRESHOLD_OPS or absorbed:
            found.append(node)
    return found


def read_estimates(build_out: Path) -> tuple[dict, dict, dict]:
    report = build_out / "report"
    resources = json.loads((report / "estimate_layer_resources.json").read_text())
    cycles = json.loads((report / "estimate_layer_cycles.json").read_text())
    perf = json.loads((report / "estimate_network_performance.json").read_text())
    return resources, cycles, perf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, type=Path)
    p.add_argument("--inputs", required=True, type=Path, help=".npy probe inputs, float32 (N, ...)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--input-datatype", default=None, help="QONNX DataType of the graph input, e.g. BINARY")
    p.add_argument("--fpga-part", default="xc7z020clg400-1")
    p.add_argument("--clock-ns", type=float, default=10.0)
    p.add_argument("--target-fps", type=int, default=None)
    args = p.parse_args(argv)

    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"ok": False, "error": None, "fpga_part": args.fpga_part, "clock_ns": args.clock_ns,
                    "target_fps": args.target_fps, "seconds": {}}
    try:
        t0 = time.time()
        prepare_finn_imports(out_dir / "finn_tmp")
        import finn
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper

        result["finn_version"] = getattr(finn, "__version__", "finn-plus")
        model = ModelWrapper(str(args.onnx))
        drop_noop_casts(model)
        if args.input_datatype:
            model.set_tensor_datatype(model.graph.input[0].name, DataType[args.input_datatype])
        onnx_in = out_dir / "finn_input.onnx"
        model.save(str(onnx_in))

        log(f"estimate-only build for {args.fpga_part} at {args.clock_ns:g} ns")
        build_out = run_build(onnx_in, out_dir, args.fpga_part, args.clock_ns, args.target_fps)
        result["seconds"]["build"] = round(time.time() - t0, 2)

        x = np.load(args.inputs).astype(np.float32)
        inter = build_out / "intermediate_models"
        stage_files = {}
        for stage, step in STAGES.items():
            t = time.time()
            stage_model = ModelWrapper(str(inter / f"{step}.onnx"))
            if stage == "hw":
                acts = activation_nodes(stage_model)
                values = execute_per_sample(stage_model, x, [n.output[0] for n in acts], "hardware graph")
                y = values[stage_model.graph.output[0].name]
            else:
                y = execute_batched(stage_model, x)
            stage_files[stage] = f"stage_{stage}.npy"
            np.save(out_dir / stage_files[stage], y)
            result["seconds"][f"execute_{stage}"] = round(time.time() - t, 2)
            log(f"executed {stage} graph on {x.shape[0]} samples in {time.time() - t:.1f} s")
        result["stages"] = stage_files

        # Estimates are keyed by specialized names (MVAU_hls_0); output tensors link them to HW nodes.
        resources, cycles, perf = read_estimates(build_out)
        final = ModelWrapper(str(inter / "step_generate_estimate_reports.onnx"))
        by_output = {n.output[0]: n for n in final.graph.node}
        hw_model = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
        act_names = {n.name: k for k, n in enumerate(activation_nodes(hw_model))}
        rows = []
        for node in hw_model.graph.node:
            spec = by_output.get(node.output[0])
            res = resources.get(spec.name, {}) if spec is not None else {}
            row = {
                "name": node.name, "op_type": node.op_type,
                "specialized": spec.name if spec is not None else None,
                "output": node.output[0],
                "datatype": str(final.get_tensor_datatype(node.output[0]) if spec is not None
                                else hw_model.get_tensor_datatype(node.output[0])),
                "width": int(np.prod(hw_model.get_tensor_shape(node.output[0])[1:])),
                "lut": res.get("LUT"), "bram": res.get("BRAM_18K"), "dsp": res.get("DSP"),
                "uram": res.get("URAM"),
                "cycles": cycles.get(spec.name) if spec is not None else None,
                "activation_index": act_names.get(node.name),
                "values": None,
            }
            if node.name in act_names:
                row["values"] = f"act_{act_names[node.name]}.npy"
                codes = values[node.output[0]].reshape(x.shape[0], -1)
                np.save(out_dir / row["values"], np.rint(codes).astype(np.int64))
            rows.append(row)
        total = resources.get("total", {})
        result["hw_nodes"] = rows
        result["totals"] = {
            "lut": total.get("LUT"), "bram": total.get("BRAM_18K"), "dsp": total.get("DSP"),
            "uram": total.get("URAM"), "max_cycles": perf.get("max_cycles"),
            "latency_cycles": perf.get("critical_path_cycles"),
            "fps": perf.get("estimated_throughput_fps"), "latency_ns": perf.get("estimated_latency_ns"),
        }
        result["n_samples"] = int(x.shape[0])
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported through results.json; the bridge raises with this text
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        log(result["error"])
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
