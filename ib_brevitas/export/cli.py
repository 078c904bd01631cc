"""`ib-brevitas export RUN_DIR`: export a training run's model and prove the graph carries its integers.

Rebuilds the run's model from config.json, loads its checkpoint, exports it
(QONNX or QCDQ), runs `verify` on the run's probe set (SYN: all 4096 samples)
and, with --finn, the FINN estimate in the separate FINN environment. Reports
are printed and saved under RUN_DIR/export/; the hardware table also goes to
the run's TensorBoard data (shown under the information plane).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ib_brevitas.export.finn_setup import DEFAULT_CLOCK_NS, DEFAULT_FPGA_PART


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory written by `ib-brevitas train`")
    parser.add_argument("--format", choices=["qonnx", "qcdq"], default="qonnx",
                        help="ONNX flavour to export and verify (default: qonnx)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to export (default: RUN_DIR/checkpoints/last.pt)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="where to write the ONNX file (default: RUN_DIR/export/model.<format>.onnx)")
    parser.add_argument("--finn", action="store_true",
                        help="also run FINN (separate env, see `ib-brevitas finn-setup`): hardware "
                        "graph bit-exactness and the information-versus-hardware-cost table")
    parser.add_argument("--fpga-part", default=DEFAULT_FPGA_PART, help=f"FPGA part (default: {DEFAULT_FPGA_PART})")
    parser.add_argument("--clock-ns", type=float, default=DEFAULT_CLOCK_NS,
                        help=f"target clock period in ns (default: {DEFAULT_CLOCK_NS:g})")
    parser.add_argument("--target-fps", type=int, default=None,
                        help="let FINN fold layers for this throughput (default: no folding, PE=SIMD=1)")
    parser.add_argument("--finn-env", type=Path, default=None,
                        help="FINN virtual environment (default: .venv-finn or $IB_BREVITAS_FINN_VENV)")


def load_run(run_dir: Path, checkpoint: Path | None = None):
    """(model, inputs, labels, epoch) of a training run, from config.json and a checkpoint."""
    import torch

    from ib_brevitas.experiments.data import syn_dataset
    from ib_brevitas.experiments.models import syn_mlp

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run_dir} has no config.json: pass a directory written by `ib-brevitas train`")
    config = json.loads(cfg_path.read_text())
    if config.get("dataset", "syn") != "syn":
        raise ValueError(f"{cfg_path}: dataset {config.get('dataset')!r} is not supported by export (only 'syn')")
    ckpt = checkpoint or run_dir / "checkpoints" / "last.pt"
    if not Path(ckpt).is_file():
        raise ValueError(f"checkpoint {ckpt} does not exist: train the run first or pass --checkpoint FILE")
    model = syn_mlp(config["activation"], int(config["bits"]))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    model.eval()
    x, y = syn_dataset()
    epoch = int(state.get("epoch", 0)) if isinstance(state, dict) else 0
    return model, x, y, epoch


def compare_with_log(run_dir: Path, report, epoch: int) -> str | None:
    """Say whether the graph's MI equals, exactly, what training logged in mi.jsonl at this epoch."""
    from ib_brevitas.records import read_records

    path = run_dir / "mi.jsonl"
    logged = {r.layer: r for r in read_records(path) if r.epoch == epoch} if path.exists() else {}
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
    from ib_brevitas.export import finn_bridge
    from ib_brevitas.export.qonnx import to_qcdq, to_qonnx
    from ib_brevitas.export.verify import verify

    run_dir = args.run_dir.resolve()
    try:
        model, x, y, epoch = load_run(run_dir, args.checkpoint)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    out_dir = run_dir / "export"
    onnx_path = args.output or out_dir / f"model.{args.format}.onnx"
    exporter = to_qonnx if args.format == "qonnx" else to_qcdq
    exporter(model, x[:1], onnx_path)
    print(f"exported epoch {epoch} of {run_dir.name} to {onnx_path}")

    report = verify(model, onnx_path, x, y)
    print(report)
    logged = compare_with_log(run_dir, report, epoch)
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
        except (finn_bridge.FinnEnvironmentMissing, RuntimeError) as exc:
            print(f"export --finn: {exc}", file=sys.stderr)
            return 1
        print(hw)
        hw.save(out_dir / "hardware.json")
        hw.save_csv(out_dir / "hardware.csv")
        write_tensorboard(run_dir, hw, epoch)
        ok = ok and hw.ok
    print(f"reports saved in {out_dir}")
    return 0 if ok else 1
