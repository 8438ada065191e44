"""A convolution step by step, as the notes' §3.3 does it by hand.

For every output position the explanation shows the window of the (padded) input under the kernel, the
element-wise products with the kernel and their sum; then the whole output matrix. The windows are rows of
:func:`cnnkit.ops.conv.im2col` and the output is :func:`cnnkit.ops.conv.conv2d`, so what is printed is
what the library computes.

Cross-correlation or convolution? §3.2 defines ``(I * K)[i, j] = sum_m sum_n I[i - m, j - n] K[m, n]``,
which flips the kernel; §3.3's worked example (like every deep-learning framework) slides the kernel
without flipping, ``out[i, j] = sum_m sum_n I[i + m, j + n] K[m, n]``: a cross-correlation. cnnkit computes
the cross-correlation by default and the flipped form with ``flip_kernel=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ops.conv import conv2d, im2col
from ..utils.checks import check_int
from ._format import (
    Explanation,
    MatrixLike,
    heading,
    inline_matrix,
    matrix_lines,
    matrix_text,
    num,
    parse_matrix,
    plural,
    side_by_side,
    signed,
    wrap,
)

#: The notes' §3.3 image and edge-detecting filter.
NOTES_IMAGE = np.array([[1, 0, 1, 2], [0, 2, 1, 0], [1, 1, 0, 1], [2, 0, 1, 1]], dtype=np.float64)
NOTES_KERNEL = np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float64)
#: The output the notes print at the end of §3.3 (it is not what the example computes).
NOTES_PRINTED_OUTPUT = np.array([[0, 3], [2, -1]], dtype=np.float64)


@dataclass(frozen=True)
class ConvStep:
    """One output position: the window under the kernel, the products and their sum."""

    position: tuple[int, int]
    window: np.ndarray
    products: np.ndarray
    total: float


@dataclass(frozen=True)
class ConvExplanation(Explanation):
    """The numbers of a step-by-step convolution (see :func:`conv`)."""

    image: np.ndarray
    kernel: np.ndarray
    stride: int
    padding: int
    dilation: int
    flip_kernel: bool
    padded: np.ndarray
    applied_kernel: np.ndarray  # the kernel as slid over the image (flipped when flip_kernel)
    steps: list[ConvStep]
    output: np.ndarray
    notes_defaults: bool
    notes_printed: np.ndarray | None = None
    other_output: np.ndarray | None = field(default=None)  # the output with the other flip convention
    max_steps: int = 16  # the text shows at most this many window positions

    @property
    def matches_notes(self) -> bool | None:
        """For the notes' inputs, whether the output equals what §3.3 prints (None otherwise)."""
        if self.notes_printed is None:
            return None
        return bool(np.array_equal(self.output, self.notes_printed))

    def render(self) -> str:
        oh, ow = self.output.shape
        kh, kw = self.kernel.shape
        title = "Convolution step by step (notes §3.3)"
        lines = [heading(title), ""]
        lines += ["Image I:", matrix_text(self.image), "", "Kernel K:", matrix_text(self.kernel), ""]
        if self.padding:
            lines += [
                f"Padding {self.padding}: {plural(self.padding, 'ring')} of zeros around the image (§3.4's P):",
                matrix_text(self.padded),
                "",
            ]
        if self.flip_kernel:
            lines += [
                wrap(
                    "flip_kernel=True: the true convolution of §3.2, sum_m sum_n I[i - m, j - n] K[m, n]. "
                    "It equals sliding the kernel turned by 180 degrees without flipping:"
                ),
                matrix_text(self.applied_kernel),
                "",
            ]
        else:
            lines += [
                wrap(
                    "The kernel slides over the image without being flipped: out[i, j] = sum_m sum_n "
                    "I[i + m, j + n] K[m, n]. This is a cross-correlation: what §3.3's example does, and what "
                    "every framework (and cnnkit) calls convolution. §3.2's formula, I[i - m, j - n] K[m, n], "
                    "flips the kernel by 180 degrees first (--flip / flip_kernel=True); for a learned kernel "
                    "the difference does not matter, since the network simply learns the flipped kernel."
                ),
                "",
            ]
        span = (self.dilation * (kh - 1) + 1, self.dilation * (kw - 1) + 1)
        move = f"the window moves {plural(self.stride, 'pixel')} at a time (stride {self.stride})"
        if self.dilation > 1:
            move += (
                f"; dilation {self.dilation} reads every {self.dilation}th pixel, so the {kh}x{kw} kernel "
                f"covers {span[0]}x{span[1]} pixels"
            )
        lines += [f"Output size {oh}x{ow} (§3.4); {move}.", ""]
        for k, step in enumerate(self.steps[: self.max_steps], start=1):
            i, j = step.position
            r0, c0 = i * self.stride, j * self.stride
            lines.append(
                f"Step {k}: output[{i}, {j}], window rows {r0}..{r0 + span[0] - 1}, "
                f"columns {c0}..{c0 + span[1] - 1} of the {'padded ' if self.padding else ''}image"
            )
            lines.append(
                side_by_side(
                    [
                        matrix_lines(step.window),
                        "o",
                        matrix_lines(self.applied_kernel),
                        "=",
                        matrix_lines(step.products),
                    ]
                )
            )
            terms = " + ".join(
                f"({num(a)} x {signed(b)})"
                for a, b in zip(step.window.ravel(), self.applied_kernel.ravel(), strict=True)
            )
            lines.append(f"  = {terms}")
            lines.append(f"  = {' + '.join(signed(p) for p in step.products.ravel())} = {num(step.total)}")
            lines.append("")
        if len(self.steps) > self.max_steps:
            lines += [f"... {len(self.steps) - self.max_steps} more positions, computed the same way.", ""]
        lines += [f"Output ({oh}x{ow}):", matrix_text(self.output), ""]
        if self.notes_printed is not None:
            lines += self._notes_comparison()
        return "\n".join(lines).rstrip() + "\n"

    def _notes_comparison(self) -> list[str]:
        computed = inline_matrix(self.output)
        printed = inline_matrix(self.notes_printed)
        other = inline_matrix(self.other_output) if self.other_output is not None else "?"
        if self.matches_notes:
            return [f"This matches the output the notes print in §3.3, {printed}."]
        kind = "convolution with the flipped kernel (§3.2)" if self.flip_kernel else "cross-correlation"
        other_kind = (
            "cross-correlation (§3.3's sliding)" if self.flip_kernel else "flipped-kernel §3.2 formula"
        )
        return [
            f"Note: the notes print {printed} as §3.3's final output. That is wrong: the correct {kind}",
            f"is {computed}. The notes' own Step 1 gives 0, which agrees with output[0, 0] above; the",
            f"other three printed numbers do not follow from this image and kernel. The {other_kind}",
            f"gives {other}, so the printed matrix fits neither convention (see docs/notes-errata.md).",
        ]


def _as_int(value: int, name: str, minimum: int) -> int:
    return check_int(value, name, "explain.conv", minimum)


def conv(
    image: MatrixLike | None = None,
    kernel: MatrixLike | None = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    flip_kernel: bool = False,
) -> ConvExplanation:
    """Explain a single-channel 2-D convolution window by window (notes §3.2-§3.4).

    Args:
        image: the input matrix (default: the notes' 4x4 image). A nested list, an array, or a string
            with rows separated by ``;``: ``"1 0 1 2; 0 2 1 0; 1 1 0 1; 2 0 1 1"``.
        kernel: the filter (default: the notes' 3x3 vertical-edge detector), same forms.
        stride, padding, dilation: as in :func:`cnnkit.ops.conv.conv2d` (ints).
        flip_kernel: use §3.2's flipped-kernel formula instead of the cross-correlation.

    Returns:
        a :class:`ConvExplanation`: ``.output`` is the ``conv2d`` result, ``.steps`` the windows,
        products and sums, ``.text`` the printable walk-through. With the notes' inputs the text says
        where the notes' printed output ``[[0, 3], [2, -1]]`` differs from the correct
        ``[[0, 0], [-1, -1]]``.

    >>> conv().output.tolist()
    [[0.0, 0.0], [-1.0, -1.0]]
    """
    img = NOTES_IMAGE if image is None else parse_matrix(image, "image", "explain.conv")
    ker = NOTES_KERNEL if kernel is None else parse_matrix(kernel, "kernel", "explain.conv")
    stride = _as_int(stride, "stride", 1)
    padding = _as_int(padding, "padding", 0)
    dilation = _as_int(dilation, "dilation", 1)
    flip_kernel = bool(flip_kernel)

    x = img[None, None]
    w = ker[None, None]
    output = conv2d(x, w, stride=stride, padding=padding, dilation=dilation, flip_kernel=flip_kernel)[0, 0]
    output = np.ascontiguousarray(output)
    kh, kw = ker.shape
    # im2col gives one row per output position, in row-major order, holding the window it reads.
    cols = im2col(x, (kh, kw), stride=stride, padding=padding, dilation=dilation)
    applied = ker[::-1, ::-1].copy() if flip_kernel else ker.copy()
    oh, ow = output.shape
    steps = []
    for r, row in enumerate(cols):
        window = row.reshape(kh, kw)
        products = window * applied
        total = float(output[r // ow, r % ow])
        steps.append(ConvStep((r // ow, r % ow), window, products, total))

    defaults = (
        np.array_equal(img, NOTES_IMAGE)
        and np.array_equal(ker, NOTES_KERNEL)
        and (stride, padding, dilation) == (1, 0, 1)
    )
    other = None
    if defaults:
        other = np.ascontiguousarray(conv2d(x, w, flip_kernel=not flip_kernel)[0, 0])
    padded = np.pad(img, padding) if padding else img.copy()
    return ConvExplanation(
        image=img.copy(),
        kernel=ker.copy(),
        stride=stride,
        padding=padding,
        dilation=dilation,
        flip_kernel=flip_kernel,
        padded=padded,
        applied_kernel=applied,
        steps=steps,
        output=output,
        notes_defaults=defaults,
        notes_printed=NOTES_PRINTED_OUTPUT.copy() if defaults else None,
        other_output=other,
    )
