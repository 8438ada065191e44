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

Accuracy: exact in exact arithmetic. In floating point the transforms grow the values: ``V`` and
``U`` hold sums up to ~10x the inputs and the weights, so each product ``M`` is a sum over channels
of terms much larger than the output it contributes to, and ``A^T M A`` (entries up to 8) cancels them
again. With float32 products the GEMMs' rounding error, relative to those large terms, dominates:
norm-wise relative errors against float64 of 1.4e-6 forward, 1.7e-6 for ``dx`` and 2.3e-6 for ``dw``,
against im2col's 2.0e-7, 1.5e-7 and 2.2e-7 and PyTorch's 3.1e-7, 2.1e-7 and 1.6e-6 (64x64x16x16
inputs after a ReLU, 64 filters; 2026-12-07, AMD EPYC machine). A NumPy model of the algorithm puts
2.2e-7 of it on rounding ``U``, 2.4e-7 on rounding ``V`` and the rest on the float32 sums; other
interpolation points (0, +-1, 1/2, -2) only gain 1.5x, float64 transforms around float32 GEMMs 1.1x,
and scaling tiles nothing (floating-point error is scale-free). So for float32 inputs everything
between the float32 input and the float32 output runs in float64 (:data:`MIXED_PRECISION`,
:func:`product_dtype`): ``U`` from the float32 weights, the input transform (sums of small multiples
of float32 numbers: exact in float64), the 36 GEMMs and the output transform's first stage; the result
is rounded to float32 once. Measured on the same layer: 4.6e-8 forward, 8.4e-8 ``dx``, 6.9e-8 ``dw``,
better than im2col's float32 sums over ``9C`` terms (products in float64 with float32 transforms gave
3.7e-7, 4.5e-7, 6.9e-8). The price is the GEMMs' speed (float64 runs at half float32's vector width)
and twice the memory of ``U`` and of the chunk buffers; see benchmarks/README.md. float64 inputs:
1e-12.
The tests hold float32 to ``2e-5 * max|output|`` against the loop reference and PyTorch, and the
norm-wise errors to im2col's or better (tests/test_float32_accuracy.py). A non-finite input makes its whole
4x4 output tile non-finite (``inf - inf``), not only the outputs whose windows hold it.

Speed (measured on the AMD EPYC machine on 2026-11-25 with float32 products, before
:data:`MIXED_PRECISION`; simple_cnn's second layer, 64x32x16x16 -> 64 filters, against the im2col path
in the same process): forward 6.9 -> 3.7 ms; backward (``dx`` and ``dw``) 18.9 -> 11.4
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

#: Float32 convolutions run everything between the float32 input and output in float64 (see "Accuracy"
#: in the module docstring and :func:`product_dtype`); False runs them in float32 (~8x im2col's error).
MIXED_PRECISION = True
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


def product_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of the transformed weights ``U`` and tiles ``V``, the products ``M = V @ U`` and the
    weight gradient's sums ``dU`` for a convolution in ``dtype``: float64 for float32 when
    :data:`MIXED_PRECISION` (the compiled transforms then compute in float64 too: they work in the dtype
    of the buffer they write), else ``dtype``."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float64) if MIXED_PRECISION and dtype == np.float32 else dtype


def padding(pad: tuple[int, int, int, int], out_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``pad`` (top, bottom, left, right) grown at the bottom and right so the padded input covers
    whole 6x6 tiles: ``4 * ceil(OH / 4) + 2`` rows (the extra rows are zeros and reach no output)."""
    t, b, l, r = pad
    oh, ow = out_hw
    return t, b + (-oh) % 4, l, r + (-ow) % 4


def transform_weights(w: np.ndarray) -> np.ndarray:
    """``U = G w G^T`` for every (filter, channel) pair of ``w`` (F, C, 3, 3): ``(36, C, F)``, in
    :func:`product_dtype` of ``w``'s dtype (float64 for float32 weights with :data:`MIXED_PRECISION`,
    so ``U`` is not rounded to float32 either), as one ``(36, 9) @ (9, C*F)`` product. ``U`` is 4x the
    size of ``w`` (8x in float64: 75 MB for a 512 -> 512 layer), so no other temporary of its size."""
    f, c = w.shape[:2]
    dtype = product_dtype(w.dtype)
    taps = np.ascontiguousarray(w.reshape(f, c, 9).transpose(2, 1, 0), dtype=dtype)  # [(i, j), c, f]
    return (_GG.astype(dtype) @ taps.reshape(9, c * f)).reshape(36, c, f)


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
    dtype = product_dtype(xp.dtype)
    images = max(1, min(n, _CHUNK_BYTES // (tiles * 36 * (c + f) * dtype.itemsize)))
    v_buf = np.empty(images * tiles * 36 * c, dtype=dtype)
    m_buf = np.empty(images * tiles * 36 * f, dtype=dtype)
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
    u = u.astype(product_dtype(xp.dtype), copy=False)
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
    u = u.astype(product_dtype(xp.dtype), copy=False)
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
    du = np.zeros((36, c, f), dtype=product_dtype(xp.dtype))
    part = np.empty_like(du)
    transform_grad = winograd_output_grad_kernel()
    for n0, th, tw, v, dm in _transformed_chunks(xp, f, (oh, ow)):
        transform_grad(dy, dm, n0, th, tw)
        np.matmul(v.transpose(1, 2, 0), dm.transpose(1, 0, 2), out=part)
        du += part
    taps = (_GG.T.astype(du.dtype) @ du.reshape(36, c * f)).astype(xp.dtype, copy=False)  # [(i, j), c, f]
    return np.ascontiguousarray(taps.reshape(3, 3, c, f).transpose(3, 2, 0, 1))
