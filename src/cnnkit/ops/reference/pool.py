"""Slow, obvious loop versions of the pooling kernels: the oracle for :mod:`cnnkit.ops.pool`.

One Python loop per index, arithmetic in Python floats (double precision), results cast back to the
input's dtype. Backward functions take the forward's arguments (not a cache) and recompute what they need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._args import pair

IntOrPair = int | Sequence[int]

__all__ = [
    "max_pool2d_reference",
    "max_pool2d_backward_reference",
    "min_pool2d_reference",
    "min_pool2d_backward_reference",
    "avg_pool2d_reference",
    "avg_pool2d_backward_reference",
    "global_avg_pool2d_reference",
    "global_avg_pool2d_backward_reference",
    "adaptive_avg_pool2d_reference",
    "adaptive_avg_pool2d_backward_reference",
]


def _setup(
    x: np.ndarray, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair, dilation: IntOrPair
):
    kh, kw = pair(kernel_size, "kernel_size", "reference pool")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", "reference pool")
    ph, pw = pair(padding, "padding", "reference pool", minimum=0)
    dh, dw = pair(dilation, "dilation", "reference pool")
    n, c, h, w = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow)


def _windows(x, kernel_size, stride, padding, dilation):
    """Yield ``(n, c, oy, ox, taps)``; taps lists ``(row, col)`` in row-major window order, None for padding."""
    (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _setup(
        x, kernel_size, stride, padding, dilation
    )
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    taps = []
                    for i in range(kh):
                        for j in range(kw):
                            r = oy * sh - ph + i * dh
                            q = ox * sw - pw + j * dw
                            taps.append((r, q) if 0 <= r < h and 0 <= q < w else None)
                    yield b, ch, oy, ox, taps


def _out_shape(x, kernel_size, stride, padding, dilation):
    (n, c, _, _), _, _, _, _, (oh, ow) = _setup(x, kernel_size, stride, padding, dilation)
    return (n, c, oh, ow)


def _extreme(x, kernel_size, stride, padding, dilation, sign):
    """Max (sign=+1) or min (sign=-1) pooling; padding never wins. Returns out and the winning taps."""
    out = np.zeros(_out_shape(x, kernel_size, stride, padding, dilation))
    winners = {}
    for b, ch, oy, ox, taps in _windows(x, kernel_size, stride, padding, dilation):
        best, where = -math.inf, None
        for tap in taps:
            if tap is None:  # padding never wins
                continue
            value = sign * float(x[b, ch, tap[0], tap[1]])
            if where is None or value > best:  # strict: the first of equal values wins
                best, where = value, tap
        out[b, ch, oy, ox] = sign * best
        winners[b, ch, oy, ox] = where
    return out, winners


def max_pool2d_reference(x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """``out[n, c, oy, ox] = max of the window's in-bounds values`` (padding is -inf)."""
    return _extreme(x, kernel_size, stride, padding, dilation, 1)[0].astype(x.dtype)


def min_pool2d_reference(x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """``out[n, c, oy, ox] = min of the window's in-bounds values`` (padding is +inf)."""
    return _extreme(x, kernel_size, stride, padding, dilation, -1)[0].astype(x.dtype)


def _extreme_backward(dout, x, kernel_size, stride, padding, dilation, sign):
    _, winners = _extreme(x, kernel_size, stride, padding, dilation, sign)
    dx = np.zeros(x.shape)
    for (b, ch, oy, ox), tap in winners.items():
        if tap is not None:
            dx[b, ch, tap[0], tap[1]] += float(dout[b, ch, oy, ox])
    return dx.astype(dout.dtype)


def max_pool2d_backward_reference(dout, x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """Each output's gradient added at its window's first maximum (row-major order)."""
    return _extreme_backward(dout, x, kernel_size, stride, padding, dilation, 1)


def min_pool2d_backward_reference(dout, x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """Each output's gradient added at its window's first minimum (row-major order)."""
    return _extreme_backward(dout, x, kernel_size, stride, padding, dilation, -1)


def avg_pool2d_reference(x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """``out = (sum of in-bounds values) / (number of taps)``: padding counts as zeros in the divisor."""
    out = np.zeros(_out_shape(x, kernel_size, stride, padding, dilation))
    for b, ch, oy, ox, taps in _windows(x, kernel_size, stride, padding, dilation):
        total = 0.0
        for tap in taps:
            if tap is not None:
                total += float(x[b, ch, tap[0], tap[1]])
        out[b, ch, oy, ox] = total / len(taps)
    return out.astype(x.dtype)


def avg_pool2d_backward_reference(dout, x, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """Each in-bounds tap of a window receives ``dout / (number of taps)``."""
    dx = np.zeros(x.shape)
    for b, ch, oy, ox, taps in _windows(x, kernel_size, stride, padding, dilation):
        share = float(dout[b, ch, oy, ox]) / len(taps)
        for tap in taps:
            if tap is not None:
                dx[b, ch, tap[0], tap[1]] += share
    return dx.astype(dout.dtype)


def global_avg_pool2d_reference(x) -> np.ndarray:
    """``out[n, c, 0, 0] = mean of x[n, c]``."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, 1, 1))
    for b in range(n):
        for ch in range(c):
            out[b, ch, 0, 0] = sum(float(v) for v in x[b, ch].ravel()) / (h * w)
    return out.astype(x.dtype)


def global_avg_pool2d_backward_reference(dout, x) -> np.ndarray:
    """Every position of ``x[n, c]`` receives ``dout[n, c, 0, 0] / (H * W)``."""
    n, c, h, w = x.shape
    dx = np.zeros(x.shape)
    for b in range(n):
        for ch in range(c):
            dx[b, ch] = float(dout[b, ch, 0, 0]) / (h * w)
    return dx.astype(dout.dtype)


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


def adaptive_avg_pool2d_reference(x, output_size) -> np.ndarray:
    """Bin ``(i, j)`` averages rows ``floor(i*H/OH) .. ceil((i+1)*H/OH)-1`` and the matching columns."""
    oh, ow = pair(output_size, "output_size", "reference adaptive_avg_pool2d")
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i, (r0, r1) in enumerate(_bins(h, oh)):
                for j, (c0, c1) in enumerate(_bins(w, ow)):
                    values = [float(x[b, ch, r, q]) for r in range(r0, r1) for q in range(c0, c1)]
                    out[b, ch, i, j] = sum(values) / len(values)
    return out.astype(x.dtype)


def adaptive_avg_pool2d_backward_reference(dout, x, output_size) -> np.ndarray:
    """Each position of bin ``(i, j)`` receives ``dout[..., i, j] / (bin size)``."""
    oh, ow = pair(output_size, "output_size", "reference adaptive_avg_pool2d")
    n, c, h, w = x.shape
    dx = np.zeros(x.shape)
    for b in range(n):
        for ch in range(c):
            for i, (r0, r1) in enumerate(_bins(h, oh)):
                for j, (c0, c1) in enumerate(_bins(w, ow)):
                    share = float(dout[b, ch, i, j]) / ((r1 - r0) * (c1 - c0))
                    for r in range(r0, r1):
                        for q in range(c0, c1):
                            dx[b, ch, r, q] += share
    return dx.astype(dout.dtype)
