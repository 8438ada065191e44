"""Compiled (Numba) kernels of the convolution's backward pass, with the layout they expect.

Only the training path uses these (col2im is the input gradient), so inference never imports Numba
for them (``cnnkit predict`` start-up). Each getter returns the compiled kernel, or None when Numba is missing
or ``CNNKIT_NO_NUMBA=1`` is set; :mod:`cnnkit.ops.conv` then takes its NumPy path, which computes the
same sums (the tests run both).

The kernels are serial (``parallel=False``: Numba's workers spin-wait and fight the two OpenBLAS
threads for the cores), release the GIL and are cached on disk (``cache=True``), so the compile cost
(about a second per dtype) is paid once per machine; later processes load them in milliseconds.
"""

from __future__ import annotations

from typing import Any

from ._jit import lazy_kernel

__all__ = ["col2im_rows_kernel"]


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
    at both ends, so the innermost loop is a single run of ``KW*C`` adds (vectorised by LLVM).
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
                            base = j * sw * c
                            off = p * run
                            for t in range(run):
                                dst[base + t] += src[off + t]
                        else:
                            for g in range(groups):
                                for q in range(kw):
                                    base = (j * sw + q * dw) * c + g * cg
                                    off = g * kg + (p * kw + q) * cg
                                    for t in range(cg):
                                        dst[base + t] += src[off + t]

    return kernel
