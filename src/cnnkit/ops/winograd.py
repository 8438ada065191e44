"""Winograd's F(4x4, 3x3): 3x3 stride-1 convolutions with 4x fewer multiplications (notes §3, §11.1).

A 3x3 cross-correlation computes each 4x4 block of outputs from a 6x6 input tile ``d`` (stride 4).
Written with small constant matrices (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016, the points 0, 1, -1, 2, -2 and infinity)::

    Y = A^T [ (G g G^T) * (B^T d B) ] A         (* elementwise, 6x6)

for one channel and one filter ``g``: 36 multiplications instead of 16 * 9 = 144. Summed over input
channels, the elementwise product becomes 36 independent matrix products, one per position ``e`` of
the 6x6 transformed tile::

    M[e] = V[e] @ U[e]      V[e]: (tiles, C) transformed input,  U[e] = (G w G^T)[e]: (C, F)

so the convolution is: transform the input tiles (:func:`~._winograd_kernels.winograd_input_kernel`),
36 GEMMs with inner size ``C``, transform the products back and add the bias
(:func:`~._winograd_kernels.winograd_output_kernel`). The input gradient of a 3x3 stride-1
convolution is itself one (the full cross-correlation of ``dout`` with the kernel turned by 180
degrees and its channel axes swapped, see :func:`input_grad_weights`), so it runs here too. The
weight gradient is the adjoint of the same algorithm with respect to ``g`` (notes §7.2: backpropagate
through each step): ``dg = G^T [ sum_tiles (B^T d B) * (A dY A^T) ] G``, 36 GEMMs whose inner size is
the number of tiles (:func:`winograd_weight_grad`).

Accuracy: exact in exact arithmetic; in floating point the transforms add and subtract values up
to ~10x the inputs, so float32 results differ from the direct sum by a few units in the 6th
significant digit of the largest output (measured: 4e-4 on outputs up to 80 with ``C = 32``, against
7e-5 for im2col; float64: 1e-12). The tests hold float32 to ``2e-5 * max|output|`` against the loop
reference and PyTorch. A non-finite input makes its whole 4x4 output tile non-finite
(``inf - inf``), not only the outputs whose windows hold it.

Speed (measured on the project machine, simple_cnn's second layer, 64x32x16x16 -> 64 filters, against
the im2col path in the same process): forward 6.9 -> 3.7 ms; backward (``dx`` and ``dw``) 18.9 -> 11.4
ms. The weight gradient's 36 GEMMs are small (``C x tiles @ tiles x F``) and run at only ~50-60
GFLOP/s here, so it gains least (im2col's ~7.5 -> ~5 ms). It needs the compiled transforms: without
Numba, for small inputs (one image in ``cnnkit predict``, which then never imports Numba) and for few
tiles per channel (see :func:`applies`), :mod:`cnnkit.ops.conv` runs im2col.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import policy
from ._winograd_kernels import (
    winograd_input_kernel,
    winograd_output_grad_kernel,
    winograd_output_kernel,
    winograd_output_relu_pool_kernel,
)

__all__ = [
    "applies",
    "padding",
    "transform_weights",
    "input_grad_weights",
    "winograd_conv",
    "winograd_conv_relu_max_pool",
    "winograd_weight_grad",
]

#: Whole images per chunk so that a chunk's transformed input and products take about this many bytes
#: (1 to 8 MB measured: 4 MB fastest, the chunk stays in the 32 MB L3 cache).
_CHUNK_BYTES = 1 << 22
#: ``G`` of F(4x4, 3x3): the filter transform ``U = G g G^T`` (6x6 from 3x3), in float64 (cast to the
#: weights' dtype when applied).
_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
#: ``U = G g G^T`` as one product: ``U.flat[6a + b] = sum_{i, j} G[a, i] G[b, j] g[i, j] = (G kron G) @ g.flat``.
_GG = np.kron(_G, _G)


def applies(
    x_shape: tuple[int, int, int, int],
    filters: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    out_hw: tuple[int, int],
) -> bool:
    """Whether a convolution of ``x_shape`` (N, C, H, W) with ``filters`` filters takes this path.

    Besides the geometry (3x3, stride 1, no dilation, one group) and ``WINOGRAD_MIN_CHANNELS``
    (thresholds: :mod:`cnnkit.ops.policy`): at least one 4x4 output tile per
    ``WINOGRAD_CHANNELS_PER_TILE`` channels (``4 * tiles >= max(C, F)``, tiles over the whole
    batch). Below that
    the transformed weights (``36 * C * F`` numbers, transformed again for each gradient) and the thin
    GEMMs cost more than the multiplications saved: measured in one process, ResNet's last stage at
    batch 64 (512 -> 512 channels on 4x4 images: 64 tiles) took 116 ms for the backward pass against
    im2col's 100 ms, while at 8x8 images (256 channels, 256 tiles) Winograd took 68 against 97 ms.
    """
    n, c, h, w = x_shape
    tiles = n * -(-out_hw[0] // 4) * -(-out_hw[1] // 4)
    return (
        kernel == (3, 3)
        and stride == (1, 1)
        and dilation == (1, 1)
        and groups == 1
        and min(c, filters) >= policy.WINOGRAD_MIN_CHANNELS
        and policy.WINOGRAD_CHANNELS_PER_TILE * tiles >= max(c, filters)
        and policy.compiled(n * c * h * w)
    )


def padding(pad: tuple[int, int, int, int], out_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``pad`` (top, bottom, left, right) grown at the bottom and right so the padded input covers
    whole 6x6 tiles: ``4 * ceil(OH / 4) + 2`` rows (the extra rows are zeros and reach no output)."""
    t, b, l, r = pad
    oh, ow = out_hw
    return t, b + (-oh) % 4, l, r + (-ow) % 4


def transform_weights(w: np.ndarray) -> np.ndarray:
    """``U = G w G^T`` for every (filter, channel) pair of ``w`` (F, C, 3, 3): ``(36, C, F)``, in
    ``w``'s dtype, as one ``(36, 9) @ (9, C*F)`` product (``U`` is 4x the size of ``w``: 38 MB for a
    512 -> 512 layer in float32, so no float64 temporary)."""
    f, c = w.shape[:2]
    taps = np.ascontiguousarray(w.reshape(f, c, 9).transpose(2, 1, 0))  # [(i, j), c, f]
    return (_GG.astype(w.dtype) @ taps.reshape(9, c * f)).reshape(36, c, f)


def input_grad_weights(w_taps: np.ndarray) -> np.ndarray:
    """The transformed weights of the input gradient, from ``w_taps`` (3, 3, C, F) (taps, channel, filter).

    ``dx[n, y, x, c] = sum_{i, j, f} dY[n, y + t - i, x + l - j, f] * w[f, c, i, j]`` is a 3x3
    cross-correlation of ``dY`` (zero-padded by ``2 - pad`` on each side) with the kernel
    ``w'[c, f, i, j] = w[f, c, 2 - i, 2 - j]``: filters and channels swapped, the taps turned by 180
    degrees. Returns ``(36, F, C)``.
    """
    return transform_weights(w_taps[::-1, ::-1].transpose(2, 3, 0, 1))


def _transformed_chunks(xp: np.ndarray, f: int, out_hw: tuple[int, int]) -> Iterator[tuple]:
    """Chunks of whole images of ``xp`` (N, Hp, Wp, C), about ``_CHUNK_BYTES`` of transformed input and
    products each: yields ``(n0, th, tw, v, m)``, ``th x tw`` tiles per image, ``v`` (tiles, 36, C)
    holding the chunk's transformed input tiles (:func:`~._winograd_kernels.winograd_input_kernel`)
    and ``m`` (tiles, 36, F) free for the caller; both are views of two buffers reused chunk after
    chunk, so they stay in cache."""
    n, _, _, c = xp.shape
    oh, ow = out_hw
    th, tw = -(-oh // 4), -(-ow // 4)
    tiles = th * tw
    images = max(1, min(n, _CHUNK_BYTES // (tiles * 36 * (c + f) * xp.itemsize)))
    v_buf = np.empty(images * tiles * 36 * c, dtype=xp.dtype)
    m_buf = np.empty(images * tiles * 36 * f, dtype=xp.dtype)
    transform_in = winograd_input_kernel()
    for n0 in range(0, n, images):
        nb = min(images, n - n0)
        v = v_buf[: nb * tiles * 36 * c].reshape(nb * tiles, 36, c)
        transform_in(xp, v, n0, th, tw)
        yield n0, th, tw, v, m_buf[: nb * tiles * 36 * f].reshape(nb * tiles, 36, f)


def winograd_conv(
    xp: np.ndarray, u: np.ndarray, bias: np.ndarray | None, out_hw: tuple[int, int]
) -> np.ndarray:
    """The 3x3 stride-1 cross-correlation of ``xp`` (N, Hp, Wp, C), C-contiguous and zero-padded as
    :func:`padding` says, with the transformed weights ``u`` (36, C, F), plus ``bias`` (F,) or None.

    Returns ``(N, OH, OW, F)``, C-contiguous. A chunk of whole images at a time: the chunk's tiles are
    transformed into ``V`` (tiles, 36, C), multiplied (36 GEMMs, one batched ``matmul``) into ``M``
    (tiles, 36, F) and transformed back, while both buffers stay in cache.
    """
    f = u.shape[2]
    out = np.empty((xp.shape[0], *out_hw, f), dtype=xp.dtype)
    bias = np.zeros(f, dtype=xp.dtype) if bias is None else bias
    transform_out = winograd_output_kernel()
    for n0, th, tw, v, m in _transformed_chunks(xp, f, out_hw):
        np.matmul(v.transpose(1, 0, 2), u, out=m.transpose(1, 0, 2))
        transform_out(m, out, bias, n0, th, tw)
    return out


def winograd_conv_relu_max_pool(
    xp: np.ndarray, u: np.ndarray, bias: np.ndarray | None, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`winograd_conv`, then ReLU and 2x2 stride-2 max pooling, in one pass: the convolution's
    output is never written. Returns ``(pooled, arg)``, both ``(N, OH // 2, OW // 2, F)`` C-contiguous,
    ``arg`` the int8 index (0..3, row-major) of each window's first maximum (see
    :func:`~._winograd_kernels.winograd_output_relu_pool_kernel`)."""
    f = u.shape[2]
    oh, ow = out_hw
    pooled = np.empty((xp.shape[0], oh // 2, ow // 2, f), dtype=xp.dtype)
    arg = np.empty(pooled.shape, dtype=np.int8)
    bias = np.zeros(f, dtype=xp.dtype) if bias is None else bias
    transform_out = winograd_output_relu_pool_kernel()
    for n0, th, tw, v, m in _transformed_chunks(xp, f, out_hw):
        np.matmul(v.transpose(1, 0, 2), u, out=m.transpose(1, 0, 2))
        transform_out(m, pooled, arg, bias, n0, th, tw, oh, ow)
    return pooled, arg


def winograd_weight_grad(xp: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dW`` ``(F, C, 3, 3)`` of :func:`winograd_conv` for the output gradient ``dy`` (N, OH, OW, F).

    The adjoint of the forward pass with respect to the filters: the forward is
    ``Y = A^T [U * V] A`` per tile with ``U = G g G^T``, so ``dU[e] = sum_tiles V[e]^T @ dM[e]`` with
    ``dM = A dY A^T`` per 4x4 output-gradient tile (36 GEMMs whose inner size is the number of
    tiles), and ``dg = G^T dU G``. ``xp`` is the padded input of the forward pass (channels-last,
    C-contiguous, as :func:`padding` says) and ``dy`` is C-contiguous. A chunk of images at a time.
    """
    c, (_, oh, ow, f) = xp.shape[3], dy.shape
    du = np.zeros((36, c, f), dtype=xp.dtype)
    part = np.empty_like(du)
    transform_grad = winograd_output_grad_kernel()
    for n0, th, tw, v, dm in _transformed_chunks(xp, f, (oh, ow)):
        transform_grad(dy, dm, n0, th, tw)
        np.matmul(v.transpose(1, 2, 0), dm.transpose(1, 0, 2), out=part)
        du += part
    taps = _GG.T.astype(xp.dtype) @ du.reshape(36, c * f)  # [(i, j), c, f]
    return np.ascontiguousarray(taps.reshape(3, 3, c, f).transpose(3, 2, 0, 1))
