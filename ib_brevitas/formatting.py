"""The one formatter for tables and numbers printed by the CLI and written to reports."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, spec: str = ".3f") -> str:
    """A cell: '-' for missing, floats by `spec`, anything else as str."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_table(head: list[str], rows: list[list[Any]], markdown: bool = False) -> str:
    """A small aligned text (or Markdown) table; cells are shown as given."""
    if markdown:
        def esc(c: Any) -> str:
            return str(c).replace("|", "\\|")

        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def line(r: list[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])
