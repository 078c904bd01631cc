"""`ib-brevitas` command line: one subcommand per capability, one error style.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`. Only the chosen command's module is imported, and only
when it runs: `--help` (top level or a command's) must answer in well under a
second, so it must not import torch. A command whose module is heavy keeps its
arguments in a light sibling `<module>_args` (e.g. `ib_brevitas.experiments.
train_args`), which `--help` then reads instead.

Errors, whatever the command: one line `ib-brevitas <command>: error: ...` on
stderr; exit code 2 for usage and input errors (argparse's, a `SystemExit`
with a message, a `ValueError` such as `RunDirError`), 1 for failures (an
`OSError` such as a full disk, anything unexpected), 130 for Ctrl-C. Set
IB_BREVITAS_TRACEBACK=1 to see the traceback behind a message.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from types import ModuleType

# name -> (module, one-line help)
COMMANDS = {
    "train": ("ib_brevitas.experiments.train", "train a paper network and measure exact MI as it trains"),
    "plot": ("ib_brevitas.plots", "draw information-plane figures (PNG/PDF/SVG) from runs"),
    "phases": ("ib_brevitas.phase_report", "fitting/compression verdicts per layer across runs"),
    "export": ("ib_brevitas.export.cli", "export a run's model to QONNX/QCDQ and verify its integers"),
    "finn-setup": ("ib_brevitas.export.finn_setup", "create the separate FINN environment"),
    "sweep": ("ib_brevitas.experiments.sweep", "train a grid of configurations x seeds, one run directory each"),
    "report": ("ib_brevitas.experiments.report", "a Markdown report with figures of a sweep's runs"),
}
USAGE_ERROR, FAILURE, INTERRUPTED = 2, 1, 130


class CommandExit(SystemExit):
    """A command stopped with a message (already printed): exit code 2, `str()` the message."""

    def __init__(self, message: str, code: int = USAGE_ERROR):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _version() -> str:
    from ib_brevitas import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: command names and their one-line help (no command module imported)."""
    parser = argparse.ArgumentParser(
        prog="ib-brevitas",
        description="Exact information-plane analysis of quantized Brevitas networks.",
        epilog="`ib-brevitas COMMAND --help` shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"ib-brevitas {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, description=help_)
    return parser


def arguments_module(module: str) -> ModuleType:
    """Where a command's `add_arguments` lives: the light `<module>_args` if there is one, else the module."""
    light = f"{module}_args"
    try:
        found = importlib.util.find_spec(light) is not None
    except ModuleNotFoundError:
        found = False
    return importlib.import_module(light if found else module)


def command_parser(name: str) -> argparse.ArgumentParser:
    module, help_ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"ib-brevitas {name}", description=help_)
    arguments_module(module).add_arguments(parser)
    return parser


def error(prog: str, message: str) -> None:
    """Print one error in the CLI's style (`ib-brevitas <command>: error: ...`)."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def _report(prog: str, exc: BaseException, message: str) -> None:
    if os.environ.get("IB_BREVITAS_TRACEBACK"):
        import traceback

        traceback.print_exception(exc)
    error(prog, message)


def _os_message(e: OSError) -> str:
    """`No space left on device: 'path'`, without Python's `[Errno 28]` prefix."""
    if not e.strerror:
        return str(e)
    return f"{e.strerror}: {str(e.filename)!r}" if e.filename else e.strerror


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (usage errors and --help leave through SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help / --version / an unknown command: exits
        return USAGE_ERROR
    name = argv[0]
    prog = f"ib-brevitas {name}"
    try:
        args = command_parser(name).parse_args(argv[1:])
        return int(importlib.import_module(COMMANDS[name][0]).run(args) or 0)
    except KeyboardInterrupt as e:
        _report(prog, e, "interrupted")
        return INTERRUPTED
    except CommandExit:
        raise
    except SystemExit as e:
        if isinstance(e.code, str):  # `raise SystemExit("what is wrong")` inside a command
            _report(prog, e, e.code)
            raise CommandExit(e.code) from None
        raise
    except ValueError as e:  # bad input: RunDirError, a corrupt file, a refused argument
        _report(prog, e, str(e))
        return USAGE_ERROR
    except OSError as e:  # the message names the path (full disk, permissions, ...)
        _report(prog, e, _os_message(e))
        return FAILURE
    except Exception as e:  # noqa: BLE001 - the user gets one line, not a traceback
        _report(prog, e, f"{type(e).__name__}: {e} (unexpected; set IB_BREVITAS_TRACEBACK=1 to see where)")
        return FAILURE


if __name__ == "__main__":
    sys.exit(main())
