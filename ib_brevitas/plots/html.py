"""`ib-brevitas plot RUN_DIR... --html OUT.html`: the Information Plane tab as one self-contained file.

The page is the tab itself: the plugin's ES modules (`tensorboard/static`),
joined into one inline script, its stylesheet inline, and the bodies of the
routes the tab would fetch (computed by `tensorboard.views`, the code the
plugin runs) as inline JSON. A Content-Security-Policy of `default-src 'none'`
keeps every request inside the page: it opens from `file://`, offline, and
shows what TensorBoard would show. The mean of a configuration is saved for
all of its runs together (the tab's default); its hardware tables are not
part of a run directory's records and are left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from ib_brevitas.files import atomic_write
from ib_brevitas.seedmean import group_of
from ib_brevitas.tensorboard import STATIC_DIR, views, wire

_IMPORT = re.compile(r'^import \{[^}]*\} from "\./([a-z][a-z0-9_-]*\.js)";\n', re.MULTILINE)
_DECL = re.compile(r"^(?:export )?(?:async )?(?:function\*?|const|let|class) ([A-Za-z_$][\w$]*)", re.MULTILINE)
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def bundle(entry: str = "app.js") -> str:
    """The frontend's modules as one classic script body, dependencies first.

    The modules import only `{ names } from "./file.js"` and keep their top-level
    names distinct (checked here), so joining them without the import lines and
    `export` keywords gives the same program.
    """
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in stack:
            raise ValueError(f"static/{name}: circular import through {' -> '.join(stack)}")
        for dep in _IMPORT.findall((STATIC_DIR / name).read_text(encoding="utf-8")):
            visit(dep, stack + (name,))
        order.append(name)

    visit(entry)
    parts, owner = [], {}
    for name in order:
        src = (STATIC_DIR / name).read_text(encoding="utf-8")
        for decl in _DECL.findall(src):
            if decl in owner:
                raise ValueError(f"static/{name} and static/{owner[decl]} both declare {decl!r}; rename one")
            owner[decl] = name
        src = _IMPORT.sub("", src)
        src = re.sub(r"^export (?=(?:async )?(?:function|const|let|class) )", "", src, flags=re.MULTILINE)
        if re.search(r"^\s*(?:import|export)\b", src, re.MULTILINE):
            raise ValueError(f"static/{name}: an import/export the bundler does not understand")
        parts.append(f"// ---- static/{name}\n{src}")
    return "\n".join(parts)


def page_data(run_dirs: Sequence[str | Path], estimators: Sequence[str] | None = None) -> dict[str, Any]:
    """The route bodies the tab fetches, for these runs (the tab's JSON, keyed as api.js looks them up)."""
    from ib_brevitas.plots.panels import load_runs

    runs = load_runs(run_dirs, estimators)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"run directories {dupes} share a name; the page tells runs apart by name")
    data: dict[str, Any] = {"versions": {}, "points": {}, "phases": {}, "hardware": {}, "mean": {}}
    decoded = {}
    for run in sorted(runs, key=lambda r: r.name):
        group = group_of(run.name)
        decoded[run.name] = wire.decode_records(run.records)
        data["versions"][run.name] = {"version": "file", "group": group}
        data["points"][run.name] = dict(views.points_body(decoded[run.name], group), run=run.name, version="file")
        data["phases"][run.name] = dict(views.phases_body([[e.to_dict() for e in run.events]]), run=run.name)
        data["hardware"][run.name] = {"rows": [], "totals": {}, "skipped": 0}
    groups: dict[str, list[str]] = {}
    for name in sorted(decoded):
        groups.setdefault(group_of(name), []).append(name)
    for members in groups.values():
        if len(members) > 1:
            key = json.dumps(members, ensure_ascii=False, separators=(",", ":"))
            data["mean"][key] = views.mean_body([(m, decoded[m]) for m in members])
    return data


def render_page(data: dict[str, Any], title: str) -> str:
    script = bundle()
    if "</script" in script.lower():
        raise ValueError("static/: a module contains '</script'; it cannot be inlined")
    payload = views.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    css = (STATIC_DIR / "style.css").read_text(encoding="utf-8")
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        f"<title>{esc}</title>\n<style>\n{css}</style>\n</head>\n<body>\n"
        f"<script type=\"application/json\" id=\"ib-data\">{payload}</script>\n"
        f"<script>\n\"use strict\";\n(() => {{\n{script}\n"
        "useEmbedded(JSON.parse(document.getElementById(\"ib-data\").textContent));\nrender();\n})();\n</script>\n"
        "</body>\n</html>\n"
    )


def write_html(run_dirs: Sequence[str | Path], out: str | Path, estimators: Sequence[str] | None = None) -> Path:
    """Write the self-contained page for these runs to `out` (atomically); `estimators` as `plot_runs`'."""
    data = page_data(run_dirs, estimators)
    title = "Information plane: " + ", ".join(sorted(data["versions"]))[:200]
    out = Path(out)
    atomic_write(out, render_page(data, title))
    return out
