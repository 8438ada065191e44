"""Grouped convolutions (``groups > 1``; ``groups == C`` is depthwise): the input unfolded once into
``(M, G, Kg [+ 1])`` columns (a ones column when there is a bias) and one batched GEMM per group.

Backward: ``dw[g] = dY[:, g]^T @ X[:, g]`` (the bias gradient as the last column), and ``dx =
col2im(dY @ W)``, scattered by the compiled kernel a chunk at a time when Numba is there
(:func:`~.common.input_grad_compiled`), else by :func:`~.common.input_grad`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._conv_kernels import col2im_rows_kernel
from ..conv_plan import ConvCache, ConvPlan
from .common import grouped_matmul, input_grad, input_grad_compiled, pad_channels_last, unfold, weight_matrix

__all__ = ["GroupedCache", "forward", "backward"]


@dataclass(frozen=True, eq=False)
class GroupedCache(ConvCache):
    """The unfolded input ``(M, G, Kg [+ 1])`` and the weight ``(G, Kg [+ 1], Fg)``, taps in (kh, kw, c)
    order."""

    path: ClassVar[str] = "grouped"
    cols: np.ndarray
    wmat: np.ndarray


def forward(
    plan: ConvPlan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, flip_kernel: bool = False
) -> tuple[np.ndarray, GroupedCache]:
    """``out[:, g] = [X[:, g], 1] @ [[W[g]], [b[g]]]``; ``out`` has channels-last memory."""
    spec, f = plan.geometry, plan.filters
    n, (oh, ow), g = x.shape[0], spec.out_hw, spec.groups
    cols = unfold(pad_channels_last(x, spec.pad), spec, ones_column=b is not None)
    wmat = weight_matrix(w, g, b)
    out = grouped_matmul(cols, wmat).reshape(n * oh * ow, f)
    out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    return out, GroupedCache(plan, b is not None, flip_kernel, cols, wmat)


def backward(
    dout: np.ndarray, cache: GroupedCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``dw`` and ``db`` by one batched GEMM over the groups; ``dx = col2im(dY @ W)``."""
    spec, f = cache.spec, cache.filters
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw), g = spec.out_hw, spec.kernel, spec.groups
    m, cg = n * oh * ow, c // g
    k = kh * kw * cg
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=cache.dtype).reshape(m, f)
    dwmat = np.matmul(dy.reshape(m, g, f // g).transpose(1, 2, 0), cache.cols.transpose(1, 0, 2))
    db = dwmat[:, :, k].reshape(f) if cache.has_bias else None
    dw = np.ascontiguousarray(dwmat[:, :, :k].reshape(f, kh, kw, cg).transpose(0, 3, 1, 2))
    dx = None
    if need_dx:
        kernel = col2im_rows_kernel()
        dx = (
            input_grad(dy, spec, cache.wmat)
            if kernel is None
            else input_grad_compiled(dy, spec, cache.wmat, kernel)
        )
    return dx, dw, db
