"""How fast the command line answers `--help` and `--version` (target: under 1 s each).

    .venv/bin/python benchmarks/bench_cli.py [--quick] [--repeats N]

Each line starts a fresh interpreter (`python -m ib_brevitas ...`, what a user
pays) and reports the median and the slowest of N runs, and whether torch got
imported on the way (the reason `--help` took 16 s before the commands' heavy
imports moved inside them). A command still over the target is named at the
end and the exit code is 1. A timing, not a test: the machine's load moves it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 1.0
PROBE = ("import runpy, sys\n"
         "sys.argv = ['ib-brevitas', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('ib_brevitas', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('torch' in sys.modules, file=sys.stderr)")


def time_once(args: list[str]) -> tuple[float, bool]:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    return elapsed, res.stderr.strip().splitlines()[-1:] == ["True"]


def main() -> int:
    from ib_brevitas.cli import COMMANDS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 runs per command instead of 7")
    p.add_argument("--repeats", type=int, default=None, help="runs per command (default 7, --quick 3)")
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    cases = [["--version"], ["--help"], *([name, "--help"] for name in COMMANDS)]
    print(f"fresh interpreter per run, {repeats} runs each; target < {TARGET_S:g} s")
    print(f"{'command':<30} {'median s':>9} {'max s':>7}  torch imported")
    slow = []
    for case in cases:
        times, torch_seen = [], False
        for _ in range(repeats):
            t, seen = time_once(case)
            times.append(t)
            torch_seen |= seen
        label = "ib-brevitas " + " ".join(case)
        median = statistics.median(times)
        print(f"{label:<30} {median:>9.2f} {max(times):>7.2f}  {'yes' if torch_seen else 'no'}")
        if median >= TARGET_S:
            slow.append(label)
    if slow:
        print(f"over {TARGET_S:g} s: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
