"""Pooling window by window, as the notes' §4.2 lists it ("Window 1 (top-left): max(1, 3, 4, 6) = 6").

The output is computed by :func:`cnnkit.ops.pool.max_pool2d` (or ``avg_pool2d``/``min_pool2d``); the
windows shown are rows of :func:`cnnkit.ops.conv.im2col` of the padded input, padded the way the pooling op
pads (-inf for max, +inf for min, zeros for average, so padding never wins and counts in the average's
divisor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..ops.conv import im2col
from ..ops.pool import avg_pool2d, max_pool2d, min_pool2d, pool_geometry
from ..utils.checks import check_int
from ._format import Explanation, MatrixLike, heading, inline_matrix, matrix_text, num, parse_matrix

#: The notes' §4.2 input matrix.
NOTES_MATRIX = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], dtype=np.float64)
#: What the notes print for 2x2 windows, stride 2 (§4.2.1 and §4.2.2); they give no min example.
NOTES_RESULTS = {
    "max": np.array([[6, 9], [7, 8]], dtype=np.float64),
    "avg": np.array([[3.5, 4.25], [3.25, 5.0]], dtype=np.float64),
}

_OPS = {"max": max_pool2d, "avg": avg_pool2d, "min": min_pool2d}
_FILL = {"max": -np.inf, "min": np.inf, "avg": 0.0}
_SECTION = {"max": "§4.2.1", "avg": "§4.2.2", "min": "§4.2.3"}
_CORNERS = {(0, 0): "top-left", (0, 1): "top-right", (1, 0): "bottom-left", (1, 1): "bottom-right"}


@dataclass(frozen=True)
class PoolWindow:
    """One output position: the values in its window and the pooled value."""

    position: tuple[int, int]
    values: np.ndarray  # the window, kh x kw (padding shown as -inf/+inf/0)
    result: float


@dataclass(frozen=True)
class PoolExplanation(Explanation):
    """The numbers of a pooling walk-through (see :func:`pool`)."""

    matrix: np.ndarray
    kind: str
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: int
    dilation: int
    windows: list[PoolWindow]
    output: np.ndarray
    notes_result: np.ndarray | None = None
    max_windows: int = 16

    @property
    def matches_notes(self) -> bool | None:
        """For the notes' example, whether the output equals what §4.2 prints (None otherwise)."""
        if self.notes_result is None:
            return None
        return bool(np.allclose(self.output, self.notes_result))

    def _formula(self, window: PoolWindow) -> str:
        values = window.values.ravel()
        shown = ", ".join(num(v) for v in values)
        if self.kind == "avg":
            return f"({' + '.join(num(v) for v in values)})/{values.size} = {num(window.result)}"
        return f"{self.kind}({shown}) = {num(window.result)}"

    def render(self) -> str:
        oh, ow = self.output.shape
        kh, kw = self.size
        name = {"max": "Max", "avg": "Average", "min": "Min"}[self.kind]
        lines = [
            heading(f"{name} pooling (notes {_SECTION[self.kind]})"),
            "",
            "Input:",
            matrix_text(self.matrix),
        ]
        lines.append("")
        what = {
            "max": "the largest value",
            "avg": "the mean of the values",
            "min": "the smallest value",
        }[self.kind]
        lines.append(
            f"Window {kh}x{kw}, stride {self.stride[0] if self.stride[0] == self.stride[1] else self.stride}: "
            f"each output is {what} in its window."
        )
        if self.padding:
            fill = {"max": "-inf (never the max)", "min": "+inf (never the min)", "avg": "0 (counted in /n)"}
            lines.append(f"Padding {self.padding}: the border is filled with {fill[self.kind]}.")
        if self.dilation > 1:
            lines.append(f"Dilation {self.dilation}: the window reads every {self.dilation}th value.")
        lines.append(f"Output size {oh}x{ow} (the §3.4 formula with P = {self.padding}).")
        lines.append("")
        for k, window in enumerate(self.windows[: self.max_windows], start=1):
            where = _CORNERS.get(window.position) if (oh, ow) == (2, 2) else None
            label = where or f"row {window.position[0]}, column {window.position[1]}"
            lines.append(f"- Window {k} ({label}): {self._formula(window)}")
        if len(self.windows) > self.max_windows:
            lines.append(f"- ... {len(self.windows) - self.max_windows} more windows, computed the same way")
        lines += ["", f"Output ({oh}x{ow}):", matrix_text(self.output), ""]
        if self.notes_result is not None:
            if self.matches_notes:
                lines.append(
                    f"This agrees with the notes' {_SECTION[self.kind]}: {inline_matrix(self.notes_result)}."
                )
            else:
                lines.append(
                    f"The notes print {inline_matrix(self.notes_result)}; the correct result is "
                    f"{inline_matrix(self.output)}."
                )
        elif self.kind == "min" and np.array_equal(self.matrix, NOTES_MATRIX):
            lines.append("The notes give no min-pooling example (§4.2.3); this is the same matrix as §4.2.1.")
        return "\n".join(lines).rstrip() + "\n"


def pool(
    matrix: MatrixLike | None = None,
    kind: str = "max",
    size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: int = 0,
    dilation: int = 1,
) -> PoolExplanation:
    """Explain max, average or min pooling of one matrix window by window (notes §4.2).

    Args:
        matrix: the input (default: the notes' 4x4 matrix); a nested list, an array or ``"1 3; 4 6"``.
        kind: ``"max"``, ``"avg"`` or ``"min"``.
        size: window size (int or pair); stride defaults to the window size, as in the notes.
        padding, dilation: ints, as in :func:`cnnkit.ops.pool.max_pool2d`.

    >>> pool().output.tolist()
    [[6.0, 9.0], [7.0, 8.0]]
    >>> pool(kind="avg").output.tolist()
    [[3.5, 4.25], [3.25, 5.0]]
    """
    if kind not in _OPS:
        raise ConfigError(f"explain.pool: kind must be one of 'max', 'avg', 'min', got {kind!r}")
    for name, value, minimum in (("padding", padding, 0), ("dilation", dilation, 1)):
        check_int(value, name, "explain.pool", minimum)
    mat = NOTES_MATRIX if matrix is None else parse_matrix(matrix, "matrix", "explain.pool")
    x = mat[None, None]
    out = np.ascontiguousarray(_OPS[kind](x, size, stride, padding, dilation)[0, 0])
    g = pool_geometry(mat.shape, size, stride, padding, dilation, op=f"explain.pool ({kind})")
    ph, pw = g.padding
    padded = np.pad(mat, ((ph, ph), (pw, pw)), constant_values=_FILL[kind])
    cols = im2col(padded[None, None], g.kernel, stride=g.stride, dilation=g.dilation)
    oh, ow = out.shape
    windows = [
        PoolWindow((r // ow, r % ow), row.reshape(g.kernel), float(out[r // ow, r % ow]))
        for r, row in enumerate(cols)
    ]
    notes = None
    if (
        np.array_equal(mat, NOTES_MATRIX)
        and kind in NOTES_RESULTS
        and g.kernel == (2, 2)
        and g.stride == (2, 2)
        and g.padding == (0, 0)
        and g.dilation == (1, 1)
    ):
        notes = NOTES_RESULTS[kind].copy()
    return PoolExplanation(
        matrix=mat.copy(),
        kind=kind,
        size=g.kernel,
        stride=g.stride,
        padding=padding,
        dilation=dilation,
        windows=windows,
        output=out,
        notes_result=notes,
    )
