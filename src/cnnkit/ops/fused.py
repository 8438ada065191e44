"""Convolution -> ReLU -> 2x2 max pooling in one pass (the block of notes §5 and §9).

The pooling (2x2 windows, stride 2) runs while the convolution's output is in cache (ReLU on the
pooled values, exact because ReLU is monotone, notes §6.1), so the convolution's output, the block's
largest array, is never written. Two convolutions do this:

- Winograd's F(4x4, 3x3) (:mod:`cnnkit.ops.winograd`, 3x3 stride 1, >= 16 channels in and out): every
  4x4 output tile holds four whole pooling windows, pooled by the output transform. The values are
  exactly the unfused ones (the same arithmetic in the same order; the tests compare them bit for bit).
- A network's first layer on grey or RGB images (at most 3 channels, 3x3 or 5x5 filters, stride 1):
  a direct convolution one output plane at a time (:mod:`cnnkit.ops._direct_kernels`), pooled in
  cache, in place of im2col's GEMM with inner size 28 (or 26). Its sums run in another order than the
  GEMM's: the values agree with the unfused ones to float32 rounding, not bit for bit.

Backward needs nothing new: the pooling's backward (the ReLU mask on the pooled gradient, each
gradient to its window's first maximum) gives the convolution's output gradient, and the convolution's
backward reads the same cache as after :func:`cnnkit.ops.conv2d_forward`.
"""

from __future__ import annotations

import numpy as np

from . import policy, winograd
from ._direct_kernels import conv_relu_max_pool_planar_kernel
from ._parallel import run_split
from .conv import plan_conv2d
from .conv_paths import planar
from .conv_paths import winograd as winograd_path
from .conv_paths.common import PaddingArg, pad_channels_last
from .conv_plan import ConvCache, ConvPlan
from .pool import FastMaxPoolCache, pool_geometry

__all__ = ["conv2d_relu_max_pool2d_forward", "fused_path"]

_POOL_2X2 = ((2, 2), (2, 2), (0, 0), (1, 1))  # kernel, stride, padding, dilation


def fused_path(plan: ConvPlan) -> str | None:
    """Which one-pass block a convolution with this plan runs before 2x2 pooling: ``"winograd"``,
    ``"direct"`` (a first layer with filters in ``policy.DIRECT_KERNELS``, stride 1, no dilation, its
    compiled kernels on), or None (an output smaller than 2x2, or another path)."""
    spec = plan.geometry
    if min(spec.out_hw) < 2 or spec.stride != (1, 1) or spec.dilation != (1, 1) or spec.groups != 1:
        return None
    if plan.path == "winograd":
        return "winograd"
    if plan.path == "planar" and plan.compiled and spec.kernel in policy.DIRECT_KERNELS:
        return "direct"
    return None


def conv2d_relu_max_pool2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: PaddingArg,
    pool: tuple[tuple[int, int], ...],
) -> tuple[np.ndarray, ConvCache, FastMaxPoolCache] | None:
    """``max_pool2d(relu(conv2d(x, w, b, padding=padding)), 2)`` in one pass, or None where it does not apply.

    ``pool`` is the pooling's ``(kernel, stride, padding, dilation)`` as pairs. Applies where
    :func:`fused_path` says (the convolution's plan is Winograd, or a first layer's planar path with
    compiled kernels), followed by 2x2 stride-2 pooling without padding; the caller runs the three ops
    one by one otherwise (and gets their errors for bad arguments). Returns ``(pooled, conv_cache,
    pool_cache)``: ``pooled`` ``(N, F, OH // 2, OW // 2)`` with channels-last memory; the caches are
    what :func:`cnnkit.ops.conv2d_backward` and the fused ReLU + max-pooling backward take.
    """
    if tuple(pool) != _POOL_2X2:
        return None
    plan = plan_conv2d(x, w, b, 1, padding, 1, 1)
    kind = fused_path(plan)
    if kind is None:
        return None
    (oh, ow), n, f = plan.geometry.out_hw, x.shape[0], plan.filters
    block = _winograd_block if kind == "winograd" else _direct_block
    out, conv_cache, arg, is_planar = block(plan, x, w, b)
    g = pool_geometry((oh, ow), 2, 2, 0, 1, op="max_pool2d", empty_windows_ok=False)
    return out, conv_cache, FastMaxPoolCache("max", (n, f, oh, ow), out, arg, g, True, is_planar)


def _winograd_block(plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """The block through Winograd's output transform; the taps are channels-last like the pooling's."""
    spec = plan.geometry
    xp = pad_channels_last(x, winograd.padding(spec.pad, spec.out_hw))
    pooled, arg = winograd.winograd_conv_relu_max_pool(
        xp.transpose(0, 2, 3, 1), winograd.transform_weights(w), b, spec.out_hw
    )
    return pooled.transpose(0, 3, 1, 2), winograd_path.cache_for(plan, w, b, xp), arg, False


def _direct_block(plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """The block through the direct kernel; the cache is the planar path's, and the taps are planar
    ``(F, N, OH // 2, OW // 2)`` like the planar pooling's."""
    spec = plan.geometry
    n, f, (oh, ow) = spec.x_shape[0], plan.filters, spec.out_hw
    xp = planar.pad_planar(x, spec.pad)
    pooled = np.empty((n, oh // 2, ow // 2, f), dtype=x.dtype)
    arg = np.empty((f, n, oh // 2, ow // 2), dtype=x.dtype)
    bias = np.zeros(f, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    run_split(conv_relu_max_pool_planar_kernel(), n, xp, np.ascontiguousarray(w), bias, pooled, arg)
    return pooled.transpose(0, 3, 1, 2), planar.cache_for(plan, w, b, xp), arg, True
