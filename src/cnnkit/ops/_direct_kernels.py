"""Compiled (Numba) direct convolution of a few-channel first layer: the forward pass fused with ReLU
and 2x2 max pooling, and the weight gradient (:func:`planar_weight_grad_kernel`, used by
:mod:`cnnkit.ops.conv_paths.planar` when no input gradient is wanted).

The forward kernel serves :func:`cnnkit.ops.fused.conv2d_relu_max_pool2d_forward` for the first block
of notes §5 and §9 (RGB input, 3x3 filters) and of LeNet-5 (§10.1: grey input, 5x5 filters): stride 1,
ReLU, 2x2 pooling. The im2col path computes such a layer as a GEMM with a tiny inner size
(``C*KH*KW + 1``: 28 or 26), which OpenBLAS runs at about half its speed, after unfolding the input into
``KH*KW`` copies, then writes the whole convolution output (the block's largest array: 8 MB for notes
§5 at batch 64) and pools it in a second pass. The forward kernel computes one output plane at a time
in a cache-resident buffer and pools it there; only the pooled quarter is written.

The "flat plane" trick keeps the inner loop long and free of edges: with the padded input plane
``xp[c, n]`` (``Hp x Wp``) read as one vector, output ``(y, x)`` sits at ``i = y*Wp + x`` and

    acc[i] = b[f] + sum_c sum_{p,q} w[f, c, p, q] * plane_c[i + p*Wp + q]        (notes §3.3, §3.4)

for every ``i < OH*Wp - (KW - 1)``, one loop over the whole plane that the compiler vectorises along
``i``: all nine taps of a 3x3 filter per pass, or one 5-tap kernel row per pass (the ``KW - 1``
columns per row where ``x >= OW`` wrap to the next row; they are computed and never read). Each
window's maximum is then taken from two rows of ``acc`` (the select chain of
:mod:`cnnkit.ops._pool_kernels`: the first tap wins ties, a NaN wins and stays NaN), ReLU applied to
it (exact: ReLU is monotone, notes §6.1), and the image's pooled planes are written channels-last,
the layout the next convolution reads.

Measured on the project machine (2 shared cores; in one process, alternating with the unfused path;
see ``benchmarks/README.md``): notes §5's first block at batch 64 (64x3x32x32, 32 filters) 6.6 ->
5.9 ms inside the model's forward pass, the whole forward 16.5 -> 15.7 ms; notes §9's (32x3x128x128)
54 -> 38 ms alone; LeNet-5 at batch 128 (128x1x28x28, 6 filters 5x5) forward 7.7 -> 5.8 ms, training
step 25.1 -> 22.2 ms. The convolution alone is no faster than the GEMM for 32 filters (4.4 vs 4.5 ms;
with 64, ResNet's stem, 10.6 vs 6.6 ms), so only the fused block uses it: the gain is the unfold
avoided and the pooling done in cache. The kernels take an image range and :mod:`._parallel` splits
a batch across threads: §5's forward pass at batch 64 16.3 -> 13.3 ms, once OpenBLAS's idle workers
stopped holding the second core (:func:`cnnkit.runtime.tune`; before that, two threads ran no faster
inside a model).

The sums run in a different order than the GEMM's, so the values agree with the im2col path to
float32 rounding (a few 1e-7 relative), not bit for bit; the tests hold them to the loop reference
(exactly, on small integers in float64) and to PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jit import lazy_kernel

__all__ = ["conv_relu_max_pool_planar_kernel", "planar_weight_grad_kernel"]


@lazy_kernel
def conv_relu_max_pool_planar_kernel(numba: Any) -> Any:
    """``kernel(xp, w, b, out, arg, n0, n1)``: ``max_pool2d(relu(conv2d(x, w, b)), 2)`` of images
    ``n0 : n1``, stride 1, 3x3 or KHx5 filters.

    - ``xp`` ``(C, N, Hp, Wp)`` C-contiguous: the zero-padded input, one plane per channel
      (:func:`cnnkit.ops.conv_paths.planar.pad_planar`); the convolution output is ``(Hp - KH + 1) x (Wp - KW + 1)``;
    - ``w`` ``(F, C, KH, KW)`` with ``(KH, KW) == (3, 3)`` or ``KW == 5``, and ``b`` ``(F,)``,
      C-contiguous (zeros for no bias);
    - ``out`` ``(N, OH // 2, OW // 2, F)`` C-contiguous: the pooled result, channels-last;
    - ``arg`` ``(F, N, OH // 2, OW // 2)`` C-contiguous: each window's winning tap (0..3, row-major)
      in the input's float dtype, what the planar pooling backward reads
      (:mod:`cnnkit.ops._pool_kernels`).

    Calls on disjoint image ranges may run at once in several threads (:mod:`._parallel`).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
    def kernel(xp, w, b, out, arg, n0, n1):  # pragma: no cover - compiled
        c_, hp, wp = xp.shape[0], xp.shape[2], xp.shape[3]
        f_, kh, kw = w.shape[0], w.shape[2], w.shape[3]
        oh, ow = hp - kh + 1, wp - kw + 1
        oh2, ow2 = oh // 2, ow // 2
        m = oh * wp - (kw - 1)  # the last row's wrapped columns would read past the plane
        zero, one, two, three = w.dtype.type(0), w.dtype.type(1), w.dtype.type(2), w.dtype.type(3)
        owp = (ow2 + 7) // 8 * 8  # pooled rows run in whole vectors (see _pool_kernels)
        # acc's tail and pooled's last row take the whole-vector overrun; never read back
        acc = np.zeros(oh * wp + 2 * owp + 16, dtype=w.dtype)
        pooled = np.empty((f_, oh2 * ow2 + owp), dtype=w.dtype)
        taps = np.empty(owp, dtype=w.dtype)
        for n in range(n0, n1):
            for f in range(f_):
                bias = b[f]
                dst = acc[0:m]
                for i in range(m):
                    dst[i] = bias
                for c in range(c_):
                    plane = xp[c, n].reshape(-1)
                    if kh == 3 and kw == 3:  # all nine taps in one pass
                        w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                        w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                        w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                        a0, a1, a2 = plane[0:m], plane[1 : m + 1], plane[2 : m + 2]
                        b0, b1, b2 = (
                            plane[wp : wp + m],
                            plane[wp + 1 : wp + m + 1],
                            plane[wp + 2 : wp + m + 2],
                        )
                        c0 = plane[2 * wp : 2 * wp + m]
                        c1 = plane[2 * wp + 1 : 2 * wp + m + 1]
                        c2 = plane[2 * wp + 2 : 2 * wp + m + 2]
                        for i in range(m):
                            dst[i] += (
                                w00 * a0[i]
                                + w01 * a1[i]
                                + w02 * a2[i]
                                + w10 * b0[i]
                                + w11 * b1[i]
                                + w12 * b2[i]
                                + w20 * c0[i]
                                + w21 * c1[i]
                                + w22 * c2[i]
                            )
                        continue
                    for p in range(kh):  # five taps wide: one pass per kernel row
                        w0, w1, w2, w3, w4 = (
                            w[f, c, p, 0],
                            w[f, c, p, 1],
                            w[f, c, p, 2],
                            w[f, c, p, 3],
                            w[f, c, p, 4],
                        )
                        row = plane[p * wp : p * wp + m + 4]
                        s0, s1, s2, s3, s4 = (
                            row[0:m],
                            row[1 : m + 1],
                            row[2 : m + 2],
                            row[3 : m + 3],
                            row[4 : m + 4],
                        )
                        for i in range(m):
                            dst[i] += w0 * s0[i] + w1 * s1[i] + w2 * s2[i] + w3 * s3[i] + w4 * s4[i]
                # the planar pooling kernel's select chain (_pool_kernels), repeated: a Numba helper
                # shared between lazily built kernels is a closure, which the disk cache misses
                for oy in range(oh2):
                    r0 = acc[2 * oy * wp : 2 * oy * wp + 2 * owp]
                    r1 = acc[(2 * oy + 1) * wp : (2 * oy + 1) * wp + 2 * owp]
                    prow = pooled[f, oy * ow2 : oy * ow2 + owp]
                    for ox in range(owp):
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
                        prow[ox] = zero if best <= zero else best  # ReLU; a NaN stays NaN
                        taps[ox] = t
                    trow = arg[f, n, oy]
                    for ox in range(ow2):
                        trow[ox] = taps[ox]
            o = out[n]
            for oy in range(oh2):
                for ox in range(ow2):
                    i = oy * ow2 + ox
                    pixel = o[oy, ox]
                    for f in range(f_):
                        pixel[f] = pooled[f, i]

    return kernel


@lazy_kernel
def planar_weight_grad_kernel(numba: Any) -> Any:
    """``kernel(xp, dy, dw, n0, n1)``: adds images ``n0 : n1``'s share of a stride-1 convolution's
    weight gradient to ``dw``: ``dw[f, c, p, q] += sum_{n, y, x} dy[f, n, y, x] * xp[c, n, y + p, x + q]``
    (notes §7.2: the cross-correlation of the input with the output gradient).

    - ``xp`` ``(C, N, Hp, Wp)`` C-contiguous: the zero-padded input of the forward pass (planar);
    - ``dy`` ``(F, N, OH, OW)`` C-contiguous: the output gradient, planar, ``OH = Hp - KH + 1``;
    - ``dw`` ``(F, C, KH, KW)`` C-contiguous, ``KW`` 3 or 5.

    The same flat-plane indexing as the forward kernel: each gradient plane is first copied into a
    buffer with the input's row length ``Wp`` (zeros in the ``KW - 1`` extra columns), so that every
    tap of one kernel row is one dot product over the whole plane, ``sum_i g[i] * plane[i + p*Wp + q]``,
    the ``KW`` taps of a row in one pass (one load of ``g`` for ``KW`` multiply-adds). The dot products
    are vectorised with reassociated sums (``fastmath``): float32 results differ from the GEMM's by
    rounding. Calls on disjoint image ranges with separate ``dw`` may run at once (:mod:`._parallel`).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract", "nsz"})
    def kernel(xp, dy, dw, n0, n1):  # pragma: no cover - compiled
        c_, wp = xp.shape[0], xp.shape[3]
        f_, oh, ow = dy.shape[0], dy.shape[2], dy.shape[3]
        kh, kw = dw.shape[2], dw.shape[3]
        m = oh * wp - (kw - 1)  # as in the forward kernel: every read stays inside the plane
        g_buf = np.zeros(oh * wp, dtype=dy.dtype)  # the gradient plane at row length Wp
        g = g_buf[0:m]
        zero = dy.dtype.type(0)
        for n in range(n0, n1):
            for f in range(f_):
                plane_dy = dy[f, n]
                for y in range(oh):
                    src = plane_dy[y]
                    dst = g_buf[y * wp : y * wp + ow]
                    for x in range(ow):
                        dst[x] = src[x]
                for c in range(c_):
                    plane = xp[c, n].reshape(-1)
                    for p in range(kh):
                        row = plane[p * wp : p * wp + m + kw - 1]
                        if kw == 5:
                            r0, r1, r2, r3, r4 = (
                                row[0:m],
                                row[1 : m + 1],
                                row[2 : m + 2],
                                row[3 : m + 3],
                                row[4 : m + 4],
                            )
                            s0 = s1 = s2 = s3 = s4 = zero
                            for i in range(m):
                                v = g[i]
                                s0 += v * r0[i]
                                s1 += v * r1[i]
                                s2 += v * r2[i]
                                s3 += v * r3[i]
                                s4 += v * r4[i]
                            taps = dw[f, c, p]
                            taps[0] += s0
                            taps[1] += s1
                            taps[2] += s2
                            taps[3] += s3
                            taps[4] += s4
                        else:
                            r0, r1, r2 = row[0:m], row[1 : m + 1], row[2 : m + 2]
                            s0 = s1 = s2 = zero
                            for i in range(m):
                                v = g[i]
                                s0 += v * r0[i]
                                s1 += v * r1[i]
                                s2 += v * r2[i]
                            taps = dw[f, c, p]
                            taps[0] += s0
                            taps[1] += s1
                            taps[2] += s2

    return kernel
