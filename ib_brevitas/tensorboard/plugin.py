"""The `information_plane` TensorBoard plugin: JSON routes and the frontend's static files.

Registered through the `tensorboard_plugins` entry point. It imports nothing
heavy (no torch, no brevitas), because a plugin that fails to import takes
TensorBoard down. Data is read only through TensorBoard's data provider, so
the tab works with the Python loader (`--load_fast=false`) and the Rust data
server (`--load_fast=true`). Routes, under /data/plugin/information_plane/:

- `runs`: sorted run names with information-plane data; `versions`: per run
  its group and a `version` that changes with new data (what the page polls).
- `layers?run=R`: layer order, labels, version.
- `points?run=R[&fields=epoch,i_xt,i_ty]`: every measurement, per layer as columns.
- `mean?run=A&run=B...`: mean +- s.d. of these runs per layer and epoch.
- `plane?run=A&run=B...`: epoch, I(X;T), I(T;Y) of these runs as float32 (binary,
  see `views.plane_binary`): what the page draws for the faint seeds of a sweep.
- `phases?run=R`, `hardware?run=R`.
- `index.js` and `static/<name>.{js,css}`: the frontend (ES modules, a stylesheet).

Errors are JSON `{"error": ...}` with status 400 (bad arguments) or 404
(unknown run or file); bad data are skipped, counted and named in `warnings`,
never a 500 (see `views`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from tensorboard.util import tb_logging
from werkzeug import wrappers

from ib_brevitas.seedmean import group_of
from ib_brevitas.tensorboard import HARDWARE_TAG, PHASES_TAG, PLUGIN_NAME, STATIC_DIR, tensors, views, wire
from ib_brevitas.tensorboard.views import current_data  # noqa: F401  (public before views existed)

__all__ = ["InformationPlanePlugin", "InformationPlaneLoader", "group_of", "current_data"]

logger = tb_logging.get_logger()

_STATIC_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.(js|css)$")
_CONTENT_TYPES = {"js": "text/javascript", "css": "text/css"}
# read_tensors needs a bound; the loader already keeps every point (see fix_flags).
_KEEP_ALL = 2**31 - 1
_CACHE_SIZE = 256  # runs: a 50-seed sweep of several configurations


def _version(series: dict[str, Any]) -> str:
    """Changes whenever any series of the run gains, loses or rewrites data."""
    stamp = sorted((t, s.max_step, s.max_wall_time) for t, s in series.items())
    return hashlib.sha1(repr(stamp).encode()).hexdigest()[:16]


def _json(request, body: Any, code: int = 200):
    return http_util.Respond(request, views.dumps(body), "application/json", code=code)


def _route(fn: Callable) -> Callable:
    """Wrap a handler: werkzeug request in, and any failure as a JSON error, never a trace."""

    @functools.wraps(fn)
    @wrappers.Request.application
    def handler(self, request):
        try:
            return fn(self, request)
        except errors.PublicError as e:
            return _json(request, {"error": str(e)}, code=e.http_code)
        except Exception:  # a server-side bug must not leak a stack trace to the page
            logger.exception("information_plane: %s failed", request.path)
            return _json(request, {"error": "internal error in the information_plane plugin; see the TensorBoard log"},
                         code=500)

    return handler


def _content(series: Any) -> dict[str, Any]:
    try:
        content = json.loads(series.plugin_content or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def _group(run: str, series: dict[str, Any]) -> str:
    for tag, s in series.items():
        g = _content(s).get("group") if wire.is_measurement_tag(tag) else None
        if isinstance(g, str) and g:
            return g
    return group_of(run)


@dataclass
class _Run:
    """One run's data, decoded once per version."""

    version: str
    group: str
    decoded: wire.Decoded
    phases: list[Any]
    hardware: list[Any]
    skipped: int  # undecodable phase / hardware values


class InformationPlanePlugin(base_plugin.TBPlugin):
    """Serves exact information-plane data written by `TensorBoardSink`."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        # (experiment, run) -> _Run; (experiment, route key) -> (version, body).
        self._runs: OrderedDict[tuple[str, str], _Run] = OrderedDict()
        self._bodies: OrderedDict[tuple, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/runs": self._serve_runs,
            "/versions": self._serve_versions,
            "/layers": self._serve_layers,
            "/points": self._serve_points,
            "/mean": self._serve_mean,
            "/plane": self._serve_plane,
            "/phases": self._serve_phases,
            "/hardware": self._serve_hardware,
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
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

    def _read(self, request, runs: list[str], tags: list[str]) -> dict[str, dict[str, tensors.Series]]:
        return tensors.read(self._data_provider, plugin_util.context(request.environ),
                            plugin_util.experiment_id(request.environ), PLUGIN_NAME, runs, tags, _KEEP_ALL)

    def _series(self, request, run: str | None) -> dict[str, Any]:
        """The run's tag -> series map, or a 400/404 PublicError."""
        return self._listing(request, [run])[run]

    def _listing(self, request, runs: list[str]) -> dict[str, dict[str, Any]]:
        """Tag -> series maps of these runs (one call to the data provider), or a 400/404 PublicError."""
        if not runs or any(r is None or r == "" for r in runs):
            raise errors.InvalidArgumentError("missing query argument run=NAME (see the runs route)")
        listing = self._list_runs(request, runs)
        for run in runs:
            if not any(wire.is_measurement_tag(tag) for tag in listing.get(run, {})):
                raise errors.NotFoundError(f"run {run!r} has no information-plane data")
        return listing

    def _list_runs(self, request, runs: list[str]) -> dict[str, dict[str, Any]]:
        return self._data_provider.list_tensors(
            plugin_util.context(request.environ),
            experiment_id=plugin_util.experiment_id(request.environ),
            plugin_name=PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=runs),
        )

    def _run(self, request, run: str | None) -> _Run:
        return self._runs_data(request, [run])[run]

    def _runs_data(self, request, runs: list[str]) -> dict[str, _Run]:
        """The runs' decoded data; only runs whose version changed are re-read (in one call)."""
        listing = self._listing(request, runs)
        eid = plugin_util.experiment_id(request.environ)
        out: dict[str, _Run] = {}

        def stale_runs() -> list[str]:
            stale = []
            for run in runs:
                with self._lock:
                    hit = self._runs.get((eid, run))
                if hit is not None and hit.version == _version(listing[run]):
                    out[run] = hit
                elif run not in out:
                    stale.append(run)
            return stale

        if not stale_runs():
            return out
        # One reader at a time: the page asks for a sweep's seeds (plane) and their
        # mean at once; the second request waits for the runs the first one decodes.
        with self._read_lock:
            stale = stale_runs()
            if not stale:
                return out
            tags = sorted({t for r in stale for t in listing[r]})
            data = self._read(request, stale, tags)
            for run in stale:
                out[run] = self._decode(run, listing[run], data.get(run, {}))
                with self._lock:
                    self._runs[(eid, run)] = out[run]
                    self._runs.move_to_end((eid, run))
                    while len(self._runs) > _CACHE_SIZE:
                        self._runs.popitem(last=False)
        return out

    @staticmethod
    def _decode(run: str, series: dict[str, Any], data: dict[str, tensors.Series]) -> _Run:
        data = {t: d for t, d in data.items() if t in series}
        measurement_tags = [t for t in data if wire.is_measurement_tag(t)]
        current = tensors.current(data, measurement_tags)
        contents = {t: _content(s) for t, s in series.items()}
        decoded = views.decode({t: current[t] for t in measurement_tags}, contents)
        phases, hardware, skipped = [], [], 0
        for tag, out in ((PHASES_TAG, phases), (HARDWARE_TAG, hardware)):
            for value in current[tag].values if tag in current else []:
                try:
                    out.append(wire.load_json(value))
                except (ValueError, UnicodeDecodeError, AttributeError):
                    skipped += 1
        return _Run(_version(series), _group(run, series), decoded, phases, hardware, skipped)

    def _cached(self, request, key: tuple, version: str, build: Callable[[], dict[str, Any]]):
        key = (plugin_util.experiment_id(request.environ), *key)
        with self._lock:
            hit = self._bodies.get(key)
        if hit is None or hit[0] != version:
            hit = (version, views.dumps(dict(build(), version=version)))
            with self._lock:
                self._bodies[key] = hit
                self._bodies.move_to_end(key)
                while len(self._bodies) > 2 * _CACHE_SIZE:
                    self._bodies.popitem(last=False)
        return http_util.Respond(request, hit[1], "application/json")

    # -- routes -----------------------------------------------------------------

    @_route
    def _serve_runs(self, request):
        listing = self._list(request)
        return _json(request, sorted(r for r, tags in listing.items() if any(map(wire.is_measurement_tag, tags))))

    @_route
    def _serve_versions(self, request):
        listing = self._list(request)
        return _json(request, {
            run: {"version": _version(tags), "group": _group(run, tags)}
            for run, tags in sorted(listing.items()) if any(map(wire.is_measurement_tag, tags))
        })

    @_route
    def _serve_layers(self, request):
        run = request.args.get("run")
        series = self._series(request, run)
        data = self._run(request, run)
        layers = [{"layer": c.layer, "index": c.index, "label": c.label, "estimator": c.estimator,
                   "max_step": int(c.values["epoch"].max()) if len(c) else None}
                  for c in data.decoded.columns.values()]
        return _json(request, {"run": run, "layers": layers, "has_phases": PHASES_TAG in series,
                               "has_hardware": HARDWARE_TAG in series, "version": data.version})

    @_route
    def _serve_points(self, request):
        run = request.args.get("run")
        try:
            fields = views.parse_fields(request.args.get("fields"))
        except ValueError as e:
            raise errors.InvalidArgumentError(str(e)) from None
        data = self._run(request, run)
        return self._cached(request, (run, "points", fields), data.version,
                            lambda: dict(views.points_body(data.decoded, data.group, fields), run=run))

    @_route
    def _serve_mean(self, request):
        runs = list(dict.fromkeys(request.args.getlist("run")))
        if not runs:
            raise errors.InvalidArgumentError("missing query argument run=NAME (one per run to average)")
        got = self._runs_data(request, runs)
        datas = [(r, got[r]) for r in runs]
        version = hashlib.sha1(repr([d.version for _, d in datas]).encode()).hexdigest()[:16]
        return self._cached(request, (tuple(runs), "mean"), version,
                            lambda: views.mean_body([(r, d.decoded) for r, d in datas]))

    @_route
    def _serve_plane(self, request):
        runs = list(dict.fromkeys(request.args.getlist("run")))
        if not runs:
            raise errors.InvalidArgumentError("missing query argument run=NAME (one per run)")
        got = self._runs_data(request, runs)
        version = hashlib.sha1(repr([got[r].version for r in runs]).encode()).hexdigest()[:16]
        key = (plugin_util.experiment_id(request.environ), tuple(runs), "plane")
        with self._lock:
            hit = self._bodies.get(key)
        if hit is None or hit[0] != version:
            hit = (version, views.plane_binary({r: (got[r].group, got[r].version, got[r].decoded) for r in runs}))
            with self._lock:
                self._bodies[key] = hit
                while len(self._bodies) > 2 * _CACHE_SIZE:
                    self._bodies.popitem(last=False)
        return http_util.Respond(request, hit[1], "application/octet-stream")

    @_route
    def _serve_phases(self, request):
        run = request.args.get("run")
        data = self._run(request, run)

        def build():
            body = views.phases_body(data.phases)
            return dict(body, run=run, skipped=body["skipped"] + data.skipped)

        return self._cached(request, (run, "phases"), data.version, build)

    @_route
    def _serve_hardware(self, request):
        run = request.args.get("run")
        data = self._run(request, run)
        return self._cached(request, (run, "hardware"), data.version,
                            lambda: dict(views.hardware_body(data.hardware), run=run))

    def _static(self, request, name: str):
        """A file of static/, by plain name only (no path separators, no dot files)."""
        match = _STATIC_NAME.match(name)
        if match is None or name not in os.listdir(STATIC_DIR):
            return _json(request, {"error": f"no static file {name!r}"}, code=404)
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            return http_util.Respond(request, f.read(), _CONTENT_TYPES[match.group(1)])

    @_route
    def _serve_index(self, request):
        return self._static(request, "index.js")

    @_route
    def _serve_static(self, request):
        prefix = f"/data/plugin/{PLUGIN_NAME}/static/"
        path = request.path
        name = path[path.find(prefix) + len(prefix):] if prefix in path else ""
        return self._static(request, name)


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
