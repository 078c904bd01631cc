"""`ib-brevitas export RUN_DIR`: export a run's model and prove the graph carries its integers.

Any run directory the library writes (`export.run.load_run`: the model from
config.json's factory or model.pt, the checkpoint's weights, the run's probe
set), exported to QONNX or QCDQ and checked by `verify` on the whole probe set
(SYN: all 4096 samples); with --finn, the FINN estimate in the separate FINN
environment, after checking first that FINN can build the network for the
chosen part. Reports are printed and saved under RUN_DIR/export/ (atomically);
the hardware table also goes to the run's TensorBoard data. This module stays
light (no torch) so that `--help` is instant.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ib_brevitas.export.finn_setup import (
    DEFAULT_CLOCK_NS,
    DEFAULT_FPGA_PART,
    VERSAL_FPGA_PART,
)

PROG = "ib-brevitas export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path,
                        help="a run directory written by ib-brevitas (train, the Lightning callback, RunDir)")
    parser.add_argument("--format", choices=["qonnx", "qcdq"], default="qonnx",
                        help="ONNX flavour to export and verify (default: qonnx)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to export (default: RUN_DIR/checkpoints/last.pt)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="where to write the ONNX file (default: RUN_DIR/export/model.<format>.onnx)")
    parser.add_argument("--finn", action="store_true",
                        help="also run FINN (separate env, see `ib-brevitas finn-setup`): hardware "
                        "graph bit-exactness and the information-versus-hardware-cost table")
    parser.add_argument("--fpga-part", default=DEFAULT_FPGA_PART,
                        help=f"FPGA part (default: {DEFAULT_FPGA_PART}); tanh/sigmoid/GELU networks need a Versal "
                        f"part, e.g. {VERSAL_FPGA_PART}")
    parser.add_argument("--clock-ns", type=float, default=DEFAULT_CLOCK_NS,
                        help=f"target clock period in ns (default: {DEFAULT_CLOCK_NS:g})")
    parser.add_argument("--target-fps", type=int, default=None,
                        help="let FINN fold layers for this throughput (default: no folding, PE=SIMD=1)")
    parser.add_argument("--finn-env", type=Path, default=None,
                        help="FINN virtual environment (default: .venv-finn or $IB_BREVITAS_FINN_VENV)")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse impossible numbers before anything is read or written (exit 2)."""
    if not math.isfinite(args.clock_ns) or args.clock_ns <= 0:
        raise ValueError(f"--clock-ns must be a positive number of nanoseconds, got {args.clock_ns}")
    if args.target_fps is not None and args.target_fps < 1:
        raise ValueError(f"--target-fps must be >= 1, got {args.target_fps}")
    if args.output is not None and args.output.is_dir():
        raise ValueError(f"-o {args.output} is a directory; pass the ONNX file to write")


def compare_with_log(rd, report, epoch: int) -> str | None:
    """Say whether the graph's MI equals, exactly, what training logged in mi.jsonl at this epoch."""
    try:
        logged = {r.layer: r for r in rd.read_records() if r.epoch == epoch}
    except ValueError as e:  # a damaged log does not stop the export; say why nothing is compared
        return f"not compared with the training log: {e}"
    if not logged:
        return None
    same = [
        c.layer for c in report.layers
        if c.layer in logged and c.i_xt_graph == logged[c.layer].i_xt and c.i_ty_graph == logged[c.layer].i_ty
    ]
    verdict = "equal" if len(same) == len(report.layers) else f"equal for {same} only"
    return f"graph I(X;T), I(T;Y) vs mi.jsonl at epoch {epoch}: {verdict}"


def write_tensorboard(run_dir: Path, report, epoch: int) -> None:
    """Put the hardware table into the run's TensorBoard data (the plugin shows the latest)."""
    from ib_brevitas.tensorboard.summary import TensorBoardSink

    rows, totals = report.table_rows(), report.table_totals()
    with TensorBoardSink(log_dir=run_dir) as sink:
        sink.write_hardware_table(rows, totals, step=epoch)


def run(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")  # brevitas' import chatter
    from ib_brevitas.cli import error
    from ib_brevitas.export import finn_bridge
    from ib_brevitas.export.qonnx import to_qcdq, to_qonnx
    from ib_brevitas.export.run import load_run
    from ib_brevitas.export.verify import verify

    check_arguments(args)
    run = load_run(args.run_dir, args.checkpoint)  # RunDirError (exit 2) names the file and what to do
    model, x, y, epoch, rd = run.model, run.inputs, run.labels, run.epoch, run.run_dir
    if args.finn:  # everything FINN needs, checked before any work starts
        try:
            finn_bridge.finn_python(args.finn_env)
        except finn_bridge.FinnEnvironmentMissing as exc:
            error(PROG, str(exc))
            return 2
        finn_bridge.check_model_part(model, x[:1], args.fpga_part)  # FinnPartUnsupported: exit 2
    out_dir = rd.export_dir
    onnx_path = args.output or out_dir / f"model.{args.format}.onnx"
    exporter = to_qonnx if args.format == "qonnx" else to_qcdq
    exporter(model, x[:1], onnx_path)
    print(f"exported epoch {epoch} of {rd.path.name} to {onnx_path}")

    report = verify(model, onnx_path, x, y)
    print(report)
    logged = compare_with_log(rd, report, epoch)
    if logged:
        print(logged)
    report.save(out_dir / f"verify_{args.format}.json")
    report.save_csv(out_dir / f"verify_{args.format}.csv")
    ok = report.ok

    if args.finn:
        try:
            hw = finn_bridge.finn_estimate(
                model, x, out_dir / "finn", labels=y, fpga_part=args.fpga_part,
                clock_ns=args.clock_ns, target_fps=args.target_fps, env_dir=args.finn_env,
            )
        except RuntimeError as exc:  # FINN's own error, with its log
            error(f"{PROG} --finn", str(exc))
            return 1
        print(hw)
        hw.save(out_dir / "hardware.json")
        hw.save_csv(out_dir / "hardware.csv")
        write_tensorboard(rd.path, hw, epoch)
        ok = ok and hw.ok
    print(f"reports saved in {out_dir}")
    return 0 if ok else 1
