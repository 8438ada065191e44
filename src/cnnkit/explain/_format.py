"""Shared helpers of the explanations: parsing matrices, printing numbers and matrices as text.

Only presentation lives here. Every number an explanation prints is computed by :mod:`cnnkit.ops` (or,
for the notes' arithmetic such as a fraction, by the formula the text shows next to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError

MatrixLike = str | Sequence[Sequence[float]] | np.ndarray


class Explanation:
    """Base of every explanation result: structured fields plus a ``.text`` rendering.

    Subclasses are dataclasses holding the numbers (as produced by the library's ops) and implement
    :meth:`render`. ``str(result)`` and ``result.text`` give the same text.
    """

    def render(self) -> str:
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The explanation as plain text, ready to print."""
        return self.render()

    def __str__(self) -> str:
        return self.text


def parse_matrix(value: MatrixLike, what: str = "matrix", op: str = "explain") -> np.ndarray:
    """A 2-D float64 array from a nested sequence, an array, or a string ``"1 0 1; 0 2 1"``.

    In the string form rows are separated by ``;`` (or new lines) and entries by spaces or commas.
    """
    if isinstance(value, str):
        rows = [r.replace(",", " ").split() for r in value.replace("\n", ";").split(";")]
        rows = [r for r in rows if r]
        try:
            data = [[float(v) for v in row] for row in rows]
        except ValueError:
            raise ConfigError(f"{op}: {what} must be numbers, rows separated by ';', got {value!r}") from None
        if not data or len({len(r) for r in data}) != 1:
            raise ShapeError(
                f"{op}: {what} must have rows of equal length, got row lengths {[len(r) for r in data]} "
                f"in {value!r}"
            )
        arr = np.array(data, dtype=np.float64)
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{op}: {what} must be a 2-D array of numbers, got {value!r:.100}") from None
    if arr.ndim != 2 or arr.size == 0:
        raise ShapeError(f"{op}: {what} must be a non-empty 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{op}: {what} must contain finite numbers only, got {arr.tolist()}")
    return arr


def parse_vector(value: str | Sequence[float] | np.ndarray, what: str, op: str) -> np.ndarray:
    """A 1-D float64 array from a sequence or a string ``"2 1 0.1"`` (spaces or commas)."""
    if isinstance(value, str):
        try:
            arr = np.array([float(v) for v in value.replace(",", " ").split()], dtype=np.float64)
        except ValueError:
            raise ConfigError(f"{op}: {what} must be numbers, got {value!r}") from None
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{op}: {what} must be a list of numbers, got {value!r:.100}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ShapeError(f"{op}: {what} must be a non-empty list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{op}: {what} must contain finite numbers only, got {arr.tolist()}")
    return arr


def num(x: Any, places: int = 4) -> str:
    """A number as short text: integers without decimals, others with at most ``places`` decimals."""
    x = float(x)
    if np.isinf(x):
        return "-inf" if x < 0 else "inf"
    if np.isnan(x):
        return "nan"
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    text = f"{x:.{places}f}".rstrip("0").rstrip(".")
    if text in ("0", "-0"):
        # too small for the requested places: fall back to scientific notation
        return f"{x:.2e}"
    return text


def signed(x: Any, places: int = 4) -> str:
    """A number wrapped in parentheses when negative, for use inside a sum (``1 x (-1)``)."""
    text = num(x, places)
    return f"({text})" if text.startswith("-") else text


def matrix_lines(arr: np.ndarray, places: int = 4, labels: np.ndarray | None = None) -> list[str]:
    """A 2-D array as lines of right-aligned columns between brackets.

    ``labels`` (same shape, strings) replaces the numbers, for the symbolic matrices of notes section 11.1.
    """
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[None, :]
    cells = labels if labels is not None else np.vectorize(lambda v: num(v, places), otypes=[object])(arr)
    cells = np.asarray(cells, dtype=object)
    width = max(len(str(c)) for c in cells.ravel())
    return ["[ " + "  ".join(str(c).rjust(width) for c in row) + " ]" for row in cells]


def matrix_text(
    arr: np.ndarray, places: int = 4, indent: str = "  ", labels: np.ndarray | None = None
) -> str:
    """:func:`matrix_lines` joined into one indented block."""
    return "\n".join(indent + line for line in matrix_lines(arr, places, labels))


def inline_matrix(arr: np.ndarray, places: int = 4) -> str:
    """A matrix on one line, as the notes would write it: ``[[0, 0], [-1, -1]]``."""
    arr = np.atleast_2d(np.asarray(arr))
    return "[" + ", ".join("[" + ", ".join(num(v, places) for v in row) + "]" for row in arr) + "]"


def side_by_side(blocks: Sequence[list[str] | str], gap: str = "   ", indent: str = "") -> str:
    """Join text blocks horizontally, centring each block vertically (for ``A o B = C`` layouts).

    A block that is a plain string is an operator placed on the middle line.
    """
    line_blocks = [[b] if isinstance(b, str) else list(b) for b in blocks]
    height = max(len(b) for b in line_blocks)
    padded = []
    for block in line_blocks:
        width = max((len(s) for s in block), default=0)
        top = (height - len(block)) // 2
        rows = [" " * width] * top + [s.ljust(width) for s in block]
        rows += [" " * width] * (height - len(rows))
        padded.append(rows)
    return "\n".join((indent + gap.join(parts)).rstrip() for parts in zip(*padded, strict=True))


def heading(title: str, char: str = "=") -> str:
    """A title underlined with ``char``."""
    return f"{title}\n{char * len(title)}"


def thousands(n: int) -> str:
    """An integer with thousands separators, as the notes print parameter counts (``524,416``)."""
    return f"{int(n):,}"


def wrap(text: str, width: int = 100, indent: str = "") -> str:
    """Fill a paragraph of prose to ``width`` columns."""
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 pixel"``, ``"2 pixels"``."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
