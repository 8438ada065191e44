"""Plain-text tables and warnings for the ``cnnkit`` subcommands."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one ``l``/``r`` per column (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for k, row in enumerate(cells):
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def warn(cmd: str, message: str) -> None:
    """Print ``cnnkit <cmd>: warning: ...`` on stderr."""
    print(f"cnnkit {cmd}: warning: {message}", file=sys.stderr)
