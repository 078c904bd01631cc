"""`ib-brevitas finn-setup [DIR]`: create the separate FINN virtual environment.

finn-plus 1.6.1 pins protobuf 5.x, which TensorBoard 2.21 cannot use, so FINN
lives in its own venv and is driven through `finn_bridge` (subprocess + files).
A plain `pip install finn-plus` drags in a multi-GB CUDA torch and a brevitas
that breaks on torch 2.13, so the pins below install it in four quiet steps
(recipe in docs/export.md; 1.5-6 minutes depending on the network, 2.3 GB).
pip's output goes to DIR/finn-setup.log; the one deliberate conflict (brevitas
0.13.4 for finn-plus' 0.13.0, see PIN_NOTE) is explained, not printed as an error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_FPGA_PART = "xc7z020clg400-1"  # Zynq-7020 (PYNQ-Z1/Z2), FINN's usual example board
VERSAL_FPGA_PART = "xcvc1902-vsva2197-2MP-e-S"  # Versal AI Core VC1902 (VCK190): FINN's PWPolyF needs one
DEFAULT_CLOCK_NS = 10.0
FINN_PLUS = "finn-plus==1.6.1"
TORCH = "torch==2.13.0"
BREVITAS = "brevitas==0.13.4"
# finn-plus 1.6.1 declares brevitas==0.13.0, which fails at every forward on torch 2.13
# (`Tensor.rename` is gone); 0.13.4 is installed instead, on purpose. This is the one
# conflict `pip check` may report; pip's resolver warnings about it are turned off.
PIN_OVERRIDE = ("finn-plus", "brevitas")
PIN_NOTE = ("brevitas 0.13.4 replaces finn-plus' pin brevitas==0.13.0 on purpose "
            "(0.13.0 fails on torch 2.13); `pip check` reports only that")
# finn-plus's declared dependencies, minus torch/brevitas (installed first, pinned).
FINN_DEPS = [
    "bitstring>=4.3.1,<4.4", "click>=8.1.8,<9", "cmake>=4.0.3,<4.1", "mashumaro[yaml]>=3.15,<4",
    "matplotlib>=3.10.9,<3.11", "mip==1.17.0", "numpy>=2.4.6,<2.5", "onnx==1.21.0", "onnx-ir>=0.1.15",
    "onnx-passes>=0.4.0", "onnxoptimizer>=0.4.2,<0.5", "onnxruntime==1.25.1", "onnxscript>=0.7.0",
    "pandas>=2.3.1,<2.4", "protobuf==5.29.6", "pybind11==3.0.1", "pydantic>2.0", "pyyaml>=6.0.2,<6.1",
    "qonnx==1.0.0", "rich>=13.9.4,<14", "scikit-learn>=1.7.2,<1.8", "scipy>=1.17.0,<1.18",
    "termcolor>=2.5.0,<3", "dependencies==2.0.1", "unfoldNd", "packaging", "sympy", TORCH,
]
# setuptools<81 keeps pkg_resources; finn-plus imports psutil without declaring it.
FINN_EXTRA = ["setuptools>=77.0.3,<81", "psutil"]

# Imported by the worker; if this runs, the env is usable.
CHECK_CODE = (
    "import torch, brevitas, qonnx, onnx, finn, psutil, pkg_resources;"
    "from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer;"
    "print(torch.__version__, brevitas.__version__, onnx.__version__)"
)


def is_versal(fpga_part: str) -> bool:
    """FINN's own test (finn.util.basic.is_versal), here so the main environment can ask it."""
    return fpga_part[:4] in ("xcvc", "xcve", "xcvp", "xcvm", "xqvc", "xqvm") or fpga_part[:5] in ("xqrvc", "xcv80")


def repo_root() -> Path:
    """The checkout this package is imported from (ib_brevitas/export/ -> repo)."""
    return Path(__file__).resolve().parents[2]


def default_env_dir() -> Path:
    """Where the FINN venv is (or goes): `$IB_BREVITAS_FINN_VENV` if set, else `.venv-finn`
    beside the running venv or under the repo root, whichever exists (beside the venv first)."""
    env = os.environ.get("IB_BREVITAS_FINN_VENV")
    if env:
        return Path(env).expanduser().resolve()
    candidates = [repo_root() / ".venv-finn"]
    if sys.prefix != sys.base_prefix:  # inside a venv
        candidates.insert(0, Path(sys.prefix).resolve().parent / ".venv-finn")
    return next((c for c in candidates if env_python(c).exists()), candidates[0])


def env_python(env_dir: Path) -> Path:
    return Path(env_dir) / "bin" / "python"


def check_env(env_dir: Path) -> tuple[bool, str]:
    """(usable, message): imports what the worker needs inside the env."""
    py = env_python(env_dir)
    if not py.exists():
        return False, f"no Python at {py}"
    res = subprocess.run([str(py), "-c", CHECK_CODE], check=False, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        return False, f"{py} cannot import FINN: {tail[0]}"
    return True, f"torch/brevitas/onnx {res.stdout.strip()}"


def find_python311(explicit: str | None) -> str:
    """A Python 3.11 interpreter for the new venv (finn-plus wheels need 3.10-3.12)."""
    if explicit:
        return explicit
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    import shutil

    for name in ("python3.11", "python3.12", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("finn-setup needs Python 3.10-3.12 (3.11 tested); pass --python /path/to/python3.11")


def _pip(py: Path, args: list[str], log: Path) -> None:
    """One quiet `pip install` step; its output goes to `log`, whose tail is shown if it fails."""
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-conflicts",
           "--no-input", "-q", *args]
    with open(log, "a") as out:
        out.write("+ " + " ".join(cmd) + "\n")
        out.flush()
        res = subprocess.run(cmd, check=False, stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"pip install {' '.join(args)} failed (exit {res.returncode}; full log {log}):\n{tail}")


def unexpected_conflicts(py: Path) -> list[str]:
    """`pip check` lines other than the deliberate brevitas override (empty: all consistent)."""
    res = subprocess.run([str(py), "-m", "pip", "check", "--disable-pip-version-check"],
                         check=False, capture_output=True, text=True)
    lines = [line.strip() for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    known = [line for line in lines if line.startswith(PIN_OVERRIDE[0] + " ") and PIN_OVERRIDE[1] in line]
    return [line for line in lines if line not in known and not line.startswith("No broken requirements")]


def create_env(
    env_dir: Path, python: str | None = None, force: bool = False, torch_index: str | None = None
) -> Path:
    """Create (or reuse, if it already imports FINN) the FINN venv at `env_dir`."""
    env_dir = Path(env_dir).resolve()
    if not force:
        ok, msg = check_env(env_dir)
        if ok:
            print(f"FINN environment at {env_dir} is ready ({msg}); reusing it.")
            return env_dir
    start = time.time()
    interp = find_python311(python)
    print(f"creating FINN environment at {env_dir} with {interp} (a few minutes, 2.3 GB)", flush=True)
    subprocess.run([interp, "-m", "venv", str(env_dir)], check=True)
    py = env_python(env_dir)
    log = env_dir / "finn-setup.log"
    log.write_text("")
    # On a fresh Linux machine PyPI's torch is the CUDA build; --torch-index picks e.g. the CPU one.
    cpu_index = ["--extra-index-url", torch_index] if torch_index else []
    steps = [
        ("torch, first, so nothing below swaps in a CUDA build", [*cpu_index, TORCH]),
        (f"{FINN_PLUS} and {BREVITAS}, without their dependencies", ["--no-deps", FINN_PLUS, BREVITAS]),
        ("finn-plus' dependencies, pinned", [*cpu_index, *FINN_DEPS]),
        ("setuptools<81 (pkg_resources) and psutil", FINN_EXTRA),
    ]
    for k, (what, args) in enumerate(steps, 1):
        print(f"  [{k}/{len(steps)}] {what}", flush=True)
        _pip(py, args, log)
    ok, msg = check_env(env_dir)
    if not ok:
        raise RuntimeError(f"FINN environment at {env_dir} was installed but does not work: {msg} (log: {log})")
    print(f"  {PIN_NOTE}")
    for line in unexpected_conflicts(py):
        print(f"ib-brevitas finn-setup: warning: pip check: {line}", file=sys.stderr)
    print(f"FINN environment ready at {env_dir} in {time.time() - start:.0f} s ({msg}; pip log: {log})")
    return env_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", nargs="?", default=None,
        help="where to create the FINN venv (default: .venv-finn beside the current venv, "
        "or $IB_BREVITAS_FINN_VENV)",
    )
    parser.add_argument("--python", default=None, help="Python 3.10-3.12 interpreter for the venv")
    parser.add_argument(
        "--torch-index", default=None, metavar="URL",
        help="extra index for torch, e.g. https://download.pytorch.org/whl/cpu for a CPU-only build",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if a working env exists")
    parser.add_argument("--check", action="store_true", help="only check the env; exit 1 if unusable")


def run(args: argparse.Namespace) -> int:
    env_dir = Path(args.dir).resolve() if args.dir else default_env_dir()
    if args.check:
        ok, msg = check_env(env_dir)
        print(f"{env_dir}: {'ok' if ok else 'not usable'} ({msg})")
        return 0 if ok else 1
    from ib_brevitas.cli import error

    try:
        create_env(env_dir, python=args.python, force=args.force, torch_index=args.torch_index)
    except subprocess.CalledProcessError as exc:
        error("ib-brevitas finn-setup", f"{' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}")
        return 1
    except RuntimeError as exc:
        error("ib-brevitas finn-setup", str(exc))
        return 1
    return 0
