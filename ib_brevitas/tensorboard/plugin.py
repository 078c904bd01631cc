"""The `information_plane` TensorBoard plugin: JSON routes and the frontend module.

Registered through the `tensorboard_plugins` entry point. It imports nothing
heavy (no torch, no brevitas), because a plugin that fails to import takes
TensorBoard down. Data is read only through TensorBoard's data provider, so
the tab works with the Python loader (`--load_fast=false`) and the Rust data
server (`--load_fast=true`). Routes, under /data/plugin/information_plane/:

- `runs`: sorted list of run names that have information-plane data.
- `layers?run=R`: layer order, labels, and a `version` that changes with new data.
- `points?run=R`: every measurement of the run (all `LayerMI` fields), bounds, layer order.
- `phases?run=R`: phase events; `hardware?run=R`: information-vs-hardware table.
- `index.js`: the frontend (plain ES module).

Errors are JSON `{"error": ...}` with status 400 (bad arguments) or 404
(unknown run); a malformed datum is skipped and counted, never a 500.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import os
import re
import threading
from typing import Any, Callable

from werkzeug import wrappers

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from tensorboard.util import tb_logging

from ib_brevitas.tensorboard import (
    HARDWARE_TAG,
    LAYER_TAG_PREFIX,
    PHASES_TAG,
    PLUGIN_NAME,
)

logger = tb_logging.get_logger()

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# read_tensors needs a bound; the loader already keeps every point (see fix_flags).
_KEEP_ALL = 2**31 - 1
_NUMBER_FIELDS = ("i_xt", "i_ty", "h_t")
_CACHE_SIZE = 64
# Trailing seed marker of a run name: "syn-tanh-seed3", "tanh/seed_3", "relu_s2".
_SEED_SUFFIX = re.compile(r"(?:^|[-_./ ])(?:seed|s)[-_=]?\d+$", re.IGNORECASE)


def group_of(run: str) -> str:
    """The configuration a run belongs to: its name without a seed suffix."""
    m = _SEED_SUFFIX.search(run)
    return run[: m.start()] if m and m.start() > 0 else run


def _version(series: dict[str, Any]) -> str:
    """Changes whenever any series of the run gains, loses or rewrites data."""
    stamp = sorted((t, s.max_step, s.max_wall_time) for t, s in series.items())
    return hashlib.sha1(repr(stamp).encode()).hexdigest()[:16]


def _json(request, body: Any, code: int = 200):
    return http_util.Respond(
        request, json.dumps(body, allow_nan=False, separators=(",", ":")), "application/json", code=code
    )


def _error(request, code: int, message: str):
    return _json(request, {"error": message}, code=code)


def _route(fn: Callable) -> Callable:
    """Wrap a handler: werkzeug request in, and any failure as a JSON error, never a trace."""

    @functools.wraps(fn)
    @wrappers.Request.application
    def handler(self, request):
        try:
            return fn(self, request)
        except errors.PublicError as e:
            return _error(request, e.http_code, str(e))
        except Exception:  # a server-side bug must not leak a stack trace to the page
            logger.exception("information_plane: %s failed", request.path)
            return _error(request, 500, "internal error in the information_plane plugin; see the TensorBoard log")

    return handler


def _load_json(raw: Any) -> Any:
    """Decode a datum written by the sink: a scalar string tensor holding JSON."""
    value = raw.item() if hasattr(raw, "item") else raw
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.loads(value)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _valid_point(p: Any) -> bool:
    return (
        isinstance(p, dict)
        and isinstance(p.get("layer"), str)
        and isinstance(p.get("epoch"), int)
        and isinstance(p.get("layer_index"), int)
        and isinstance(p.get("n_distinct"), int)
        and all(_is_number(p.get(k)) for k in _NUMBER_FIELDS)
    )


def _content(series: Any) -> dict[str, Any]:
    try:
        content = json.loads(series.plugin_content or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def current_data(data: dict[str, list[Any]], layer_tags: list[str]) -> dict[str, list[Any]]:
    """Drop data orphaned by a resumed run; keep the newest value per step, in step order.

    A resumed run rewrites epochs from its checkpoint on (`SummaryWriter(purge_step=...)`).
    TensorBoard's Rust loader drops the old values of a re-written tag, but not
    of tags that are not re-written (e.g. phase events), and the Python loader
    purges nothing unless the run's first writer also logged a session start.
    So: a value at step s is orphaned when some layer measurement at a smaller
    step was written later (training time runs forward with the epoch).
    """
    marks = sorted((d.step, d.wall_time) for t in layer_tags for d in data.get(t, []))
    steps = [m[0] for m in marks]
    newest_before, latest = [], -math.inf  # newest_before[i]: max wall time of marks[:i + 1]
    for _, wall in marks:
        latest = max(latest, wall)
        newest_before.append(latest)

    def orphaned(d) -> bool:
        i = bisect.bisect_left(steps, d.step)  # marks[:i] have step < d.step
        return i > 0 and newest_before[i - 1] > d.wall_time

    out = {}
    for tag, datums in data.items():
        by_step = {}
        for d in datums:
            if not orphaned(d) and (d.step not in by_step or d.wall_time >= by_step[d.step].wall_time):
                by_step[d.step] = d
        out[tag] = [by_step[s] for s in sorted(by_step)]
    return out


class InformationPlanePlugin(base_plugin.TBPlugin):
    """Serves exact information-plane data written by `TensorBoardSink`."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        # (experiment, run, route) -> (version, body): reading 100,000 tensors
        # takes seconds, and the dashboard polls; unchanged data is not re-read.
        self._cache: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._cache_lock = threading.Lock()

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/runs": self._serve_runs,
            "/layers": self._serve_layers,
            "/points": self._serve_points,
            "/phases": self._serve_phases,
            "/hardware": self._serve_hardware,
            "/index.js": self._serve_js,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard enables the tab when the data provider has our data

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Information Plane")

    # -- data access (only through the data provider) -------------------------

    def _list(self, request, run: str | None = None) -> dict[str, dict[str, Any]]:
        return self._data_provider.list_tensors(
            plugin_util.context(request.environ),
            experiment_id=plugin_util.experiment_id(request.environ),
            plugin_name=PLUGIN_NAME,
            run_tag_filter=None if run is None else provider.RunTagFilter(runs=[run]),
        )

    def _read(self, request, run: str, tags: list[str]) -> dict[str, list[Any]]:
        data = self._data_provider.read_tensors(
            plugin_util.context(request.environ),
            experiment_id=plugin_util.experiment_id(request.environ),
            plugin_name=PLUGIN_NAME,
            downsample=_KEEP_ALL,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        )
        return data.get(run, {})

    def _run_series(self, request) -> tuple[str, dict[str, Any]]:
        """The `run` argument and its tag -> series map, or a 400/404 PublicError."""
        run = request.args.get("run")
        if run is None or run == "":
            raise errors.InvalidArgumentError("missing query argument run=NAME (see the runs route)")
        series = self._list(request, run).get(run, {})
        if not any(tag.startswith(LAYER_TAG_PREFIX) for tag in series):
            raise errors.NotFoundError(f"run {run!r} has no information-plane data")
        return run, series

    def _cached(self, request, route: str, build: Callable[..., dict[str, Any]]):
        """Answer `route` for the requested run, rebuilding only when its data changed."""
        run, series = self._run_series(request)
        version = _version(series)
        key = (plugin_util.experiment_id(request.environ), run, route)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            body = dict(build(request, run, series), run=run, version=version)
            hit = (version, json.dumps(body, allow_nan=False, separators=(",", ":")))
            with self._cache_lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = hit
        return http_util.Respond(request, hit[1], "application/json")

    def _values(self, request, run: str, series: dict[str, Any], tags: list[str]) -> tuple[dict[str, list[Any]], int]:
        """Decoded current values of `tags` in step order, and how many were undecodable.

        Reads the layer series as well, to drop data orphaned by a resumed run
        (see `current_data`).
        """
        wanted = [t for t in tags if t in series]
        layer = [t for t in series if t.startswith(LAYER_TAG_PREFIX)]
        data = self._read(request, run, sorted(set(wanted) | set(layer)))
        current = current_data(data, layer)
        out, skipped = {}, 0
        for tag in wanted:
            values = []
            for datum in current.get(tag, []):
                try:
                    values.append(_load_json(datum.numpy))
                except (ValueError, UnicodeDecodeError):
                    skipped += 1
            out[tag] = values
        return out, skipped

    # -- routes -----------------------------------------------------------------

    @_route
    def _serve_runs(self, request):
        listing = self._list(request)
        runs = [r for r, tags in listing.items() if any(t.startswith(LAYER_TAG_PREFIX) for t in tags)]
        return _json(request, sorted(runs))

    @_route
    def _serve_layers(self, request):
        run, series = self._run_series(request)
        layers = []
        for tag, s in series.items():
            if not tag.startswith(LAYER_TAG_PREFIX):
                continue
            index = _content(s).get("layer_index")
            index = index if isinstance(index, int) and not isinstance(index, bool) else None
            layers.append({
                "layer": tag[len(LAYER_TAG_PREFIX):],
                "index": index,
                "label": f"T{index + 1}" if index is not None else None,
                "max_step": s.max_step,
            })
        layers.sort(key=lambda x: (x["index"] is None, x["index"] or 0, x["layer"]))
        return _json(request, {
            "run": run,
            "layers": layers,
            "has_phases": PHASES_TAG in series,
            "has_hardware": HARDWARE_TAG in series,
            "version": _version(series),
        })

    @_route
    def _serve_points(self, request):
        return self._cached(request, "points", self._build_points)

    def _build_points(self, request, run: str, series: dict[str, Any]) -> dict[str, Any]:
        contents = {t: _content(s) for t, s in series.items() if t.startswith(LAYER_TAG_PREFIX)}
        values, skipped = self._values(request, run, series, list(contents))
        points = []
        for tag in contents:
            for p in values.get(tag, []):
                if _valid_point(p):
                    points.append(p)
                else:
                    skipped += 1
        points.sort(key=lambda p: (p["layer_index"], p["layer"], p["epoch"]))
        index_of = {p["layer"]: p["layer_index"] for p in points}
        order = sorted(index_of, key=lambda n: (index_of[n], n))
        groups = [c["group"] for c in contents.values() if isinstance(c.get("group"), str) and c["group"]]
        n_samples = [p["n_samples"] for p in points if isinstance(p.get("n_samples"), int) and p["n_samples"] > 0]
        h_y = [p["h_y"] for p in points if _is_number(p.get("h_y"))]
        return {
            "group": groups[0] if groups else group_of(run),
            "layers": order,
            "labels": {n: f"T{index_of[n] + 1}" for n in order},
            "bounds": {
                "log2_n": math.log2(max(n_samples)) if n_samples else None,
                "h_y": max(h_y) if h_y else None,
            },
            "points": points,
            "skipped": skipped,
        }

    @_route
    def _serve_phases(self, request):
        return self._cached(request, "phases", self._build_phases)

    def _build_phases(self, request, run: str, series: dict[str, Any]) -> dict[str, Any]:
        values, skipped = self._values(request, run, series, [PHASES_TAG])
        events, seen = [], set()
        for batch in values.get(PHASES_TAG, []):
            for e in batch if isinstance(batch, list) else [batch]:
                if not (isinstance(e, dict) and isinstance(e.get("layer"), str) and _is_number(e.get("epoch"))):
                    skipped += 1
                    continue
                key = json.dumps(e, sort_keys=True)
                if key not in seen:  # a step's value repeats the events written before at that step
                    seen.add(key)
                    events.append(e)
        events.sort(key=lambda e: (e["epoch"], e["layer"]))
        return {"events": events, "skipped": skipped}

    @_route
    def _serve_hardware(self, request):
        return self._cached(request, "hardware", self._build_hardware)

    def _build_hardware(self, request, run: str, series: dict[str, Any]) -> dict[str, Any]:
        values, skipped = self._values(request, run, series, [HARDWARE_TAG])
        tables = values.get(HARDWARE_TAG, [])
        table = tables[-1] if tables and isinstance(tables[-1], dict) else {}
        rows = [r for r in table.get("rows", []) if isinstance(r, dict)]
        totals = table.get("totals") if isinstance(table.get("totals"), dict) else {}
        return {"rows": rows, "totals": totals, "skipped": skipped}

    @_route
    def _serve_js(self, request):
        with open(os.path.join(_STATIC_DIR, "index.js"), "rb") as f:
            return http_util.Respond(request, f.read(), "text/javascript")


class InformationPlaneLoader(base_plugin.TBLoader):
    """Loads the plugin and makes TensorBoard keep every information-plane point.

    Without this, custom tensor series are silently downsampled to 10 (Python
    loader) or 100 (Rust loader) points per tag. An explicit
    `--samples_per_plugin=information_plane=K` on the command line still wins.
    """

    def fix_flags(self, flags) -> None:
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(PLUGIN_NAME, 0)  # 0 = keep all

    def load(self, context: base_plugin.TBContext) -> InformationPlanePlugin:
        return InformationPlanePlugin(context)
