"""Convolution -> ReLU -> 2x2 max pooling in one pass (the block of notes §5 and §9).

When the convolution runs Winograd's F(4x4, 3x3) (:mod:`cnnkit.ops.winograd`) and the pooling has
2x2 windows with stride 2, every 4x4 output tile holds four whole pooling windows: the output
transform pools them while the tile is in cache (ReLU on the pooled values, exact because ReLU is
monotone, notes §6.1), and the convolution's output, the block's largest array, is never written.

Backward needs nothing new: the pooling's backward (the ReLU mask on the pooled gradient, each
gradient to its window's first maximum) gives the convolution's output gradient, and the convolution's
backward reads the same cache as after :func:`cnnkit.ops.conv2d_forward`. The values are exactly the
unfused ones (the same arithmetic in the same order; the tests compare them bit for bit).
"""

from __future__ import annotations

import numpy as np

from . import winograd
from .conv import PaddingArg, _check_conv, _ConvCache, _pad_channels_last, _weight_matrix
from .pool import _FastCache, pool_geometry

__all__ = ["conv2d_relu_max_pool2d_forward"]

_POOL_2X2 = ((2, 2), (2, 2), (0, 0), (1, 1))  # kernel, stride, padding, dilation


def conv2d_relu_max_pool2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: PaddingArg,
    pool: tuple[tuple[int, int], ...],
) -> tuple[np.ndarray, _ConvCache, _FastCache] | None:
    """``max_pool2d(relu(conv2d(x, w, b, padding=padding)), 2)`` in one pass, or None where it does not apply.

    ``pool`` is the pooling's ``(kernel, stride, padding, dilation)`` as pairs. Applies to a stride-1,
    undilated, one-group 3x3 convolution that takes the Winograd path (:func:`winograd.applies`)
    followed by 2x2 stride-2 pooling without padding, on an output of at least 2x2; the caller runs
    the three ops one by one otherwise (and gets their errors for bad arguments). Returns
    ``(pooled, conv_cache, pool_cache)``: ``pooled`` ``(N, F, OH // 2, OW // 2)`` with channels-last
    memory; the caches are what :func:`cnnkit.ops.conv2d_backward` and the fused ReLU + max-pooling
    backward take.
    """
    if tuple(pool) != _POOL_2X2:
        return None
    spec = _check_conv("conv2d", x, w, b, 1, padding, 1, 1)
    n, f, (oh, ow) = x.shape[0], w.shape[0], spec.out_hw
    if min(oh, ow) < 2 or not winograd.applies(
        x.shape, f, spec.kernel, spec.stride, spec.dilation, 1, spec.out_hw
    ):
        return None
    xp = _pad_channels_last(x, winograd.padding(spec.pad, spec.out_hw))
    pooled, arg = winograd.winograd_conv_relu_max_pool(
        xp.transpose(0, 2, 3, 1), winograd.transform_weights(w), b, spec.out_hw
    )
    conv_cache = _ConvCache(
        None, _weight_matrix(w, 1, b), spec, f, b is not None, False, False, xp, winograd=True
    )
    g = pool_geometry((oh, ow), 2, 2, 0, 1, op="max_pool2d", empty_windows_ok=False)
    out = pooled.transpose(0, 3, 1, 2)
    return out, conv_cache, _FastCache("max", (n, f, oh, ow), out, arg, g, True, False)
