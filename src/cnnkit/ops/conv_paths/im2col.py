"""Every other one-group convolution: im2col and one GEMM, streamed a chunk of whole images at a time
(notes §11.1, §11.2).

The im2col matrix is never stored whole: the forward pass unfolds a chunk of images (about
``policy.CHUNK_BYTES``) into a small buffer that stays in cache and multiplies it at once, with the bias
riding in the GEMM as a ones column (``[X, 1] @ [[W], [b]]``); the cache keeps the padded input. The
backward pass unfolds each chunk again for ``dw = dY^T @ [X, 1]`` (``db`` is its last column) and, with
Numba, scatters that chunk's ``dY @ W`` into ``dx`` with a compiled kernel
(:func:`~cnnkit.ops._conv_kernels.col2im_rows_kernel`) in the same pass; without it, ``dx`` is
:func:`~.common.input_grad`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._conv_kernels import col2im_rows_kernel
from ..conv_plan import ConvCache, ConvPlan
from .common import (
    ConvGeometry,
    chunk_images,
    input_grad,
    pad_channels_last,
    unfold_into,
    weight_matrix,
    window_view,
)

__all__ = ["Im2colCache", "forward", "backward"]


@dataclass(frozen=True, eq=False)
class Im2colCache(ConvCache):
    """The weight (and bias row) as the GEMM's right operand ``(1, K [+ 1], F)`` and the zero-padded
    input ``xp`` (channels-last memory), unfolded again by the backward pass."""

    path: ClassVar[str] = "im2col"
    wmat: np.ndarray
    xp: np.ndarray


def forward(
    plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, flip_kernel: bool = False
) -> tuple[np.ndarray, Im2colCache]:
    """``[im2col(x), 1] @ [[W], [b]]`` a chunk at a time; ``out`` has channels-last memory."""
    spec, f = plan.geometry, plan.filters
    n, (oh, ow) = x.shape[0], spec.out_hw
    wmat = weight_matrix(w, 1, b)
    xp = pad_channels_last(x, spec.pad)
    out = _streamed_forward(xp, wmat, spec, b is not None).reshape(n, oh, ow, f)
    return out.transpose(0, 3, 1, 2), Im2colCache(plan, b is not None, flip_kernel, wmat, xp)


def backward(
    dout: np.ndarray, cache: Im2colCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``dw`` and ``db`` from one streamed pass (with ``dx`` when Numba scatters it), else ``dx`` by
    :func:`~.common.input_grad`."""
    spec, f = cache.spec, cache.filters
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    k = kh * kw * c
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=cache.dtype).reshape(n * oh * ow, f)
    kernel = col2im_rows_kernel() if need_dx else None
    dwmat, dx = _streamed_backward(dy, cache, kernel)
    db = dwmat[:, k].copy() if cache.has_bias else None
    dw = np.ascontiguousarray(dwmat[:, :k].reshape(f, kh, kw, c).transpose(0, 3, 1, 2))
    if dx is None and need_dx:
        dx = input_grad(dy, spec, cache.wmat)
    return dx, dw, db


def _streamed_forward(xp: np.ndarray, wmat: np.ndarray, spec: ConvGeometry, bias: bool) -> np.ndarray:
    """``[im2col(x), 1] @ [[W], [b]]`` a chunk of images at a time, through one small columns buffer.

    The full im2col matrix (``KH*KW`` times the input, 150 MB for notes §9's second layer) is never
    written: each chunk is unfolded into a buffer that stays in cache and multiplied at once. Returns
    the output as an ``(M, F)`` matrix (NHWC rows).
    """
    n = spec.x_shape[0]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    k = kh * kw * spec.x_shape[1]
    width = k + bias
    per_image = oh * ow
    images = chunk_images(spec, width, xp.itemsize)
    windows = window_view(xp, spec, "grouped")
    cols = np.empty((images * per_image, width), dtype=xp.dtype)
    if bias:
        cols[:, k] = 1
    out = np.empty((n * per_image, wmat.shape[2]), dtype=xp.dtype)
    for n0 in range(0, n, images):
        nb = min(images, n - n0)
        chunk = cols[: nb * per_image]
        unfold_into(chunk, windows[n0 : n0 + nb])
        np.matmul(chunk, wmat[0], out=out[n0 * per_image : (n0 + nb) * per_image])
    return out


def _streamed_backward(
    dy: np.ndarray, cache: Im2colCache, kernel: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weight gradient ``dY^T @ [im2col(x), 1]`` (and, with ``kernel``, dX) a chunk of images at a time.

    Each chunk of columns is unfolded again from the cached padded input (cheaper than storing
    them: the input is ``KH*KW`` times smaller) and used while in cache. With the compiled
    ``kernel``, the chunk's ``dY @ W`` is scattered to dX in the same pass. Returns
    ``(dwmat (F, K [+ 1]), dx or None)``.
    """
    spec = cache.spec
    n, c, h, w = spec.x_shape
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    hp, wp = spec.padded_hw
    t, _, l, _ = spec.pad
    k = kh * kw * c
    width = k + cache.has_bias
    per_image = oh * ow
    f = dy.shape[1]
    images = chunk_images(spec, width, dy.itemsize)
    windows = window_view(cache.xp, spec, "grouped")
    cols = np.empty((images * per_image, width), dtype=dy.dtype)
    if cache.has_bias:
        cols[:, k] = 1
    dwmat = np.zeros((f, width), dtype=dy.dtype)
    part = np.empty_like(dwmat)
    if kernel is not None:
        dcols = np.empty((images * per_image, k), dtype=dy.dtype)
        dxp = np.zeros((n, hp, wp * c), dtype=dy.dtype)
        w_fk = cache.wmat[0, :k].T  # (F, K), rows of a C-ordered array
    for n0 in range(0, n, images):
        nb = min(images, n - n0)
        rows = slice(n0 * per_image, (n0 + nb) * per_image)
        chunk = cols[: nb * per_image]
        unfold_into(chunk, windows[n0 : n0 + nb])
        np.matmul(dy[rows].T, chunk, out=part)
        dwmat += part
        if kernel is not None:
            dchunk = dcols[: nb * per_image]
            np.matmul(dy[rows], w_fk, out=dchunk)
            kernel(dchunk, dxp, n0, oh, ow, kh, kw, sh, sw, dh, dw, 1)
    if kernel is None:
        return dwmat, None
    return dwmat, dxp.reshape(n, hp, wp, c)[:, t : t + h, l : l + w].transpose(0, 3, 1, 2)
