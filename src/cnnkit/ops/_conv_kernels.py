"""Compiled (Numba) kernels of the im2col convolution, with the layout they expect.

col2im serves the input gradient (training only); the planar unfold serves the few-channel first
layers, forward and backward, for big inputs only, so one image in ``cnnkit predict`` never imports
Numba (start-up). Each getter returns the compiled kernel, or None when Numba is missing or
``CNNKIT_NO_NUMBA=1`` is set; :mod:`cnnkit.ops.conv` then takes its NumPy path, which computes the
same values (the tests run both).

The kernels are serial (``parallel=False``: Numba's workers spin-wait and fight the two OpenBLAS
threads for the cores), release the GIL and are cached on disk (``cache=True``), so the compile cost
(about a second per dtype) is paid once per machine; later processes load them in milliseconds.
"""

from __future__ import annotations

from typing import Any

from ._jit import lazy_kernel

__all__ = ["col2im_rows_kernel", "planar_unfold_kernel"]


@lazy_kernel
def col2im_rows_kernel(numba: Any):
    """``col2im`` of one chunk of whole images, NHWC, accumulating into a padded gradient (notes §11.2).

    ``kernel(dcols, dxp, n0, oh, ow, kh, kw, sh, sw, dh, dw, groups)``:

    - ``dcols`` ``(nb*OH*OW, G*Kg)``: row ``(b*OH + i)*OW + j`` holds the gradient sent by output
      position ``(i, j)`` of image ``n0 + b`` to its window, columns in ``(g, kh, kw, c)`` order
      (``Kg = KH*KW*Cg``), i.e. ``dY @ W`` for those rows;
    - ``dxp`` ``(N, Hp, Wp*C)``: the zero-padded NHWC input gradient with its last two axes merged;
      ``dxp[n, i*sh + p*dh, (j*sw + q*dw)*C + g*Cg + c] += dcols[row, g*Kg + (p*KW + q)*Cg + c]``.

    With one group and no horizontal dilation, the ``KW*C`` values of one kernel row are contiguous
    at both ends, so the innermost loop is a single run of ``KW*C`` adds, between two 1-D slices made
    before the loop: indexed as ``dst[base + t]`` instead, the loop kept Numba's negative-index check
    and was not vectorised (measured: LeNet-5's second layer 1.24 -> 0.63 ms, a 64-channel 3x3
    stride-2 layer 5.2 -> 3.3 ms).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(dcols, dxp, n0, oh, ow, kh, kw, sh, sw, dh, dw, groups):  # pragma: no cover - compiled
        rows, width = dcols.shape
        nb = rows // (oh * ow)
        kg = width // groups
        cg = kg // (kh * kw)
        c = cg * groups
        run = kw * c
        for b in range(nb):
            n = n0 + b
            for i in range(oh):
                for j in range(ow):
                    row = (b * oh + i) * ow + j
                    src = dcols[row]
                    for p in range(kh):
                        dst = dxp[n, i * sh + p * dh]
                        if groups == 1 and dw == 1:
                            d = dst[j * sw * c : j * sw * c + run]
                            s = src[p * run : (p + 1) * run]
                            for t in range(run):
                                d[t] += s[t]
                        else:
                            for g in range(groups):
                                for q in range(kw):
                                    base = (j * sw + q * dw) * c + g * cg
                                    off = g * kg + (p * kw + q) * cg
                                    for t in range(cg):
                                        dst[base + t] += src[off + t]

    return kernel


@lazy_kernel
def planar_unfold_kernel(numba: Any):
    """im2col transposed for the planar path (:mod:`cnnkit.ops.conv_paths.planar`), one row copy at a time.

    ``kernel(xp, cols, n0, nb, kh, kw, sh, sw, dh, dw, oh, ow)``: ``xp`` ``(C, N, Hp, Wp)`` is the
    padded planar input, ``cols`` ``(K [+ 1], >= nb*OH*OW)``; row ``(c*KH + p)*KW + q`` of ``cols``
    receives tap ``(c, p, q)``'s input plane for images ``n0 : n0 + nb``:
    ``cols[k, (b*OH + y)*OW + x] = xp[c, n0 + b, y*sh + p*dh, x*sw + q*dw]``. NumPy's strided copy
    of the same slices pays a per-row overhead that dominates for 28- or 32-wide rows (measured:
    LeNet-5's first layer 1.25 -> 0.81 ms per pass, notes §5's 0.80 -> 0.42, §9's 7.1 -> 1.7).
    """

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(xp, cols, n0, nb, kh, kw, sh, sw, dh, dw, oh, ow):  # pragma: no cover - compiled
        k = 0
        for c in range(xp.shape[0]):
            for p in range(kh):
                for q in range(kw):
                    dst = cols[k]
                    for b in range(nb):
                        plane = xp[c, n0 + b]
                        for y in range(oh):
                            row = plane[y * sh + p * dh]
                            out = dst[(b * oh + y) * ow : (b * oh + y + 1) * ow]
                            if sw == 1:
                                src = row[q * dw : q * dw + ow]
                                for x in range(ow):
                                    out[x] = src[x]
                            else:
                                for x in range(ow):
                                    out[x] = row[x * sw + q * dw]
                    k += 1

    return kernel
