"""Compiled (Numba) kernels of 2x2, stride-2 max pooling on channels-last data, used by :mod:`cnnkit.ops.pool`.

The kernels take ``(N, H, W, C)`` C-contiguous arrays (``x.transpose(0, 2, 3, 1)`` of a channels-last
NCHW-shaped array, what convolutions return) and walk each pair of input rows as flat ``W * C`` runs.
Forward records, per output, the row-major index (0..3) of the first tap holding the window's maximum
(PyTorch's tie rule; a NaN propagates to the output as in NumPy and takes the gradient); backward writes
every covered input position once: the gradient at the recorded tap, zero at the three others.

With ``relu=True`` the forward applies ReLU to the pooled value and the backward drops the gradient of
outputs that are not positive: exact for ReLU followed by max pooling, because the window maximum
commutes with the monotone ReLU (notes §6.1, §7.2).

Measured on the project machine (2 shared cores, see ``benchmarks/README.md``): with 32 channels
the forward beat NumPy's strided maxima (1.6 vs 2.1 ms at 64x32x32x32) and the backward by 4-5x; with
6 channels the branchy argmax made the forward slower than NumPy (3.3 vs 1.3 ms), and a general
kernel (any window, padding, dilation) was slower than NumPy everywhere. So :mod:`cnnkit.ops.pool` uses
these kernels only for tiled 2x2 windows on channels-last data with at least ``MIN_CHANNELS`` channels.
Serial, ``nogil`` and cached on disk (see :mod:`cnnkit.ops._jit`).
"""

from __future__ import annotations

from typing import Any

from ._jit import lazy_kernel

#: Fewest channels for which the compiled kernels pay (measured, see the module docstring).
MIN_CHANNELS = 16
#: Fewest input elements for the compiled path: smaller inputs (one image in ``cnnkit predict``) stay in
#: NumPy, so inference-only programs never import Numba (~0.3 s) for a gain of microseconds.
MIN_ELEMENTS = 1 << 18


@lazy_kernel
def max_pool_2x2_forward_kernel(numba: Any) -> Any:
    """``kernel(x, out, arg, relu)``: 2x2 stride-2 max pooling with argmax indices (int8, 0..3)."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, out, arg, relu):  # pragma: no cover - compiled
        n_, h_, w_, c_ = x.shape
        oh_, ow_ = out.shape[1], out.shape[2]
        zero = out.dtype.type(0)
        x2 = x.reshape(n_ * h_, w_ * c_)
        o2 = out.reshape(n_ * oh_, ow_ * c_)
        a2 = arg.reshape(n_ * oh_, ow_ * c_)
        for n in range(n_):
            for oy in range(oh_):
                row0 = x2[n * h_ + 2 * oy]
                row1 = x2[n * h_ + 2 * oy + 1]
                orow = o2[n * oh_ + oy]
                arow = a2[n * oh_ + oy]
                for ox in range(ow_):
                    base = 2 * ox * c_
                    for c in range(c_):
                        k = base + c
                        best = row0[k]
                        t = 0
                        v = row0[k + c_]
                        if (v > best) | ((v != v) & (best == best)):
                            best = v
                            t = 1
                        v = row1[k]
                        if (v > best) | ((v != v) & (best == best)):
                            best = v
                            t = 2
                        v = row1[k + c_]
                        if (v > best) | ((v != v) & (best == best)):
                            best = v
                            t = 3
                        if relu and not best > zero:
                            best = zero
                        orow[ox * c_ + c] = best
                        arow[ox * c_ + c] = t

    return kernel


@lazy_kernel
def max_pool_2x2_backward_kernel(numba: Any) -> Any:
    """``kernel(dout, out, arg, dx, relu)``: each gradient to its recorded tap, zeros elsewhere.

    ``dout`` may have any strides; ``out``, ``arg`` and ``dx`` are C-contiguous. Rows and columns the
    floor rule leaves out (odd sizes) are not written.
    """

    @numba.njit(cache=True, nogil=True)
    def kernel(dout, out, arg, dx, relu):  # pragma: no cover - compiled
        n_, oh_, ow_, c_ = out.shape
        zero = dx.dtype.type(0)
        for n in range(n_):
            for oy in range(oh_):
                for ox in range(ow_):
                    for c in range(c_):
                        g = dout[n, oy, ox, c]
                        if relu and not out[n, oy, ox, c] > zero:
                            g = zero
                        t = arg[n, oy, ox, c]
                        dx[n, 2 * oy, 2 * ox, c] = g if t == 0 else zero
                        dx[n, 2 * oy, 2 * ox + 1, c] = g if t == 1 else zero
                        dx[n, 2 * oy + 1, 2 * ox, c] = g if t == 2 else zero
                        dx[n, 2 * oy + 1, 2 * ox + 1, c] = g if t == 3 else zero

    return kernel
