"""3x3 stride-1 convolutions by Winograd's F(4x4, 3x3) (:mod:`cnnkit.ops.winograd`: 4x fewer
multiplications, compiled transforms), forward, input and weight gradients.

The input is padded at the bottom and right to whole 6x6 tiles (:func:`cnnkit.ops.winograd.padding`).
Backward: ``dw`` by the forward pass's adjoint (:func:`cnnkit.ops.winograd.winograd_weight_grad`),
``db = ones @ dY``, and ``dx`` as a Winograd convolution of ``dout`` padded by ``2 - pad`` (padding up to
2; col2im beyond). When Numba was switched off after the forward pass (tests do this), the cache is read
by the im2col path's backward instead: the same gradients to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import policy
from .. import winograd as wg
from .._conv_kernels import col2im_rows_kernel
from ..conv_plan import ConvCache, ConvPlan
from . import im2col
from .common import input_grad, input_grad_compiled, pad_channels_last, weight_matrix

__all__ = ["WinogradCache", "forward", "backward"]


@dataclass(frozen=True, eq=False)
class WinogradCache(ConvCache):
    """The weight as im2col's GEMM operand ``(1, 9C [+ 1], F)`` (the input gradient's transformed weights
    are built from it) and the input ``xp`` padded for whole tiles, channels-last memory."""

    path: ClassVar[str] = "winograd"
    wmat: np.ndarray
    xp: np.ndarray


def forward(
    plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, flip_kernel: bool = False
) -> tuple[np.ndarray, WinogradCache]:
    """The convolution through the transformed tiles; ``out`` has channels-last memory."""
    spec = plan.geometry
    wmat = weight_matrix(w, 1, b)
    xp = pad_channels_last(x, wg.padding(spec.pad, spec.out_hw))
    out = wg.winograd_conv(xp.transpose(0, 2, 3, 1), wg.transform_weights(w), b, spec.out_hw)
    return out.transpose(0, 3, 1, 2), WinogradCache(plan, b is not None, flip_kernel, wmat, xp)


def cache_for(plan: ConvPlan, w: np.ndarray, b: np.ndarray | None, xp: np.ndarray) -> WinogradCache:
    """The cache of a forward pass that ran elsewhere (the fused block of :mod:`cnnkit.ops.fused`) on
    ``xp`` padded as :func:`forward` pads it."""
    return WinogradCache(plan, b is not None, False, weight_matrix(w, 1, b), xp)


def _input_grad_winograd(dout: np.ndarray, cache: WinogradCache) -> np.ndarray:
    """dX of a 3x3 stride-1 convolution as a Winograd convolution of ``dout`` padded by ``2 - pad``
    (see :func:`cnnkit.ops.winograd.input_grad_weights`); padding up to 2 on every side."""
    spec = cache.spec
    _, c, h, w = spec.x_shape
    t, b, l, r = spec.pad
    dyp = pad_channels_last(
        dout.astype(cache.dtype, copy=False), wg.padding((2 - t, 2 - b, 2 - l, 2 - r), (h, w))
    )
    u = wg.input_grad_weights(cache.wmat[0, : 9 * c].reshape(3, 3, c, cache.filters))
    return wg.winograd_conv(dyp.transpose(0, 2, 3, 1), u, None, (h, w)).transpose(0, 3, 1, 2)


def backward(
    dout: np.ndarray, cache: WinogradCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``(dx, dw, db)``: see the module docstring."""
    if not policy.numba_on():  # switched off since the forward pass: the im2col path reads this cache
        fallback = im2col.Im2colCache(cache.plan, cache.has_bias, cache.flip_kernel, cache.wmat, cache.xp)
        return im2col.backward(dout, fallback, need_dx)
    spec = cache.spec
    n, (oh, ow), f = spec.x_shape[0], spec.out_hw, cache.filters
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=cache.dtype).reshape(n * oh * ow, f)
    dw = wg.winograd_weight_grad(cache.xp.transpose(0, 2, 3, 1), dy.reshape(n, oh, ow, f))
    db = np.ones(dy.shape[0], dtype=dy.dtype) @ dy if cache.has_bias else None
    if not need_dx:
        dx = None
    elif max(spec.pad) <= 2:
        dx = _input_grad_winograd(dout, cache)
    else:
        kernel = col2im_rows_kernel()
        dx = (
            input_grad(dy, spec, cache.wmat)
            if kernel is None
            else input_grad_compiled(dy, spec, cache.wmat, kernel)
        )
    return dx, dw, db
