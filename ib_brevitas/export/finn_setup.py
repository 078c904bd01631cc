"""`ib-brevitas finn-setup [DIR]`: create the separate FINN virtual environment.

finn-plus 1.6.1 pins protobuf 5.x, which TensorBoard 2.21 cannot use, so FINN
lives in its own venv and is driven through `finn_bridge` (subprocess + files).
A plain `pip install finn-plus` drags in a multi-GB CUDA torch and a brevitas
that breaks on torch 2.13, so the pins below install it in three steps
(recipe in docs/export.md; 1.5-6 minutes depending on the network, 2.3 GB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_FPGA_PART = "xc7z020clg400-1"  # Zynq-7020 (PYNQ-Z1/Z2), FINN's usual example board
DEFAULT_CLOCK_NS = 10.0
FINN_PLUS = "finn-plus==1.6.1"
TORCH = "torch==2.13.0"
BREVITAS = "brevitas==0.13.4"
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
    res = subprocess.run([str(py), "-c", CHECK_CODE], capture_output=True, text=True)
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


def _pip(py: Path, args: list[str]) -> None:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


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
    # On a fresh Linux machine PyPI's torch is the CUDA build; --torch-index picks e.g. the CPU one.
    cpu_index = ["--extra-index-url", torch_index] if torch_index else []
    steps = [
        [*cpu_index, TORCH],  # first, so nothing below swaps in a CUDA build
        ["--no-deps", FINN_PLUS, BREVITAS],  # brevitas 0.13.0 (finn's pin) fails on torch 2.13
        [*cpu_index, *FINN_DEPS],
        FINN_EXTRA,
    ]
    for step in steps:
        _pip(py, step)
    ok, msg = check_env(env_dir)
    if not ok:
        raise RuntimeError(f"FINN environment at {env_dir} was installed but does not work: {msg}")
    print(f"FINN environment ready at {env_dir} in {time.time() - start:.0f} s ({msg})")
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
    try:
        create_env(env_dir, python=args.python, force=args.force, torch_index=args.torch_index)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"finn-setup failed: {exc}", file=sys.stderr)
        return 1
    return 0
