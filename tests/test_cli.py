"""The `ib-brevitas` command line: one error style, exit codes, --version, light --help, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ib_brevitas import __version__, cli

PY = [sys.executable, "-m", "ib_brevitas"]


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *args], check=False, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def fake_commands(tmp_path, monkeypatch):
    """Commands backed by modules written here: `fake` (heavy module + light `_args`) and `bad`."""
    pkg = tmp_path / "fakecli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "heavy.py").write_text(textwrap.dedent("""
        import sys
        sys.modules["fakecli"].heavy_imported = True

        def add_arguments(parser):
            raise AssertionError("--help must read heavy_args, not this module")

        def run(args):
            if args.how == "value":
                raise ValueError("probe.npz: labels are floats; pass labels.long()")
            if args.how == "exit":
                raise SystemExit("--bits must lie in 2..16, got 1")
            if args.how == "oserror":
                raise OSError(28, "No space left on device", "/runs/x/mi.jsonl")
            if args.how == "bug":
                raise KeyError("T9")
            if args.how == "interrupt":
                raise KeyboardInterrupt
            return 0
    """))
    (pkg / "heavy_args.py").write_text(textwrap.dedent("""
        def add_arguments(parser):
            parser.add_argument("how", choices=["ok", "value", "exit", "oserror", "bug", "interrupt"])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fakecli.heavy", "a test command"))
    yield
    for name in [m for m in sys.modules if m == "fakecli" or m.startswith("fakecli.")]:
        del sys.modules[name]


def test_help_reads_the_light_args_module(fake_commands, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fake", "--help"])
    assert exc.value.code == 0
    assert "{ok,value,exit,oserror,bug,interrupt}" in capsys.readouterr().out
    assert not getattr(sys.modules["fakecli"], "heavy_imported", False)
    assert cli.main(["fake", "ok"]) == 0 and sys.modules["fakecli"].heavy_imported


@pytest.mark.parametrize("how,code,text", [
    ("value", 2, "probe.npz: labels are floats; pass labels.long()"),
    ("oserror", 1, "No space left on device: '/runs/x/mi.jsonl'"),
    ("bug", 1, "KeyError: 'T9' (unexpected; set IB_BREVITAS_TRACEBACK=1 to see where)"),
    ("interrupt", 130, "interrupted"),
])
def test_one_error_style(fake_commands, capsys, how, code, text):
    assert cli.main(["fake", how]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ib-brevitas fake: error: {text}"]


def test_a_command_exiting_with_a_message_is_a_usage_error(fake_commands, capsys):
    with pytest.raises(SystemExit, match="--bits must lie") as exc:
        cli.main(["fake", "exit"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "ib-brevitas fake: error: --bits must lie in 2..16, got 1"


def test_traceback_on_request(fake_commands, capsys, monkeypatch):
    monkeypatch.setenv("IB_BREVITAS_TRACEBACK", "1")
    assert cli.main(["fake", "bug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ib-brevitas fake: error: KeyError")


def test_usage_errors_are_argparse_style_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--no-such-flag", "x"])
    assert exc.value.code == 2
    assert "ib-brevitas export: error: unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "ib-brevitas: error: argument COMMAND: invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_version_and_help_in_a_subprocess():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"ib-brevitas {__version__}"
    top = run_cli("--help")
    assert top.returncode == 0
    for name in cli.COMMANDS:
        assert name in top.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_command_help_does_not_import_torch(name):
    """What keeps `--help` under a second (timing: benchmarks/bench_cli.py)."""
    code = (f"import sys; from ib_brevitas.cli import main\n"
            f"try:\n    main([{name!r}, '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_input_error_in_a_subprocess(tmp_path):
    res = run_cli("export", str(tmp_path / "nothing"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        (f"ib-brevitas export: error: run directory {tmp_path / 'nothing'} does not exist; "
         "pass a directory written by ib-brevitas"),
    ]


def test_ctrl_c_is_a_short_message_and_130(tmp_path):
    """SIGINT while a command waits on a child process: one line, exit 130, no traceback."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    proc = subprocess.Popen([*PY, "finn-setup", str(tmp_path / "env"), "--force", "--python", str(slow)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        line = proc.stdout.readline()  # "creating FINN environment ...": now in subprocess.run
        assert "creating FINN environment" in line and time.time() < deadline
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["ib-brevitas finn-setup: error: interrupted"]
    assert "Traceback" not in out + err
