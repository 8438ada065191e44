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
from .conv import (
    PaddingArg,
    _check_conv,
    _ConvCache,
    _pad_channels_last,
    _pad_planar,
    _planar_weights,
    _Spec,
    _weight_matrix,
)
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
    undilated, one-group 3x3 convolution that takes the Winograd path (:func:`winograd.applies`) or
    is a first layer on at most 3 channels (:func:`_direct_applies`), followed by 2x2 stride-2 pooling
    without padding, on an output of at least 2x2; the caller runs the three ops one by one otherwise
    (and gets their errors for bad arguments). Returns ``(pooled, conv_cache, pool_cache)``: ``pooled``
    ``(N, F, OH // 2, OW // 2)`` with channels-last memory; the caches are what
    :func:`cnnkit.ops.conv2d_backward` and the fused ReLU + max-pooling backward take.
    """
    if tuple(pool) != _POOL_2X2:
        return None
    spec = _check_conv("conv2d", x, w, b, 1, padding, 1, 1)
    n, f, (oh, ow) = x.shape[0], w.shape[0], spec.out_hw
    if min(oh, ow) < 2:
        return None
    if winograd.applies(x.shape, f, spec.kernel, spec.stride, spec.dilation, 1, spec.out_hw):
        out, conv_cache, arg, planar = _winograd_block(x, w, b, spec)
    elif _direct_applies(spec):
        out, conv_cache, arg, planar = _direct_block(x, w, b, spec)
    else:
        return None
    g = pool_geometry((oh, ow), 2, 2, 0, 1, op="max_pool2d", empty_windows_ok=False)
    return out, conv_cache, _FastCache("max", (n, f, oh, ow), out, arg, g, True, planar)


def _winograd_block(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: _Spec):
    """The block through Winograd's output transform; the taps are channels-last like the pooling's."""
    xp = _pad_channels_last(x, winograd.padding(spec.pad, spec.out_hw))
    pooled, arg = winograd.winograd_conv_relu_max_pool(
        xp.transpose(0, 2, 3, 1), winograd.transform_weights(w), b, spec.out_hw
    )
    conv_cache = _ConvCache(
        None, _weight_matrix(w, 1, b), spec, w.shape[0], b is not None, False, False, xp, winograd=True
    )
    return pooled.transpose(0, 3, 1, 2), conv_cache, arg, False


def _direct_applies(spec: _Spec) -> bool:
    """A first layer (at most 3 channels, one group) with filters in ``DIRECT_KERNELS``, stride 1, no
    dilation, on an input big enough for the compiled kernel."""
    n, c = spec.x_shape[:2]
    hp, wp = spec.padded_hw
    return (
        c <= policy.PLANAR_MAX_CHANNELS
        and spec.kernel in policy.DIRECT_KERNELS
        and spec.stride == (1, 1)
        and spec.dilation == (1, 1)
        and spec.groups == 1
        and policy.compiled(n * c * hp * wp)
    )


def _direct_block(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: _Spec):
    """The block through the direct kernel; the cache is the planar path's (see ``_planar_forward``),
    and the taps are planar ``(F, N, OH // 2, OW // 2)`` like the planar pooling's."""
    n, f, (oh, ow) = spec.x_shape[0], w.shape[0], spec.out_hw
    xp = _pad_planar(x, spec.pad)
    pooled = np.empty((n, oh // 2, ow // 2, f), dtype=x.dtype)
    arg = np.empty((f, n, oh // 2, ow // 2), dtype=x.dtype)
    bias = np.zeros(f, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    run_split(conv_relu_max_pool_planar_kernel(), n, xp, np.ascontiguousarray(w), bias, pooled, arg)
    weights = _planar_weights(w, b)
    conv_cache = _ConvCache(None, weights, spec, f, b is not None, False, False, xp, True)
    return pooled.transpose(0, 3, 1, 2), conv_cache, arg, True
