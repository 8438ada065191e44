"""The output-size formula of notes §3.4 with the numbers put in, and why it rounds down.

``out = (W - F + 2P) / S + 1`` (with dilation ``D`` the kernel covers ``F' = D(F - 1) + 1`` pixels, so
``F`` becomes ``F'``). When ``S`` does not divide ``W - F' + 2P`` the exact value is a fraction; the
library (:func:`cnnkit.ops.conv.conv_output_size`, PyTorch, Keras) rounds it *down*: one more window would
hang off the edge of the (padded) input, so it is not computed, and the last few pixels are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..ops.conv import conv_output_size
from ..utils.checks import check_int
from ._format import Explanation, heading, num, plural, wrap


@dataclass(frozen=True)
class SizeExplanation(Explanation):
    """The §3.4 formula evaluated (see :func:`size`)."""

    input: int
    kernel: int
    padding: int
    stride: int
    dilation: int
    effective_kernel: int  # D(F - 1) + 1, the pixels one window covers
    exact: Fraction  # (W - F' + 2P) / S + 1 before rounding
    output: int  # conv_output_size(...), the library's answer
    unused: int  # pixels at the far edge of the padded input that no window reads

    @property
    def is_exact(self) -> bool:
        """True when the stride divides ``W - F' + 2P`` (no rounding needed)."""
        return self.exact.denominator == 1

    @property
    def windows_start(self) -> list[int]:
        """The start of every window along the axis, in padded coordinates."""
        return [k * self.stride for k in range(self.output)]

    def render(self) -> str:
        w, f, p, s = self.input, self.kernel, self.padding, self.stride
        fe = self.effective_kernel
        lines = [heading("Output size (notes §3.4)"), ""]
        lines.append("Output = (W - F + 2P) / S + 1")
        dil = f", dilation D = {self.dilation}" if self.dilation > 1 else ""
        lines.append(f"with W = {w}, F = {f}, P = {p}, S = {s}{dil}")
        if self.dilation > 1:
            lines.append(
                f"A dilated kernel covers F' = D(F - 1) + 1 = {self.dilation}*({f} - 1) + 1 = {fe} pixels, "
                "so F' takes F's place."
            )
        top = w - fe + 2 * p
        frac = Fraction(top, s)
        fname = "F'" if self.dilation > 1 else "F"
        lines.append("")
        division = f"{top}/{s} + 1 = {_frac_text(frac)} + 1" if s > 1 else f"{top} + 1"
        lines.append(f"  ({w} - {fe} + 2*{p}) / {s} + 1 = {division} = {_frac_text(self.exact)}")
        where = "padded input (pixels counted from the first padding pixel)" if p else "input"
        last = (self.output - 1) * s
        if self.is_exact:
            lines.append(f"  = {self.output}   (exact: the stride divides W - {fname} + 2P = {top})")
            lines.append("")
            lines.append(
                wrap(
                    f"The windows start at {_starts(self.windows_start)}; the last one covers pixels "
                    f"{last}..{last + fe - 1}, ending exactly at the last pixel of the {where}."
                )
            )
        else:
            nxt = self.output * s
            total = w + 2 * p
            lines.append(f"  -> rounded down to {self.output}")
            lines.append("")
            lines.append(
                wrap(
                    f"Why down: the windows start at {_starts(self.windows_start)} (every {s} pixels); the "
                    f"last one covers pixels {last}..{last + fe - 1} of the {where}. The next would start at "
                    f"{nxt} and need pixels {nxt}..{nxt + fe - 1}, but there are only pixels 0..{total - 1}: "
                    f"it would hang {plural(nxt + fe - total, 'pixel')} off the edge, so it is not computed. "
                    f"The fraction {_frac_text(frac)} counts a partial step, and only whole steps fit; "
                    f"{plural(self.unused, 'pixel')} at the far edge "
                    f"{'is' if self.unused == 1 else 'are'} never read"
                    + (" (all padding, so no image pixel is lost)." if self.unused <= p else ".")
                )
            )
        lines.append("")
        lines.append(
            f"Output: {self.output}x{self.output} for a {w}x{w} input (the same formula gives width and height)."
        )
        return "\n".join(lines) + "\n"


def _frac_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return num(float(value), 4)


def _starts(starts: list[int]) -> str:
    if len(starts) <= 6:
        return ", ".join(str(v) for v in starts)
    return ", ".join(str(v) for v in starts[:3]) + ", ..., " + ", ".join(str(v) for v in starts[-2:])


def size(input: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> SizeExplanation:
    """Explain ``(W - F + 2P) / S + 1`` for one axis (notes §3.4), rounding included.

    The answer is :func:`cnnkit.ops.conv.conv_output_size`; the exact fraction is the formula the notes
    write, evaluated without rounding.

    >>> r = size(6, 3, stride=2)
    >>> r.output, float(r.exact)
    (2, 2.5)
    """
    for name, value, minimum in (
        ("input", input, 1),
        ("kernel", kernel, 1),
        ("padding", padding, 0),
        ("stride", stride, 1),
        ("dilation", dilation, 1),
    ):
        check_int(value, name, "explain.size", minimum)
    output = conv_output_size(input, kernel, padding=padding, stride=stride, dilation=dilation)
    fe = dilation * (kernel - 1) + 1
    exact = Fraction(input - fe + 2 * padding, stride) + 1
    unused = input + 2 * padding - ((output - 1) * stride + fe)
    return SizeExplanation(
        input=input,
        kernel=kernel,
        padding=padding,
        stride=stride,
        dilation=dilation,
        effective_kernel=fe,
        exact=exact,
        output=output,
        unused=unused,
    )
