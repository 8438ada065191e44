"""Compiled (Numba) transforms of Winograd's F(4x4, 3x3) convolution, used by :mod:`cnnkit.ops.winograd`.

Data is channels-last. A tile is a 6x6 input patch (stride 4); its transform ``V = B^T d B`` and the
products ``M`` are stored per tile, ``(tiles, 36, C)`` and ``(tiles, 36, F)``, so one tile's values
are one contiguous run. Four kernels: the input transform, the output transform (with the bias), its
adjoint (for the weight gradient) and the output transform followed by ReLU and 2x2 max pooling. The
transforms are separable and run in two stages: the row stage over whole image rows (one long loop
per row), the column stage per tile and per output value (one short loop over channels each).

Written the way LLVM vectorised them, each point measured on the project machine (simple_cnn's second
layer, 64x32x16x16 -> 64 filters): every innermost loop stores through a single 1-D slice and reads
from 1-D slices made before the loop (flat offsets such as ``a[s + c]`` kept a negative-index check
in the loop and left the input transform scalar, 2.1 ms; with six stores in one loop the vector
path needed ~100 run-time overlap checks, 1.2 ms; one store per loop: 0.47 ms). Serial, ``nogil``,
cached on disk (see :mod:`cnnkit.ops._jit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jit import lazy_kernel

__all__ = [
    "winograd_input_kernel",
    "winograd_output_kernel",
    "winograd_output_grad_kernel",
    "winograd_output_relu_pool_kernel",
]


@lazy_kernel
def winograd_input_kernel(numba: Any) -> Any:
    """``kernel(xp, v, n0, th, tw)``: ``V = B^T d B`` of every 6x6 tile ``d`` of a chunk of images.

    ``xp`` ``(N, Hp, Wp, C)`` is the zero-padded channels-last input, C-contiguous, with
    ``Hp >= 4*th + 2`` and ``Wp >= 4*tw + 2``; ``v`` ``(nb*th*tw, 36, C)``, C-contiguous, receives
    for tile ``(ty, tx)`` of image ``n0 + b`` (row ``(b*th + ty)*tw + tx``) its 36 values in
    row-major ``(6, 6)`` order. The tile's input is ``xp[n0 + b, 4*ty : 4*ty + 6, 4*tx : 4*tx + 6]``.
    ``B^T`` rows: ``[4, 0, -5, 0, 1, 0]``, ``[0, -4, -4, 1, 1, 0]``, ``[0, 4, -4, -1, 1, 0]``,
    ``[0, -2, -1, 2, 1, 0]``, ``[0, 2, -1, -2, 1, 0]``, ``[0, 4, 0, -5, 0, 1]``.
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(xp, v, n0, th, tw):  # pragma: no cover - compiled
        _, hp, wp, c_ = xp.shape
        rows = v.shape[0]
        nb = rows // (th * tw)
        lim = (4 * tw + 2) * c_
        rt = np.empty((6, lim), dtype=v.dtype)  # one tile row after the row stage, B^T d
        t0, t1, t2, t3, t4, t5 = rt[0], rt[1], rt[2], rt[3], rt[4], rt[5]
        two, four, five = v.dtype.type(2), v.dtype.type(4), v.dtype.type(5)
        v2 = v.reshape(rows, 36 * c_)
        for b in range(nb):
            img = xp[n0 + b].reshape(hp, wp * c_)
            for ty in range(th):
                r0, r1, r2 = img[4 * ty, :lim], img[4 * ty + 1, :lim], img[4 * ty + 2, :lim]
                r3, r4, r5 = img[4 * ty + 3, :lim], img[4 * ty + 4, :lim], img[4 * ty + 5, :lim]
                for k in range(lim):
                    t0[k] = four * r0[k] - five * r2[k] + r4[k]
                for k in range(lim):
                    t1[k] = (r3[k] + r4[k]) - four * (r1[k] + r2[k])
                for k in range(lim):
                    t2[k] = (r4[k] - r3[k]) + four * (r1[k] - r2[k])
                for k in range(lim):
                    t3[k] = (r4[k] - r2[k]) - two * (r1[k] - r3[k])
                for k in range(lim):
                    t4[k] = (r4[k] - r2[k]) + two * (r1[k] - r3[k])
                for k in range(lim):
                    t5[k] = four * r1[k] - five * r3[k] + r5[k]
                first = (b * th + ty) * tw
                for tx in range(tw):
                    tile = v2[first + tx]
                    for i in range(6):
                        src = rt[i, 4 * tx * c_ : (4 * tx + 6) * c_]
                        a0, a1, a2 = src[0:c_], src[c_ : 2 * c_], src[2 * c_ : 3 * c_]
                        a3, a4, a5 = src[3 * c_ : 4 * c_], src[4 * c_ : 5 * c_], src[5 * c_ : 6 * c_]
                        e = 6 * i * c_
                        o = tile[e : e + c_]
                        for c in range(c_):
                            o[c] = four * a0[c] - five * a2[c] + a4[c]
                        o = tile[e + c_ : e + 2 * c_]
                        for c in range(c_):
                            o[c] = (a3[c] + a4[c]) - four * (a1[c] + a2[c])
                        o = tile[e + 2 * c_ : e + 3 * c_]
                        for c in range(c_):
                            o[c] = (a4[c] - a3[c]) + four * (a1[c] - a2[c])
                        o = tile[e + 3 * c_ : e + 4 * c_]
                        for c in range(c_):
                            o[c] = (a4[c] - a2[c]) - two * (a1[c] - a3[c])
                        o = tile[e + 4 * c_ : e + 5 * c_]
                        for c in range(c_):
                            o[c] = (a4[c] - a2[c]) + two * (a1[c] - a3[c])
                        o = tile[e + 5 * c_ : e + 6 * c_]
                        for c in range(c_):
                            o[c] = four * a1[c] - five * a3[c] + a5[c]

    return kernel


@lazy_kernel
def winograd_output_kernel(numba: Any) -> Any:
    """``kernel(m, out, bias, n0, th, tw)``: ``Y = A^T M A + b`` of every tile of a chunk, into ``out``.

    ``m`` ``(nb*th*tw, 36, F)`` holds each tile's products (rows as in :func:`winograd_input_kernel`),
    ``out`` ``(N, OH, OW, F)`` is C-contiguous (channels-last) and ``bias`` ``(F,)``. Tile ``(ty, tx)``
    of image ``n0 + b`` fills ``out[n0 + b, 4*ty : 4*ty + 4, 4*tx : 4*tx + 4]``, the part inside
    ``OH x OW``. ``A^T`` rows: ``[1, 1, 1, 1, 1, 0]``, ``[0, 1, -1, 2, -2, 0]``, ``[0, 1, 1, 4, 4, 0]``,
    ``[0, 1, -1, 8, -8, 1]``.
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(m, out, bias, n0, th, tw):  # pragma: no cover - compiled
        rows, f_ = m.shape[0], m.shape[2]
        oh_, ow_ = out.shape[1], out.shape[2]
        nb = rows // (th * tw)
        m2 = m.reshape(rows, 36 * f_)
        wid = 4 * tw * f_
        st = np.empty((6, wid), dtype=m.dtype)  # one tile row after the column stage, M A
        lim = ow_ * f_  # an output row, channels-last; the last tile may reach past it
        brow = np.empty(lim, dtype=m.dtype)
        for k in range(lim):
            brow[k] = bias[k % f_]
        s0, s1, s2, s3, s4, s5 = st[0, :lim], st[1, :lim], st[2, :lim], st[3, :lim], st[4, :lim], st[5, :lim]
        two, four, eight = m.dtype.type(2), m.dtype.type(4), m.dtype.type(8)
        for b in range(nb):
            img = out[n0 + b].reshape(oh_, lim)
            for ty in range(th):
                first = (b * th + ty) * tw
                for tx in range(tw):
                    tile = m2[first + tx]
                    e = 4 * tx * f_
                    for i in range(6):
                        d = 6 * i * f_
                        a0, a1, a2 = (
                            tile[d : d + f_],
                            tile[d + f_ : d + 2 * f_],
                            tile[d + 2 * f_ : d + 3 * f_],
                        )
                        a3, a4 = tile[d + 3 * f_ : d + 4 * f_], tile[d + 4 * f_ : d + 5 * f_]
                        a5 = tile[d + 5 * f_ : d + 6 * f_]
                        q = st[i, e : e + f_]
                        for f in range(f_):
                            q[f] = a0[f] + a1[f] + a2[f] + a3[f] + a4[f]
                        q = st[i, e + f_ : e + 2 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] - a2[f]) + two * (a3[f] - a4[f])
                        q = st[i, e + 2 * f_ : e + 3 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] + a2[f]) + four * (a3[f] + a4[f])
                        q = st[i, e + 3 * f_ : e + 4 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] - a2[f]) + eight * (a3[f] - a4[f]) + a5[f]
                y0 = 4 * ty
                row = img[y0]
                for k in range(lim):
                    row[k] = s0[k] + s1[k] + s2[k] + s3[k] + s4[k] + brow[k]
                if y0 + 1 < oh_:
                    row = img[y0 + 1]
                    for k in range(lim):
                        row[k] = (s1[k] - s2[k]) + two * (s3[k] - s4[k]) + brow[k]
                if y0 + 2 < oh_:
                    row = img[y0 + 2]
                    for k in range(lim):
                        row[k] = (s1[k] + s2[k]) + four * (s3[k] + s4[k]) + brow[k]
                if y0 + 3 < oh_:
                    row = img[y0 + 3]
                    for k in range(lim):
                        row[k] = (s1[k] - s2[k]) + eight * (s3[k] - s4[k]) + s5[k] + brow[k]

    return kernel


@lazy_kernel
def winograd_output_grad_kernel(numba: Any) -> Any:
    """``kernel(dy, dm, n0, th, tw)``: ``dM = A dY A^T`` of every 4x4 tile of the output gradient.

    The adjoint of :func:`winograd_output_kernel` (``Y = A^T M A``), used for the weight gradient.
    ``dy`` ``(N, OH, OW, F)`` is C-contiguous (channels-last); ``dm`` ``(nb*th*tw, 36, F)`` receives,
    for tile ``(ty, tx)`` of image ``n0 + b``, the 6x6 transform of ``dy[n0 + b, 4*ty : 4*ty + 4,
    4*tx : 4*tx + 4]`` (zeros past ``OH x OW``). ``A`` rows: ``[1, 0, 0, 0]``, ``[1, 1, 1, 1]``,
    ``[1, -1, 1, -1]``, ``[1, 2, 4, 8]``, ``[1, -2, 4, -8]``, ``[0, 0, 0, 1]``.
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(dy, dm, n0, th, tw):  # pragma: no cover - compiled
        oh_, ow_, f_ = dy.shape[1], dy.shape[2], dy.shape[3]
        rows = dm.shape[0]
        nb = rows // (th * tw)
        wid = 4 * tw * f_
        lim = ow_ * f_
        src = np.zeros((4, wid), dtype=dy.dtype)  # four output-gradient rows, zero past OW (and OH)
        rt = np.empty((6, wid), dtype=dm.dtype)  # after the row stage, A dY
        y0_, y1_, y2_, y3_ = src[0], src[1], src[2], src[3]
        t0, t1, t2, t3, t4, t5 = rt[0], rt[1], rt[2], rt[3], rt[4], rt[5]
        two, four, eight = dm.dtype.type(2), dm.dtype.type(4), dm.dtype.type(8)
        dm2 = dm.reshape(rows, 36 * f_)
        for b in range(nb):
            img = dy[n0 + b].reshape(oh_, lim)
            for ty in range(th):
                for r in range(4):
                    row = src[r, :lim]
                    if 4 * ty + r < oh_:
                        line = img[4 * ty + r]
                        for k in range(lim):
                            row[k] = line[k]
                    else:
                        for k in range(lim):
                            row[k] = 0
                for k in range(wid):
                    t0[k] = y0_[k]
                for k in range(wid):
                    t1[k] = (y0_[k] + y2_[k]) + (y1_[k] + y3_[k])
                for k in range(wid):
                    t2[k] = (y0_[k] + y2_[k]) - (y1_[k] + y3_[k])
                for k in range(wid):
                    t3[k] = (y0_[k] + four * y2_[k]) + (two * y1_[k] + eight * y3_[k])
                for k in range(wid):
                    t4[k] = (y0_[k] + four * y2_[k]) - (two * y1_[k] + eight * y3_[k])
                for k in range(wid):
                    t5[k] = y3_[k]
                first = (b * th + ty) * tw
                for tx in range(tw):
                    tile = dm2[first + tx]
                    for i in range(6):
                        part = rt[i, 4 * tx * f_ : (4 * tx + 4) * f_]
                        a0, a1, a2, a3 = (
                            part[0:f_],
                            part[f_ : 2 * f_],
                            part[2 * f_ : 3 * f_],
                            part[3 * f_ : 4 * f_],
                        )
                        e = 6 * i * f_
                        o = tile[e : e + f_]
                        for f in range(f_):
                            o[f] = a0[f]
                        o = tile[e + f_ : e + 2 * f_]
                        for f in range(f_):
                            o[f] = (a0[f] + a2[f]) + (a1[f] + a3[f])
                        o = tile[e + 2 * f_ : e + 3 * f_]
                        for f in range(f_):
                            o[f] = (a0[f] + a2[f]) - (a1[f] + a3[f])
                        o = tile[e + 3 * f_ : e + 4 * f_]
                        for f in range(f_):
                            o[f] = (a0[f] + four * a2[f]) + (two * a1[f] + eight * a3[f])
                        o = tile[e + 4 * f_ : e + 5 * f_]
                        for f in range(f_):
                            o[f] = (a0[f] + four * a2[f]) - (two * a1[f] + eight * a3[f])
                        o = tile[e + 5 * f_ : e + 6 * f_]
                        for f in range(f_):
                            o[f] = a3[f]

    return kernel


@lazy_kernel
def winograd_output_relu_pool_kernel(numba: Any) -> Any:
    """``kernel(m, pooled, arg, bias, n0, th, tw, oh, ow)``: :func:`winograd_output_kernel` followed by
    ReLU and 2x2 stride-2 max pooling, without writing the convolution's output.

    Each tile row's four output rows are built in a scratch buffer (as the output kernel writes them),
    then pooled: ``pooled`` ``(N, OH // 2, OW // 2, F)`` and ``arg`` (int8, same shape) are C-contiguous,
    ``arg`` holds the row-major index (0..3) of the window's first maximum, and a NaN wins its window
    and stays NaN through the ReLU: exactly what ``max_pool_2x2_forward_kernel`` records for the
    convolution's output, so its backward kernel reads them. Rows and columns the floor rule leaves out
    (odd ``OH`` or ``OW``) are never pooled. The window maximum is taken with selects and float tap
    indices, converted to int8 a row at a time (with int8 taps and branches the loop stayed scalar:
    simple_cnn's inference gained 6% fused that way, 10% this way).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(m, pooled, arg, bias, n0, th, tw, oh_, ow_):  # pragma: no cover - compiled
        rows, f_ = m.shape[0], m.shape[2]
        ph_, pw_ = pooled.shape[1], pooled.shape[2]
        nb = rows // (th * tw)
        m2 = m.reshape(rows, 36 * f_)
        wid = 4 * tw * f_
        st = np.empty((6, wid), dtype=m.dtype)  # one tile row after the column stage, M A
        yr = np.empty((4, wid), dtype=pooled.dtype)  # its four output rows, rounded as the output kernel's
        brow = np.empty(wid, dtype=m.dtype)
        for k in range(wid):
            brow[k] = bias[k % f_]
        s0, s1, s2, s3, s4, s5 = st[0], st[1], st[2], st[3], st[4], st[5]
        y0_, y1_, y2_, y3_ = yr[0], yr[1], yr[2], yr[3]
        zero, one, two, three = m.dtype.type(0), m.dtype.type(1), m.dtype.type(2), m.dtype.type(3)
        four, eight = m.dtype.type(4), m.dtype.type(8)
        taps = np.empty(pw_ * f_, dtype=m.dtype)  # one pooled row's tap indices, as floats
        # The column and row stages repeat winograd_output_kernel's on purpose: a kernel that calls
        # another through a closure is compiled again in every process (Numba's disk cache misses).
        for b in range(nb):
            pimg = pooled[n0 + b].reshape(ph_, pw_ * f_)
            aimg = arg[n0 + b].reshape(ph_, pw_ * f_)
            for ty in range(th):
                if 2 * ty >= ph_:
                    continue  # a last tile row the floor rule leaves out
                first = (b * th + ty) * tw
                for tx in range(tw):
                    tile = m2[first + tx]
                    e = 4 * tx * f_
                    for i in range(6):
                        d = 6 * i * f_
                        a0, a1, a2 = (
                            tile[d : d + f_],
                            tile[d + f_ : d + 2 * f_],
                            tile[d + 2 * f_ : d + 3 * f_],
                        )
                        a3, a4 = tile[d + 3 * f_ : d + 4 * f_], tile[d + 4 * f_ : d + 5 * f_]
                        a5 = tile[d + 5 * f_ : d + 6 * f_]
                        q = st[i, e : e + f_]
                        for f in range(f_):
                            q[f] = a0[f] + a1[f] + a2[f] + a3[f] + a4[f]
                        q = st[i, e + f_ : e + 2 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] - a2[f]) + two * (a3[f] - a4[f])
                        q = st[i, e + 2 * f_ : e + 3 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] + a2[f]) + four * (a3[f] + a4[f])
                        q = st[i, e + 3 * f_ : e + 4 * f_]
                        for f in range(f_):
                            q[f] = (a1[f] - a2[f]) + eight * (a3[f] - a4[f]) + a5[f]
                for k in range(wid):
                    y0_[k] = s0[k] + s1[k] + s2[k] + s3[k] + s4[k] + brow[k]
                for k in range(wid):
                    y1_[k] = (s1[k] - s2[k]) + two * (s3[k] - s4[k]) + brow[k]
                for k in range(wid):
                    y2_[k] = (s1[k] + s2[k]) + four * (s3[k] + s4[k]) + brow[k]
                for k in range(wid):
                    y3_[k] = (s1[k] - s2[k]) + eight * (s3[k] - s4[k]) + s5[k] + brow[k]
                for r in range(2):
                    pr = 2 * ty + r
                    if pr >= ph_:
                        break
                    top, bottom = yr[2 * r], yr[2 * r + 1]
                    prow, arow = pimg[pr], aimg[pr]
                    for px in range(pw_):
                        base = 2 * px * f_
                        v0s, v1s = top[base : base + f_], top[base + f_ : base + 2 * f_]
                        v2s, v3s = bottom[base : base + f_], bottom[base + f_ : base + 2 * f_]
                        po = prow[px * f_ : (px + 1) * f_]
                        for f in range(f_):  # selects, tap indices as floats: vectorised
                            best = v0s[f]
                            t = zero
                            v = v1s[f]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = one if take else t
                            v = v2s[f]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = two if take else t
                            v = v3s[f]
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            t = three if take else t
                            po[f] = zero if best <= zero else best  # ReLU; a NaN stays NaN
                            taps[px * f_ + f] = t
                    for k in range(pw_ * f_):
                        arow[k] = np.int8(taps[k])

    return kernel
