"""Compiled (Numba) direct convolution of a few-channel first layer, fused with ReLU and 2x2 max pooling.

Used by :func:`cnnkit.ops.fused.conv2d_relu_max_pool2d_forward` for the first block of notes §5 and §9
(RGB input, 3x3 filters, stride 1, ReLU, 2x2 pooling). The im2col path computes such a layer as a GEMM
with inner size ``C*3*3 + 1 = 28``, which OpenBLAS runs at about half its speed, writes the whole
convolution output (the block's largest array: 8 MB for notes §5 at batch 64) and then pools it in a
second pass. This kernel computes one output plane at a time in a cache-resident buffer and pools it
there; only the pooled quarter is written.

The "flat plane" trick keeps the inner loop long and free of edges: with the padded input plane
``xp[c, n]`` (``Hp x Wp``) read as one vector, output ``(y, x)`` sits at ``i = y*Wp + x`` and

    acc[i] = b[f] + sum_c sum_{p,q} w[f, c, p, q] * plane_c[i + p*Wp + q]        (notes §3.3, §3.4)

for every ``i < OH*Wp - 2``: one loop of nine multiply-adds per channel over the whole plane, which
the compiler vectorises along ``i`` (the two columns per row where ``x >= OW`` wrap to the next row;
they are computed and never read). Each window's maximum is then taken from two rows of ``acc``
(the select chain of :mod:`cnnkit.ops._pool_kernels`: the first tap wins ties, a NaN wins and stays
NaN), ReLU applied to it (exact: ReLU is monotone, notes §6.1), and the image's pooled planes are
written channels-last, the layout the next convolution reads.

Measured on the project machine (2 shared cores, one process, in-process A/B; see
``benchmarks/README.md``): notes §5's first block at batch 64 (64x3x32x32, 32 filters) 7.9 -> 5.9 ms
against im2col + GEMM + the compiled planar pooling; notes §9's (32x3x128x128, 32 filters) 54 -> 38 ms.
The convolution alone is no faster than the GEMM (4.4 vs 4.5 ms; with 64 filters, ResNet's stem, 10.6
vs 6.6 ms): the gain is the pooling done in cache. Serial like every kernel here: two Python threads
splitting the images ran no faster, because OpenBLAS's worker threads keep spinning on the second
core for a while after each GEMM (the layers before this one run GEMMs every step).

The sums run in a different order than the GEMM's, so the values agree with the im2col path to
float32 rounding (a few 1e-7 relative), not bit for bit; the tests hold them to the loop reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jit import lazy_kernel

__all__ = ["conv3x3_relu_max_pool_planar_kernel"]


@lazy_kernel
def conv3x3_relu_max_pool_planar_kernel(numba: Any) -> Any:
    """``kernel(xp, w, b, out, arg)``: ``max_pool2d(relu(conv2d(x, w, b)), 2)``, 3x3, stride 1.

    - ``xp`` ``(C, N, Hp, Wp)`` C-contiguous: the zero-padded input, one plane per channel
      (:func:`cnnkit.ops.conv._pad_planar`); the convolution output is ``(Hp - 2) x (Wp - 2)``;
    - ``w`` ``(F, C, 3, 3)`` and ``b`` ``(F,)`` C-contiguous (zeros for no bias);
    - ``out`` ``(N, OH // 2, OW // 2, F)`` C-contiguous: the pooled result, channels-last;
    - ``arg`` ``(F, N, OH // 2, OW // 2)`` C-contiguous: each window's winning tap (0..3, row-major)
      in the input's float dtype, what the planar pooling backward reads
      (:mod:`cnnkit.ops._pool_kernels`).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
    def kernel(xp, w, b, out, arg):  # pragma: no cover - compiled
        c_, n_, hp, wp = xp.shape
        f_ = w.shape[0]
        oh, ow = hp - 2, wp - 2
        oh2, ow2 = oh // 2, ow // 2
        m = oh * wp - 2  # the last row's two wrapped columns would read past the plane
        zero, one, two, three = w.dtype.type(0), w.dtype.type(1), w.dtype.type(2), w.dtype.type(3)
        owp = (ow2 + 7) // 8 * 8  # pooled rows run in whole vectors (see _pool_kernels)
        # acc's tail and pooled's last row take the whole-vector overrun; never read back
        acc = np.zeros(oh * wp + 2 * owp + 16, dtype=w.dtype)
        pooled = np.empty((f_, oh2 * ow2 + owp), dtype=w.dtype)
        taps = np.empty(owp, dtype=w.dtype)
        for n in range(n_):
            for f in range(f_):
                bias = b[f]
                dst = acc[0:m]
                for i in range(m):
                    dst[i] = bias
                for c in range(c_):
                    w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                    w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                    w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                    plane = xp[c, n].reshape(-1)
                    a0, a1, a2 = plane[0:m], plane[1 : m + 1], plane[2 : m + 2]
                    b0, b1, b2 = plane[wp : wp + m], plane[wp + 1 : wp + m + 1], plane[wp + 2 : wp + m + 2]
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
