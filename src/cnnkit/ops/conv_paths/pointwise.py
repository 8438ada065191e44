"""The 1x1, stride-1, unpadded, one-group convolution (notes §8.1): it mixes channels only, so it is one
``(N*H*W, C) @ (C, F)`` GEMM with no im2col (and no copy at all when ``x`` has channels-last memory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..conv_plan import ConvCache, ConvPlan
from .common import grouped_matmul, weight_matrix

__all__ = ["PointwiseCache", "forward", "backward"]


@dataclass(frozen=True, eq=False)
class PointwiseCache(ConvCache):
    """The input as ``(M, 1, C)`` rows and the weight as ``(1, C, F)`` (no bias row)."""

    path: ClassVar[str] = "pointwise"
    cols: np.ndarray
    wmat: np.ndarray


def forward(
    plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, flip_kernel: bool = False
) -> tuple[np.ndarray, PointwiseCache]:
    """``x @ W^T + b`` over the channel axis; ``out`` has channels-last memory."""
    n, (oh, ow), f = x.shape[0], plan.geometry.out_hw, plan.filters
    cols = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * oh * ow, 1, x.shape[1])
    wmat = weight_matrix(w, 1, None)
    out = grouped_matmul(cols, wmat).reshape(n * oh * ow, f)
    if b is not None:
        out += b
    out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    return out, PointwiseCache(plan, b is not None, flip_kernel, cols, wmat)


def backward(
    dout: np.ndarray, cache: PointwiseCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``dw = dY^T @ X``, ``db = dY^T @ ones``, ``dx = dY @ W`` (already NHWC: nothing to scatter)."""
    spec, f, dtype = cache.spec, cache.filters, cache.dtype
    n, c = spec.x_shape[:2]
    oh, ow = spec.out_hw
    m = n * oh * ow
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=dtype).reshape(m, f)
    dwmat = np.matmul(dy.reshape(m, 1, f).transpose(1, 2, 0), cache.cols.transpose(1, 0, 2))
    db = np.ones(m, dtype=dtype) @ dy if cache.has_bias else None
    dw = np.ascontiguousarray(dwmat[:, :, :c].reshape(f, 1, 1, c).transpose(0, 3, 1, 2))
    dx = None
    if need_dx:
        dx = (dy @ cache.wmat[0, :c].T).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)
    return dx, dw, db
