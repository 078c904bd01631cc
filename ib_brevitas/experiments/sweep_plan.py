"""What a sweep runs: its grid, seeds, run directories and manifest (DIR/sweep.json).

Everything here is checked before anything starts, and every error is a
`UsageError` that names the flag or file. The manifest names the grid (so a
rerun in the same directory must ask for the same one) and keeps one entry
per session (start, end, seeds trained): the report's run-time figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ib_brevitas.experiments.sweep_args import ACTIVATIONS, AXES, PRESETS
from ib_brevitas.experiments.train_args import NET_NAMES, paper_settings
from ib_brevitas.files import atomic_write_json

MANIFEST = "sweep.json"
VERSION = 1
# A configuration's directory name: always net (with its data set), activation and bits, plus each other axis
# the grid varies.
_NAME_PARTS = {"epochs": "e", "mi_every": "k", "lr": "lr", "batch_size": "bs", "test_fraction": "tf"}


class UsageError(ValueError):
    """Bad sweep input: `ib-brevitas sweep: error: ...`, exit code 2, before anything is written."""


@dataclass(frozen=True)
class Job:
    """One seed of one configuration: its run directory (relative to the sweep) and its config.json."""

    name: str  # its directory: "<configuration>-s<seed>", as train names a run (seeds group by that suffix)
    configuration: str
    config: dict[str, Any]


def parse_seeds(items: list[str]) -> list[int]:
    """'0-49', '0 3 7', '0-4,10' -> sorted distinct seeds; a reversed range or a repeat is an error."""
    seeds: list[int] = []
    for part in (p for item in items for p in item.split(",")):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise UsageError(f"--seeds: {part!r} is neither a seed (e.g. 3) nor a range (e.g. 0-49)")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise UsageError(f"--seeds: the range {part} is empty (it ends before it starts); write {hi}-{lo}")
        seeds += range(lo, hi + 1)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UsageError(f"--seeds: seed {repeated[0]} is given twice; list each seed once")
    if not seeds:
        raise UsageError("--seeds names no seed: the grid is empty; give e.g. --seeds 0-9")
    return sorted(seeds)


def grid_from_args(args: argparse.Namespace) -> tuple[dict[str, list], list[dict[str, Any]], list[int]]:
    """The grid (axis -> values), its points (one per configuration) and the seeds the flags ask for.

    An axis takes its flag's values, else the preset's, else each net's own (`paper_settings(net)`: the
    MNIST nets' 3000 epochs, MI every 2 and activation). The points are, per net, every combination of
    the axes; the grid lists each axis' values over all points (it names the sweep in its manifest).
    """
    preset: dict[str, Any] = {}
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UsageError(f"--preset: unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[args.preset]
    asked = {}
    for axis in AXES:
        values = getattr(args, axis, None)
        if values is None:
            values = preset.get(axis)
        if values is None:
            continue
        if not values:
            raise UsageError(f"--{axis.replace('_', '-')} has no values: the grid is empty; give at least one")
        if len(set(values)) < len(values):
            raise UsageError(f"--{axis.replace('_', '-')}: a value is given twice ({' '.join(map(str, values))})")
        asked[axis] = list(values)
    nets = asked.pop("net", ["syn"])
    bad = [n for n in nets if n not in NET_NAMES]
    if bad:
        raise UsageError(f"--net: unknown network {bad[0]!r}; choose from {', '.join(NET_NAMES)}")
    bad = [a for a in asked.get("activation", []) if a not in ACTIVATIONS]
    if bad:
        raise UsageError(f"--activation: unknown activation {bad[0]!r}; choose from {', '.join(ACTIVATIONS)}")
    points = []
    for net in nets:
        own = paper_settings(net)
        axes = {axis: asked.get(axis, [own[axis]]) for axis in AXES if axis != "net"}
        points += [{"net": net, **dict(zip(axes, values))} for values in itertools.product(*axes.values())]
    grid = {axis: list(dict.fromkeys(point[axis] for point in points)) for axis in AXES}
    seeds = args.seeds if args.seeds is not None else [preset.get("seeds", "0")]
    return grid, points, parse_seeds(seeds)


def config_name(point: dict[str, Any], grid: dict[str, list], dataset: str = "syn") -> str:
    """'syn-tanh-8b' (the SYN net), 'mnist-4x10-digits-tanh-8b' (an MNIST net on its data set, as train names
    its runs), plus '-e100' etc. for each other axis with several values in the grid."""
    net = point.get("net", "syn")
    parts = [f"{'syn' if net == 'syn' else f'{net}-{dataset}'}-{point['activation']}-{point['bits']}b"]
    parts += [f"{tag}{point[axis]:g}" for axis, tag in _NAME_PARTS.items() if len(grid[axis]) > 1]
    return "-".join(parts)


def manifest_path(sweep_dir: Path) -> Path:
    return sweep_dir / MANIFEST


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep's manifest; None when there is none; a damaged one is a UsageError."""
    path = manifest_path(sweep_dir)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}); restore it or use another --sweep-dir") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION or "runs" not in manifest:
        raise UsageError(f"{path} is not an ib-brevitas sweep manifest (version {VERSION}); use another --sweep-dir")
    return manifest


def check_sweep_dir(sweep_dir: Path, plan: dict[str, Any]) -> dict[str, Any] | None:
    """The directory's manifest, if it holds the same grid (or a subset of the seeds asked: the sweep grows);
    refuse one of a different grid or a foreign folder."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UsageError(f"--sweep-dir {sweep_dir} is a file; pass a directory")
    old = read_manifest(sweep_dir)
    if old is None:
        if sweep_dir.is_dir() and any(p.name != ".lock" for p in sweep_dir.iterdir()):
            raise UsageError(f"--sweep-dir {sweep_dir} is not empty and holds no {MANIFEST}; pass a new or empty "
                             "directory")
        return None
    # a manifest written before --net was an axis holds a SYN sweep
    have = {"net": ["syn"], **(old.get("grid") or {}), "seeds": old.get("seeds"), **(old.get("fixed") or {})}
    want = {**plan["grid"], "seeds": plan["seeds"], **plan["fixed"]}
    diff = [k for k in {**want, **have} if have.get(k) != want.get(k)]
    if diff == ["seeds"] and set(have["seeds"] or []) <= set(want["seeds"]):
        return {**old, "seeds": want["seeds"]}  # more seeds of the same grid: the runs there are kept
    if diff:
        k = diff[0]
        raise UsageError(
            f"--sweep-dir {sweep_dir} holds a sweep of a different grid ({k}: {_short(have.get(k))} there, "
            f"{_short(want.get(k))} asked); repeat its flags to continue it, or pass another --sweep-dir"
        )
    return old


def _short(v: Any) -> str:
    """Seeds as ranges (0-49), lists as space-separated values."""
    if isinstance(v, list) and v and all(isinstance(x, int) for x in v) and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}-{v[-1]}" if len(v) > 1 else str(v[0])
    s = " ".join(map(str, v)) if isinstance(v, list) else json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


def write_manifest(sweep_dir: Path, manifest: dict[str, Any]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest_path(sweep_dir), manifest)
