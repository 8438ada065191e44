"""Convolution as a matrix product (notes §11.1): the patch matrix, the weight column, and their product.

``im2col`` turns every window of the input into one row; the kernel becomes one column; the product of the
two is the convolution, one number per output position. The patch matrix printed here is
:func:`cnnkit.ops.conv.im2col`'s; the symbolic labels ``x11 .. x33`` are found by running the same
``im2col`` on the *positions* of the pixels, so they show exactly which pixel lands where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ops.conv import conv2d
from ..ops.conv import im2col as im2col_op
from ..utils.checks import check_int
from ._format import (
    Explanation,
    MatrixLike,
    heading,
    inline_matrix,
    matrix_lines,
    matrix_text,
    parse_matrix,
    side_by_side,
    wrap,
)

#: Default numbers: exercise 2's image and kernel (notes §14.2), a 3x3 input and a 2x2 filter like §11.1.
EXERCISE2_IMAGE = np.array([[2, 4, 1], [3, 1, 5], [0, 2, 1]], dtype=np.float64)
EXERCISE2_KERNEL = np.array([[0, 1], [-1, 0]], dtype=np.float64)
#: The notes' printed answer to exercise 2.
EXERCISE2_ANSWER = np.array([[1, 0], [1, 3]], dtype=np.float64)


def _label(prefix: str, r: int, c: int, big: bool) -> str:
    return f"{prefix}{r},{c}" if big else f"{prefix}{r}{c}"


def _labels(prefix: str, shape: tuple[int, int]) -> np.ndarray:
    """``x11, x12, ...`` (1-based, as the notes write them) for every entry of a matrix."""
    big = max(shape) > 9
    out = np.empty(shape, dtype=object)
    for r in range(shape[0]):
        for c in range(shape[1]):
            out[r, c] = _label(prefix, r + 1, c + 1, big)
    return out


@dataclass(frozen=True)
class Im2colExplanation(Explanation):
    """The numbers of §11.1 (see :func:`im2col`)."""

    matrix: np.ndarray
    kernel: np.ndarray
    stride: int
    padding: int
    symbolic_input: np.ndarray  # labels x11.. of the input
    symbolic_patches: np.ndarray  # labels in im2col's layout ("0" for padding)
    patches: np.ndarray  # im2col(matrix), (OH*OW, KH*KW)
    symbolic_weights: np.ndarray  # w11.. as a column
    weights: np.ndarray  # the kernel as a column (KH*KW, 1)
    product: np.ndarray  # patches @ weights, (OH*OW, 1)
    output: np.ndarray  # product reshaped to (OH, OW)
    conv_output: np.ndarray  # conv2d(matrix, kernel), for comparison
    exercise2: bool = False  # the inputs are exercise 2's (notes §14.2)

    @property
    def matches_conv(self) -> bool:
        """True when ``im2col(X) @ W`` equals the direct convolution."""
        return bool(np.allclose(self.output, self.conv_output))

    def render(self) -> str:
        kh, kw = self.kernel.shape
        oh, ow = self.output.shape
        rows, cols = self.patches.shape
        lines = [heading("Convolution as a matrix product: im2col (notes §11.1)"), ""]
        lines.append(
            wrap(
                f"Each of the {rows} output positions gets one row: its {kh}x{kw} window read row by row. "
                f"The {kh}x{kw} kernel becomes one column of {cols} weights, in the same order."
            )
        )
        lines.append("")
        if self.padding:
            lines.append(f"(padding {self.padding}: a 0 in the patch matrix is a padding pixel)")
        lines.append(
            side_by_side(
                [
                    matrix_lines(self.symbolic_input, labels=self.symbolic_input),
                    "->",
                    matrix_lines(self.symbolic_patches, labels=self.symbolic_patches),
                ]
            )
        )
        lines.append("")
        wlab = _labels("w", self.kernel.shape)
        lines.append(
            side_by_side(
                [
                    matrix_lines(wlab, labels=wlab),
                    "->",
                    matrix_lines(self.symbolic_weights, labels=self.symbolic_weights),
                ]
            )
        )
        lines.append("")
        lines.append("With numbers: image and kernel")
        lines.append(side_by_side([matrix_lines(self.matrix), "   ", matrix_lines(self.kernel)]))
        lines.append("")
        lines.append("Output = im2col(X) x W:")
        lines.append(
            side_by_side(
                [
                    matrix_lines(self.patches),
                    "x",
                    matrix_lines(self.weights),
                    "=",
                    matrix_lines(self.product),
                ]
            )
        )
        lines.append("")
        lines.append(f"Reshaped to {oh}x{ow} (one row of outputs per row of window positions):")
        lines.append(matrix_text(self.output))
        lines.append("")
        if self.matches_conv:
            lines.append(
                wrap(
                    "This equals the convolution computed window by window (conv2d), as §11.1 says. "
                    "cnnkit's conv2d works exactly this way: one im2col copy and one matrix product (GEMM) "
                    "for a whole batch, which is why convolution is fast."
                )
            )
        else:  # pragma: no cover - would be a library bug
            lines.append("WARNING: the product differs from conv2d's output:")
            lines.append(matrix_text(self.conv_output))
        if self.exercise2:
            agree = "agrees" if np.array_equal(self.output, EXERCISE2_ANSWER) else "does NOT agree"
            lines.append("")
            lines.append(
                wrap(
                    f"These are exercise 2's image and kernel (§14.2); the notes' answer "
                    f"{inline_matrix(EXERCISE2_ANSWER)} {agree}."
                )
            )
        return "\n".join(lines) + "\n"


def im2col(
    matrix: MatrixLike | None = None,
    kernel_size: int = 2,
    kernel: MatrixLike | None = None,
    stride: int = 1,
    padding: int = 0,
) -> Im2colExplanation:
    """Explain §11.1: the patch matrix, the weight column and ``Output = im2col(X) x W``.

    Args:
        matrix: the input (default: exercise 2's 3x3 image ``[[2, 4, 1], [3, 1, 5], [0, 2, 1]]``).
        kernel_size: the square kernel size when ``kernel`` is not given.
        kernel: the filter (default: exercise 2's ``[[0, 1], [-1, 0]]`` for size 2, else ``1, 2, ...``).
        stride, padding: ints, as in :func:`cnnkit.ops.conv.im2col`.

    >>> r = im2col()
    >>> r.symbolic_patches[1].tolist()
    ['x12', 'x13', 'x22', 'x23']
    >>> r.output.tolist()
    [[1.0, 0.0], [1.0, 3.0]]
    """
    for name, value, minimum in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
    ):
        check_int(value, name, "explain.im2col", minimum)
    mat = EXERCISE2_IMAGE if matrix is None else parse_matrix(matrix, "matrix", "explain.im2col")
    if kernel is not None:
        ker = parse_matrix(kernel, "kernel", "explain.im2col")
    elif kernel_size == 2:
        ker = EXERCISE2_KERNEL
    else:
        ker = np.arange(1, kernel_size * kernel_size + 1, dtype=np.float64).reshape(kernel_size, kernel_size)
    kh, kw = ker.shape
    x = mat[None, None]
    patches = im2col_op(x, (kh, kw), stride=stride, padding=padding)
    # The same im2col applied to pixel numbers 1..H*W (0 = padding) tells which pixel lands where.
    h, w = mat.shape
    positions = np.arange(1, h * w + 1, dtype=np.float64).reshape(1, 1, h, w)
    index = np.rint(im2col_op(positions, (kh, kw), stride=stride, padding=padding)).astype(int)
    in_labels = _labels("x", mat.shape)
    flat = np.concatenate([np.array(["0"], dtype=object), in_labels.ravel()])
    sym_patches = flat[index]
    weights = ker.reshape(-1, 1)
    product = patches @ weights
    conv_out = np.ascontiguousarray(conv2d(x, ker[None, None], stride=stride, padding=padding)[0, 0])
    output = product.reshape(conv_out.shape)
    return Im2colExplanation(
        matrix=mat.copy(),
        kernel=ker.copy(),
        stride=int(stride),
        padding=int(padding),
        symbolic_input=in_labels,
        symbolic_patches=sym_patches,
        patches=patches,
        symbolic_weights=_labels("w", ker.shape).reshape(-1, 1),
        weights=weights,
        product=product,
        output=output,
        conv_output=conv_out,
        exercise2=bool(
            np.array_equal(mat, EXERCISE2_IMAGE)
            and np.array_equal(ker, EXERCISE2_KERNEL)
            and (stride, padding) == (1, 0)
        ),
    )
