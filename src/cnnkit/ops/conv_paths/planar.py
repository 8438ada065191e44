"""A first layer on grey or RGB images (one group, at most ``policy.PLANAR_MAX_CHANNELS`` channels):
"taps first", ``[W, b] @ [im2col(x)^T; 1]``, with a *planar* result.

For ``C <= 3`` the usual ``im2col(x) @ W^T`` has a tiny inner size ``K = C*KH*KW`` and its im2col copy
moves runs of only ``KW*C`` numbers. Transposed, each row of the unfolded input is one tap's strided
slice of one padded channel plane, copied whole, and the GEMM writes one long row per filter: the output
has ``(F, N, OH, OW)`` memory (an NCHW view of it), which the compiled 2x2 max pooling reads row by row.
The unfold is compiled for big inputs (the plan's ``compiled``); a first layer's weight gradient without
``dx`` runs a direct kernel (:func:`direct_weight_grad_applies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._args import Padding4
from .._conv_kernels import planar_unfold_kernel
from .._direct_kernels import planar_weight_grad_kernel
from .._parallel import run_split, threads
from ..conv_plan import ConvCache, ConvPlan
from .common import ConvGeometry, chunk_images

__all__ = [
    "PlanarCache",
    "forward",
    "backward",
    "cache_for",
    "pad_planar",
    "planar_weights",
    "direct_weight_grad_applies",
]


@dataclass(frozen=True, eq=False)
class PlanarCache(ConvCache):
    """``[W, b]`` as ``(F, K + 1)`` (taps in (c, kh, kw) order) and the zero-padded input ``xp`` as
    ``(C, N, Hp, Wp)``, unfolded again by the backward pass."""

    path: ClassVar[str] = "planar"
    wmat: np.ndarray
    xp: np.ndarray


def forward(
    plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, flip_kernel: bool = False
) -> tuple[np.ndarray, PlanarCache]:
    """The taps-first GEMM; ``out`` has planar ``(F, N, OH, OW)`` memory."""
    xp = pad_planar(x, plan.geometry.pad)
    weights = planar_weights(w, b)
    out = _planar_forward(xp, weights, plan.geometry, plan.compiled)
    return out, PlanarCache(plan, b is not None, flip_kernel, weights, xp)


def cache_for(plan: ConvPlan, w: np.ndarray, b: np.ndarray | None, xp: np.ndarray) -> PlanarCache:
    """The cache of a forward pass that ran elsewhere (the direct fused block of :mod:`cnnkit.ops.fused`)
    on ``xp = pad_planar(x, pad)``."""
    return PlanarCache(plan, b is not None, False, planar_weights(w, b), xp)


def backward(
    dout: np.ndarray, cache: PlanarCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``dW = dY @ [im2col(x)^T; 1]^T`` (``db`` its last column) and ``dX = col2im(W^T @ dY)``, for
    ``dY`` planar ``(F, N*OH*OW)`` (no copy when ``dout`` is planar, as max pooling returns it)."""
    spec, f = cache.spec, cache.filters
    n, cg = spec.x_shape[:2]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    k = kh * kw * cg
    dy = np.ascontiguousarray(dout.transpose(1, 0, 2, 3), dtype=cache.dtype).reshape(f, n * oh * ow)
    dwmat, dx = _planar_backward(dy, cache, need_dx)
    dw = np.ascontiguousarray(dwmat[:, :k].reshape(f, cg, kh, kw))
    return dx, dw, dwmat[:, k].copy() if cache.has_bias else None


def pad_planar(x: np.ndarray, pad: Padding4) -> np.ndarray:
    """Zero-pad ``x`` (N, C, H, W) into a C-contiguous ``(C, N, Hp, Wp)`` array: one plane per channel."""
    n, c, h, w = x.shape
    t, b, l, r = pad
    hp, wp = h + t + b, w + l + r
    buf = np.empty((c, n, hp, wp), dtype=x.dtype)
    buf[:, :, :t] = 0
    buf[:, :, t + h :] = 0
    buf[:, :, t : t + h, :l] = 0
    buf[:, :, t : t + h, l + w :] = 0
    buf[:, :, t : t + h, l : l + w] = x.transpose(1, 0, 2, 3)
    return buf


def planar_weights(w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``[W, b]``: ``w`` (F, C, KH, KW) as ``(F, K + 1)``, taps in (c, kh, kw) order, the bias (or 0) last."""
    f = w.shape[0]
    weights = np.empty((f, w[0].size + 1), dtype=w.dtype)
    weights[:, :-1] = w.reshape(f, -1)
    weights[:, -1] = 0 if b is None else b
    return weights


def _planar_taps(spec: ConvGeometry) -> list[tuple[int, slice, slice]]:
    """``(channel, rows, cols)`` of every kernel tap in ``(c, kh, kw)`` order (``w.reshape(F, -1)``'s)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = spec.kernel, spec.stride, spec.dilation, spec.out_hw
    return [
        (c, slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw))
        for c in range(spec.x_shape[1])
        for p in range(kh)
        for q in range(kw)
    ]


def _planar_columns(spec: ConvGeometry, k: int, dtype: np.dtype) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The ``(K + 1, images * OH * OW)`` columns buffer of the planar path, its last row all ones (the
    bias input), sized by :func:`chunk_images`; and the ``(first image, images)`` of every chunk."""
    n = spec.x_shape[0]
    images = chunk_images(spec, k + 1, dtype.itemsize)
    cols = np.empty((k + 1, images * spec.out_hw[0] * spec.out_hw[1]), dtype=dtype)
    cols[k] = 1
    return cols, [(n0, min(images, n - n0)) for n0 in range(0, n, images)]


def _planar_unfold(
    xp: np.ndarray, taps: list, spec: ConvGeometry, n0: int, nb: int, cols: np.ndarray, compiled: bool
) -> None:
    """im2col transposed, for images ``n0 : n0 + nb``: row ``k`` of ``cols`` is tap ``k``'s input plane
    (``taps`` from :func:`_planar_taps`). Compiled for big inputs (:func:`planar_unfold_kernel`)."""
    oh, ow = spec.out_hw
    kernel = planar_unfold_kernel() if compiled else None
    if kernel is not None:
        (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
        kernel(xp, cols, n0, nb, kh, kw, sh, sw, dh, dw, oh, ow)
        return
    images = slice(n0, n0 + nb)
    for k, (c, rows, cols_) in enumerate(taps):
        cols[k].reshape(nb, oh, ow)[...] = xp[c, images, rows, cols_]


def _planar_forward(xp: np.ndarray, weights: np.ndarray, spec: ConvGeometry, compiled: bool) -> np.ndarray:
    """The forward pass as ``[W, b] @ [im2col(x)^T; 1]``, an ``(F, K + 1) @ (K + 1, N*OH*OW)`` GEMM.

    For a first layer on grey or RGB images (``C <= 3``) the usual ``im2col(x) @ W^T`` has a tiny inner
    size ``K = C*KH*KW`` and its im2col copy moves runs of only ``KW*C`` numbers. Transposed ("taps
    first"), each row of the unfolded input is one tap's strided slice of one padded channel plane
    (``xp`` is ``(C, N, Hp, Wp)``), copied whole, and the GEMM writes one long row per filter: the
    result is *planar*, ``(F, N*OH*OW)``, returned as an ``(N, F, OH, OW)`` view of ``(F, N, OH, OW)``
    memory. Max pooling reads that layout with a compiled kernel that also turns it channels-last
    (:mod:`cnnkit.ops._pool_kernels`); every other op accepts any layout. Streamed a chunk of images
    at a time like the im2col path; the bias rides in the GEMM as a row of ones.
    """
    n, f = spec.x_shape[0], weights.shape[0]
    k = weights.shape[1] - 1
    (oh, ow), per_image = spec.out_hw, spec.out_hw[0] * spec.out_hw[1]
    cols, chunks = _planar_columns(spec, k, xp.dtype)
    taps = _planar_taps(spec)
    out = np.empty((f, n * per_image), dtype=xp.dtype)
    for n0, nb in chunks:
        chunk = cols[:, : nb * per_image]
        _planar_unfold(xp, taps, spec, n0, nb, chunk, compiled)
        np.matmul(weights, chunk, out=out[:, n0 * per_image : (n0 + nb) * per_image])
    return out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)


def _planar_backward(
    dy: np.ndarray, cache: PlanarCache, need_dx: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW = dY @ [im2col(x)^T; 1]^T`` (the bias gradient as its last column) and, with ``need_dx``,
    ``dX = col2im(W^T @ dY)``, for ``dY`` planar ``(F, N*OH*OW)``, a chunk of images at a time.

    The chunk's unfolded input is rebuilt from the cached planes (cheaper than keeping it: it is
    ``KH*KW`` times the input); dX is scattered back one tap plane at a time into a planar
    ``(C, N, Hp, Wp)`` accumulator. Returns ``(dwmat (F, K + 1), dx or None)``.
    """
    spec = cache.spec
    if not need_dx and direct_weight_grad_applies(cache.plan):
        dwmat = _direct_weight_grad(dy, cache)
        if dwmat is not None:
            return dwmat, None
    _, _, h, w = spec.x_shape
    t, _, l, _ = spec.pad
    weights = cache.wmat  # (F, K + 1)
    f, k = weights.shape[0], weights.shape[1] - 1
    per_image = spec.out_hw[0] * spec.out_hw[1]
    cols, chunks = _planar_columns(spec, k, dy.dtype)
    taps = _planar_taps(spec)
    dwmat = np.zeros((f, k + 1), dtype=dy.dtype)
    part = np.empty_like(dwmat)
    if need_dx:
        dcols = np.empty((k, cols.shape[1]), dtype=dy.dtype)
        dxp = np.zeros(cache.xp.shape, dtype=dy.dtype)
        w_t = weights[:, :k].T
    for n0, nb in chunks:
        chunk = cols[:, : nb * per_image]
        dchunk = dy[:, n0 * per_image : (n0 + nb) * per_image]
        _planar_unfold(cache.xp, taps, spec, n0, nb, chunk, cache.plan.compiled)
        np.matmul(dchunk, chunk.T, out=part)
        dwmat += part
        if need_dx:
            dtaps = dcols[:, : nb * per_image]
            np.matmul(w_t, dchunk, out=dtaps)
            for row, (ch, rows, cols_) in enumerate(taps):
                dxp[ch, n0 : n0 + nb, rows, cols_] += dtaps[row].reshape(nb, *spec.out_hw)
    if not need_dx:
        return dwmat, None
    return dwmat, dxp[:, :, t : t + h, l : l + w].transpose(1, 0, 2, 3)


def direct_weight_grad_applies(plan: ConvPlan) -> bool:
    """Whether a planar layer's weight gradient (when no input gradient is wanted) runs the direct
    kernel: stride 1, no dilation, filters 3 or 5 wide, and the plan's compiled kernels."""
    spec = plan.geometry
    return spec.stride == (1, 1) and spec.dilation == (1, 1) and spec.kernel[1] in (3, 5) and plan.compiled


def _direct_weight_grad(dy: np.ndarray, cache: PlanarCache) -> np.ndarray | None:
    """``[dW, db]`` ``(F, K + 1)`` of a first layer (no input gradient wanted) by a direct kernel
    (:func:`~._direct_kernels.planar_weight_grad_kernel`) instead of a GEMM with ``F`` rows, ``K + 1``
    columns and an inner size of ``N*OH*OW``, which OpenBLAS ran at ~10 GFLOP/s after unfolding the
    input ``K`` times (measured in one process: LeNet-5's first layer 4.2 -> 1.1 ms, notes §5's 5.4 ->
    3.6 ms). Chunks of images go to threads (:mod:`._parallel`), each into its own partial sum."""
    spec = cache.spec
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    f = dy.shape[0]
    planes = dy.reshape(f, n, oh, ow)
    chunk = max(1, -(-n // (4 * threads())))
    partial = np.zeros((-(-n // chunk), f, c, kh, kw), dtype=dy.dtype)
    kernel = planar_weight_grad_kernel()
    if kernel is None:  # Numba switched off since the forward pass: the GEMM instead
        return None

    def part(n0: int, n1: int) -> None:
        kernel(cache.xp, planes, partial[n0 // chunk], n0, n1)

    run_split(part, n, chunk=chunk)
    dwmat = np.empty((f, c * kh * kw + 1), dtype=dy.dtype)
    dwmat[:, :-1] = partial.sum(axis=0).reshape(f, -1)
    dwmat[:, -1] = dy.sum(axis=1)
    return dwmat
