"""`ib-brevitas` command line: one subcommand per capability.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so
`ib-brevitas plot` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("ib_brevitas.experiments.train", "train a paper network and measure exact MI as it trains"),
    "plot": ("ib_brevitas.plots", "draw information-plane figures (PNG/PDF/SVG) from runs"),
    "phases": ("ib_brevitas.phase_report", "fitting/compression verdicts per layer across runs"),
    "export": ("ib_brevitas.export.cli", "export a run's model to QONNX/QCDQ and verify its integers"),
    "finn-setup": ("ib_brevitas.export.finn_setup", "create the separate FINN environment"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ib-brevitas",
        description="Exact information-plane analysis of quantized Brevitas networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen command's module (plus argparse help when asked).
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        parser = argparse.ArgumentParser(prog=f"ib-brevitas {argv[0]}", description=COMMANDS[argv[0]][1])
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    build_parser().parse_args(argv)  # prints usage / help and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
