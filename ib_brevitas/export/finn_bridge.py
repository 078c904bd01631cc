"""Main-environment side of the FINN step: files in, `finn_worker.py` in the FINN venv, files out.

FINN cannot share this environment (see `finn_setup`), so `finn_estimate`
exports the model to QONNX here, runs the worker with the FINN venv's Python
in a subprocess, and then compares what came back with the monitor's codes:

- outputs: the hardware graph's outputs on the probe set against Brevitas'
  (`bit_exact` when equal, else within `verify`'s documented tolerance);
- integers: the k-th activation-carrying hardware node (Thresholding, or an
  MVAU/VVAU with its activation absorbed) is paired with the k-th analysed
  layer in forward order; the pair matches when hardware value = code - offset
  with one integer offset for every value (FINN stores thresholded counts plus
  a bias, so the offset is 0 when the bias equals the quantizer's lowest code).
  A constant offset is a relabelling, so I(X;T) and I(T;Y) are unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ib_brevitas.export.finn_setup import (
    DEFAULT_CLOCK_NS,
    DEFAULT_FPGA_PART,
    VERSAL_FPGA_PART,
    check_env,
    default_env_dir,
    env_python,
    is_versal,
)
from ib_brevitas.export.qonnx import to_qonnx
from ib_brevitas.export.report import HardwareLayer, HardwareReport
from ib_brevitas.export.verify import model_probe, output_tolerance
from ib_brevitas.functional import information_plane_point

WORKER = Path(__file__).with_name("finn_worker.py")
# Float ops FINN builds as PWPolyF layers (piecewise polynomials on Versal's DSPFP32 only).
PWPOLYF_OPS = ("Tanh", "Sigmoid", "Gelu", "Erf", "PWPolyFunction")


class FinnEnvironmentMissing(RuntimeError):
    """The separate FINN environment does not exist or cannot import FINN."""


class FinnPartUnsupported(ValueError):
    """The network has a layer that FINN builds only for another FPGA family than the chosen part."""


def check_part(graph: Any, fpga_part: str) -> None:
    """FinnPartUnsupported, before FINN starts, when the QONNX graph needs a Versal part that was not chosen.

    (FINN itself stops late in its build with `PWPolyF ... only supported on Versal devices`.)
    """
    import onnx

    if is_versal(fpga_part):
        return
    model = onnx.load(str(graph)) if isinstance(graph, (str, Path)) else graph
    ops = sorted({n.op_type for n in model.graph.node if n.op_type in PWPOLYF_OPS})
    if ops:
        raise FinnPartUnsupported(
            f"the network computes {', '.join(ops)} (e.g. tanh activations), which FINN builds as PWPolyF "
            f"layers that exist only on Versal parts, not on {fpga_part}: pass a Versal part, e.g. "
            f"--fpga-part {VERSAL_FPGA_PART} (fpga_part= in Python; its hardware integers then differ from "
            "the analysed ones, see docs/export.md), or use a ReLU network (`ib-brevitas train --activation relu`)"
        )


def check_model_part(model: torch.nn.Module, example: Any, fpga_part: str) -> None:
    """`check_part` for a model (exports it to a scratch QONNX file first; skipped for a Versal part)."""
    import tempfile

    if is_versal(fpga_part):
        return
    with tempfile.TemporaryDirectory(prefix="ib-brevitas-part-") as scratch:
        check_part(to_qonnx(model, example, Path(scratch) / "model.qonnx.onnx"), fpga_part)


def finn_python(env_dir: str | Path | None = None, check: bool = False) -> Path:
    """The FINN venv's Python, or FinnEnvironmentMissing saying how to create it.

    `check=True` also imports FINN there (takes ~10 s).
    """
    env = Path(env_dir).resolve() if env_dir else default_env_dir()
    py = env_python(env)
    problem = None if py.exists() else f"no FINN environment at {env}"
    if problem is None and check:
        ok, msg = check_env(env)
        problem = None if ok else msg
    if problem:
        raise FinnEnvironmentMissing(
            f"{problem}. FINN runs in its own virtual environment (it pins protobuf 5, which "
            f"TensorBoard cannot use). Create it once with `ib-brevitas finn-setup {env}` "
            "(or `make finn-env`; a few minutes and 2.3 GB), or point IB_BREVITAS_FINN_VENV at an "
            "existing one."
        )
    return py


def input_datatype(x: np.ndarray) -> str | None:
    """Smallest QONNX integer DataType holding every probe input, or None if any is not integral.

    FINN can only turn the first layer into a hardware MVAU when its input is
    typed as integers; a {0, 1} input (SYN) becomes BINARY.
    """
    if x.size == 0 or not np.all(np.isfinite(x)) or not np.array_equal(x, np.round(x)):
        return None
    lo, hi = int(x.min()), int(x.max())
    if lo >= 0 and hi <= 1:
        return "BINARY"
    if lo >= -1 and hi <= 1 and not np.any(x == 0):
        return "BIPOLAR"
    for bits in range(2, 33):
        if lo >= 0 and hi < 2**bits:
            return f"UINT{bits}"
        if lo >= -(2 ** (bits - 1)) and hi < 2 ** (bits - 1):
            return f"INT{bits}"
    return None


def run_worker(
    onnx_path: Path,
    inputs_npy: Path,
    out_dir: Path,
    *,
    fpga_part: str = DEFAULT_FPGA_PART,
    clock_ns: float = DEFAULT_CLOCK_NS,
    target_fps: int | None = None,
    input_dt: str | None = None,
    env_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run `finn_worker.py` in the FINN venv; return its results.json or raise with FINN's error."""
    import json

    py = finn_python(env_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(py), str(WORKER), "--onnx", str(onnx_path), "--inputs", str(inputs_npy),
           "--out-dir", str(out_dir), "--fpga-part", fpga_part, "--clock-ns", str(clock_ns)]
    if target_fps:
        cmd += ["--target-fps", str(int(target_fps))]
    if input_dt:
        cmd += ["--input-datatype", input_dt]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    log_path = out_dir / "finn_worker.log"
    print(f"running FINN in {py.parent.parent} (log: {log_path})", file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            for line in proc.stdout:  # progress through to the user, everything into the log
                log.write(line)
                if "[finn-worker]" in line or "Running step" in line:
                    print("  " + line.rstrip().split("] ", 1)[-1], file=sys.stderr, flush=True)
            proc.wait()
        except BaseException:  # Ctrl-C (or anything else) here: the worker does not outlive us
            proc.kill()
            proc.wait()
            raise
    results_path = out_dir / "results.json"
    if not results_path.exists():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"the FINN worker exited with code {proc.returncode} and wrote no results:\n{tail}")
    results = json.loads(results_path.read_text())
    if not results.get("ok"):
        raise RuntimeError(f"FINN could not process the model: {results.get('error')} (full log: {log_path})")
    return results


def _bits(datatype: str | None) -> int | None:
    digits = "".join(c for c in (datatype or "") if c.isdigit())
    if datatype in ("BINARY", "BIPOLAR"):
        return 1
    return int(digits) if digits and not datatype.startswith("FLOAT") else None


def _hw_values(out_dir: Path, row: dict[str, Any], n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Hardware integers (N, width) in the model's layout (FINN keeps conv maps NHWC)."""
    values = np.load(out_dir / row["values"])
    if len(shape) == 4 and values.shape[1] == int(np.prod(shape[1:])):  # (N, C, H, W) analysed
        _, c, h, w = shape
        values = values.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return values.reshape(n, -1)


def compare_integers(codes: np.ndarray, hw: np.ndarray) -> tuple[int, int]:
    """(offset, mismatches): the most common code - hardware difference and how many values differ from it."""
    d = (codes.astype(np.int64) - hw.astype(np.int64)).ravel()
    values, counts = np.unique(d, return_counts=True)
    offset = int(values[np.argmax(counts)])
    return offset, int(np.count_nonzero(d != offset))


def layer_shapes(model: torch.nn.Module, names: list[str], x1: torch.Tensor) -> dict[str, tuple]:
    """Per-sample output shape of each analysed layer (one dry forward, no trace left)."""
    from ib_brevitas.layers import forward_with_proxy_hooks

    modules = dict(model.named_modules())
    shapes: dict[str, tuple] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, out) -> None:
            shapes.setdefault(name, tuple(out.value.shape))

        return hook

    forward_with_proxy_hooks(model, {name: modules[name] for name in names}, hook_for, [x1])
    return shapes


def mismatch_note(codes: np.ndarray, hw: np.ndarray, offset: int, mismatches: int) -> str:
    """How the hardware integers differ from the analysed codes (causes: docs/export.md)."""
    d = np.abs(codes.astype(np.int64) - hw.astype(np.int64) - offset)
    step = " (all by one quantization step)" if d.max(initial=0) <= 1 else f" (by up to {int(d.max())} steps)"
    return f"{mismatches} of {codes.size} integers differ from the analysed codes{step}"


def finn_estimate(
    model: torch.nn.Module,
    inputs: Any,
    out_dir: str | Path,
    labels: Any = None,
    layers: Any = "auto",
    *,
    fpga_part: str = DEFAULT_FPGA_PART,
    clock_ns: float = DEFAULT_CLOCK_NS,
    target_fps: int | None = None,
    env_dir: str | Path | None = None,
    batch_size: int = 1024,
) -> HardwareReport:
    """Run the model through FINN (in its own env) and table information against hardware cost.

    Writes into `out_dir`: model.qonnx.onnx, probe_inputs.npy and worker/
    (the worker's results, log and FINN's build directory). Returns a
    `HardwareReport` (save it with `.save` / `.save_csv`). A network that
    needs a Versal part for `fpga_part` (tanh, sigmoid, GELU: FINN's PWPolyF)
    is refused with `FinnPartUnsupported` before FINN starts.
    """
    import io

    from ib_brevitas.files import atomic_write

    out_dir = Path(out_dir).resolve()
    finn_python(env_dir)  # fail before any work when the env is missing
    plane, stores, ref = model_probe(model, inputs, labels, layers, batch_size)
    x = plane.inputs.cpu().numpy().astype(np.float32)
    n = x.shape[0]
    onnx_path = to_qonnx(model, x[:1], out_dir / "model.qonnx.onnx")
    check_part(onnx_path, fpga_part)  # before FINN starts, not at its specialize step
    buf = io.BytesIO()
    np.save(buf, x)
    atomic_write(out_dir / "probe_inputs.npy", buf.getvalue())
    work = out_dir / "worker"
    results = run_worker(
        onnx_path, out_dir / "probe_inputs.npy", work, fpga_part=fpga_part,
        clock_ns=clock_ns, target_fps=target_fps, input_dt=input_datatype(x), env_dir=env_dir,
    )

    # Graph stages against Brevitas.
    stage_diffs = {}
    for stage, fname in results["stages"].items():
        y = np.load(work / fname).reshape(ref.shape)
        stage_diffs[stage] = float(np.max(np.abs(y.astype(np.float64) - ref.astype(np.float64)), initial=0.0))
    hw_diff = stage_diffs["hw"]
    bit_exact = hw_diff == 0.0
    outputs_ok = hw_diff <= output_tolerance(ref, exact=False)

    # Pair activation nodes with analysed layers, in order.
    act_rows = sorted((r for r in results["hw_nodes"] if r["activation_index"] is not None),
                      key=lambda r: r["activation_index"])
    names = list(stores)
    pairs = {r["name"]: names[k] for k, r in enumerate(act_rows) if k < len(names)}
    y = None if labels is None else plane.labels
    shapes = layer_shapes(model, names, plane.inputs[:1].to(plane.device))

    rows: list[HardwareLayer] = []
    seen_layers = set()
    for r in results["hw_nodes"]:
        layer = pairs.get(r["name"])
        row = HardwareLayer(
            layer=layer, hw_node=r["specialized"] or r["name"], op_type=r["op_type"],
            bit_width=_bits(r["datatype"]), width=r["width"], i_xt=None, i_ty=None,
            lut=r["lut"], bram=r["bram"], dsp=r["dsp"], cycles=r["cycles"], datatype=r["datatype"],
        )
        if layer is not None:
            seen_layers.add(layer)
            store = stores[layer]
            codes = store.unpack()
            point = information_plane_point(store.rows, plane.labels)  # as the monitor counts
            row.bit_width, row.width = store.bit_width, store.width
            row.i_xt, row.i_ty = point.h_t, (None if y is None else point.i_ty)
            hw = _hw_values(work, r, n, shapes[layer])
            if hw.shape != codes.shape:
                row.matched = False
                row.note = f"hardware output has {hw.shape[1]} values per sample, the layer {codes.shape[1]}"
            else:
                row.offset, row.mismatches = compare_integers(codes, hw)
                row.matched = row.mismatches == 0
                if not row.matched:
                    row.note = mismatch_note(codes, hw, row.offset, row.mismatches)
        elif r["activation_index"] is not None:
            row.note = "activation node with no analysed layer left to pair with"
        rows.append(row)
    for name in names:
        if name not in seen_layers:
            store = stores[name]
            point = information_plane_point(store.rows, plane.labels)
            rows.append(HardwareLayer(
                layer=name, hw_node=None, op_type=None, bit_width=store.bit_width, width=store.width,
                i_xt=point.h_t, i_ty=None if y is None else point.i_ty, lut=None, bram=None, dsp=None,
                cycles=None, matched=False,
                note="no hardware activation node carries this layer (FINN absorbed or did not convert it)",
            ))
    all_matched = all(r.matched for r in rows if r.layer is not None)
    notes = ["graph outputs vs Brevitas, max |diff|: " + ", ".join(f"{k} {v:.3g}" for k, v in stage_diffs.items())]
    if labels is None:
        notes.append("no labels given: I(T;Y) not computed")
    return HardwareReport(
        ok=bool(outputs_ok and all_matched), bit_exact=bool(bit_exact), max_abs_diff=hw_diff, layers=rows,
        totals=results["totals"], fpga_part=fpga_part, clock_ns=float(clock_ns), n_samples=n,
        graph_stages=stage_diffs, notes=notes,
    )
