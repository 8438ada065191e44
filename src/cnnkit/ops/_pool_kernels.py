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
Each takes an image range ``n0 : n1``: :mod:`cnnkit.ops.pool` splits a batch across threads
(:mod:`cnnkit.ops._parallel`). ``nogil`` and cached on disk (see :mod:`cnnkit.ops._jit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jit import lazy_kernel

# When these kernels run (fewest channels and elements) is decided in :mod:`cnnkit.ops.policy`
# (``POOL_MIN_CHANNELS``, ``COMPILED_MIN_ELEMENTS``: smaller inputs, one image in ``cnnkit predict``, a
# 32x32x32 activation is 32,768, stay in NumPy, so inference-only programs never import Numba).


@lazy_kernel
def max_pool_2x2_forward_kernel(numba: Any) -> Any:
    """``kernel(x, out, arg, relu, n0, n1)``: 2x2 stride-2 max pooling of images ``n0 : n1`` with argmax
    indices (int8, 0..3)."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, out, arg, relu, n0, n1):  # pragma: no cover - compiled
        n_, h_, w_, c_ = x.shape
        oh_, ow_ = out.shape[1], out.shape[2]
        zero = out.dtype.type(0)
        x2 = x.reshape(n_ * h_, w_ * c_)
        o2 = out.reshape(n_ * oh_, ow_ * c_)
        a2 = arg.reshape(n_ * oh_, ow_ * c_)
        for n in range(n0, n1):
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
                        if relu and best <= zero:  # a NaN stays NaN, as np.maximum(x, 0) keeps it
                            best = zero
                        orow[ox * c_ + c] = best
                        arow[ox * c_ + c] = t

    return kernel


@lazy_kernel
def max_pool_2x2_backward_kernel(numba: Any) -> Any:
    """``kernel(dout, out, arg, dx, relu, n0, n1)``: each gradient of images ``n0 : n1`` to its recorded
    tap, zeros elsewhere.

    ``dout`` may have any strides; ``out``, ``arg`` and ``dx`` are C-contiguous. Rows and columns the
    floor rule leaves out (odd sizes) are not written.
    """

    @numba.njit(cache=True, nogil=True)
    def kernel(dout, out, arg, dx, relu, n0, n1):  # pragma: no cover - compiled
        n_, oh_, ow_, c_ = out.shape
        zero = dx.dtype.type(0)
        for n in range(n0, n1):
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


@lazy_kernel
def max_pool_2x2_planar_forward_kernel(numba: Any) -> Any:
    """``kernel(x, out, arg, relu, n0, n1)``: the forward kernel for planar input (images ``n0 : n1``),
    with a channels-last result.

    ``x`` is ``(C, N, H, W)`` C-contiguous: what a few-channel convolution returns (see
    :mod:`cnnkit.ops.conv_paths.planar`), so each window's two rows are contiguous runs. ``out`` is
    the ``(C, N, OH, OW)`` view of a channels-last buffer (the layout the next convolution reads), and
    ``arg`` is ``(C, N, OH, OW)`` C-contiguous, with the tap index (0..3) stored in ``x``'s float dtype.

    Written so that the compiler vectorises the row loop, which it did only under three conditions,
    each measured on the project machine: operands of one width (float tap indices instead of int8:
    the backward 3.9 -> 1.4 ms on 64x32x32x32), selects instead of data-dependent branches, and a whole
    number of vectors per row (OW = 14, LeNet-5's, ran 10x slower than OW = 16 through the scalar
    remainder loop), so an input row pair is first copied into scratch rows padded to whole vectors;
    rows that already are whole vectors (``OW % 8 == 0``) are read in place and their taps written
    straight to ``arg`` (measured in one process: 1.25 -> 1.03 ms on 64x32x32x32, 12.8 -> 8.5 ms on
    32x32x128x128; through the scratch rows that was once measured the other way round, before the
    taps went straight to ``arg``). One image at a time: pooled plane
    by plane into a small buffer, then written channels-last; the buffer's rows are padded so that
    its planes do not map to the same cache sets (17 -> 9 ms on 32x32x128x128).
    """

    @numba.njit(cache=True, nogil=True)
    def kernel(x, out, arg, relu, n0, n1):  # pragma: no cover - compiled
        c_ = x.shape[0]
        oh_, ow_ = arg.shape[2], arg.shape[3]
        zero, one, two, three = out.dtype.type(0), out.dtype.type(1), out.dtype.type(2), out.dtype.type(3)
        owp = (ow_ + 7) // 8 * 8
        row0 = np.zeros(2 * owp, dtype=x.dtype)
        row1 = np.zeros(2 * owp, dtype=x.dtype)
        # one image's pooled values and taps, planar, rows padded by 8 (see the docstring; a row may
        # also be written up to 7 past its end: the next row, or the padding, takes it)
        pooled = np.empty((c_, oh_ * ow_ + 8), dtype=out.dtype)
        taps = np.empty((c_, oh_ * ow_ + 8), dtype=out.dtype)
        w_ = x.shape[3]
        direct = ow_ % 8 == 0
        for n in range(n0, n1):
            for c in range(c_):
                if direct:  # whole-vector rows: read in place, taps straight to arg
                    # (the select chain below repeats the scratch path's on purpose: one loop over
                    # either rows, chosen per row, ran 15-30% slower, measured on all three shapes)
                    plane = x[c, n].reshape(-1)
                    tplane = arg[c, n].reshape(-1)
                    for oy in range(oh_):
                        r0 = plane[2 * oy * w_ : 2 * oy * w_ + 2 * ow_]
                        r1 = plane[(2 * oy + 1) * w_ : (2 * oy + 1) * w_ + 2 * ow_]
                        prow = pooled[c, oy * ow_ : (oy + 1) * ow_]
                        trow = tplane[oy * ow_ : (oy + 1) * ow_]
                        for ox in range(ow_):
                            best = r0[2 * ox]
                            t = zero
                            v = r0[2 * ox + 1]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = one if take else t
                            v = r1[2 * ox]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = two if take else t
                            v = r1[2 * ox + 1]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = three if take else t
                            if relu:
                                best = zero if best <= zero else best  # a NaN stays NaN
                            prow[ox] = best
                            trow[ox] = t
                    continue
                for oy in range(oh_):
                    prow = pooled[c, oy * ow_ : oy * ow_ + owp]
                    trow = taps[c, oy * ow_ : oy * ow_ + owp]
                    src0 = x[c, n, 2 * oy]
                    src1 = x[c, n, 2 * oy + 1]
                    for j in range(2 * ow_):
                        row0[j] = src0[j]
                        row1[j] = src1[j]
                    for ox in range(owp):
                        best = row0[2 * ox]
                        t = zero
                        v = row0[2 * ox + 1]
                        take = (v > best) | ((v != v) & (best == best))
                        best = v if take else best
                        t = one if take else t
                        v = row1[2 * ox]
                        take = (v > best) | ((v != v) & (best == best))
                        best = v if take else best
                        t = two if take else t
                        v = row1[2 * ox + 1]
                        take = (v > best) | ((v != v) & (best == best))
                        best = v if take else best
                        t = three if take else t
                        if relu:
                            best = zero if best <= zero else best  # a NaN stays NaN
                        prow[ox] = best
                        trow[ox] = t
                plane = arg[c, n]
                for oy in range(oh_):
                    for ox in range(ow_):
                        plane[oy, ox] = taps[c, oy * ow_ + ox]
            for oy in range(oh_):
                for ox in range(ow_):
                    i = oy * ow_ + ox
                    for c in range(c_):
                        out[c, n, oy, ox] = pooled[c, i]

    return kernel


@lazy_kernel
def max_pool_2x2_planar_backward_kernel(numba: Any) -> Any:
    """``kernel(dout, out, arg, dx, relu, n0, n1)``: the backward kernel with a planar ``(C, N, H, W)``
    ``dx`` (images ``n0 : n1``).

    ``dout`` and ``out`` are ``(C, N, OH, OW)`` views of any strides, ``arg`` and ``dx`` C-contiguous;
    the convolution that produced the pooled input then reads ``dx`` as its planar gradient without a
    copy. One image at a time: its output gradient gathered planar into a small buffer (read in the
    order of channels-last memory, what the next convolution's dx has), then routed row by row
    (vectorised as in the forward kernel). Rows and columns the floor rule leaves out (odd sizes) are
    not written. Short whole-vector rows (``OW`` a multiple of 8, at most 32) are routed in place,
    from ``arg`` straight into ``dx``: 1.67 -> 1.23 ms on 64x32x32x32; on 128-wide planes that was
    slower (13.7 -> 16.5 ms on 32x32x128x128, same process), so they keep the scratch rows.
    """

    @numba.njit(cache=True, nogil=True)
    def kernel(dout, out, arg, dx, relu, n0, n1):  # pragma: no cover - compiled
        c_, n_, oh_, ow_ = arg.shape
        zero, one, two, three = dx.dtype.type(0), dx.dtype.type(1), dx.dtype.type(2), dx.dtype.type(3)
        owp = (ow_ + 7) // 8 * 8
        row0 = np.empty(2 * owp, dtype=dx.dtype)
        row1 = np.empty(2 * owp, dtype=dx.dtype)
        grad = np.zeros((c_, oh_ * ow_ + 8), dtype=dx.dtype)
        taps = np.zeros((c_, oh_ * ow_ + 8), dtype=dx.dtype)
        direct = ow_ % 8 == 0 and ow_ <= 32  # short whole-vector rows: see the docstring
        for n in range(n0, n1):
            for oy in range(oh_):
                for ox in range(ow_):
                    i = oy * ow_ + ox
                    for c in range(c_):
                        g = dout[c, n, oy, ox]
                        if relu and not out[c, n, oy, ox] > zero:
                            g = zero
                        grad[c, i] = g
            for c in range(c_):
                plane = arg[c, n]
                if direct:  # whole-vector rows: taps read and dx written in place
                    for oy in range(oh_):
                        grow = grad[c, oy * ow_ : (oy + 1) * ow_]
                        trow = plane[oy]
                        dst0 = dx[c, n, 2 * oy]
                        dst1 = dx[c, n, 2 * oy + 1]
                        for ox in range(ow_):
                            g = grow[ox]
                            t = trow[ox]
                            dst0[2 * ox] = g if t == zero else zero
                            dst0[2 * ox + 1] = g if t == one else zero
                            dst1[2 * ox] = g if t == two else zero
                            dst1[2 * ox + 1] = g if t == three else zero
                    continue
                for oy in range(oh_):
                    for ox in range(ow_):
                        taps[c, oy * ow_ + ox] = plane[oy, ox]
                for oy in range(oh_):
                    grow = grad[c, oy * ow_ : oy * ow_ + owp]
                    trow = taps[c, oy * ow_ : oy * ow_ + owp]
                    for ox in range(owp):
                        g = grow[ox]
                        t = trow[ox]
                        row0[2 * ox] = g if t == zero else zero
                        row0[2 * ox + 1] = g if t == one else zero
                        row1[2 * ox] = g if t == two else zero
                        row1[2 * ox + 1] = g if t == three else zero
                    dst0 = dx[c, n, 2 * oy]
                    dst1 = dx[c, n, 2 * oy + 1]
                    for j in range(2 * ow_):
                        dst0[j] = row0[j]
                        dst1[j] = row1[j]

    return kernel
