"""What every convolution path shares: the normalised geometry, padding, the strided window view,
the weight as a GEMM operand, im2col's unfold and its adjoint (col2im), and the input gradient
``col2im(dY @ W)`` (notes §11.1, §11.2). See :mod:`cnnkit.ops.conv` for the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...errors import ConfigError, ShapeError
from .. import policy
from .._args import Padding4, Pair, is_int, pair

__all__ = [
    "PaddingArg",
    "IntOrPair",
    "ConvGeometry",
    "out_len",
    "resolve_padding",
    "geometry",
    "pad_channels_last",
    "window_view",
    "col2im_taps",
    "weight_matrix",
    "unfold",
    "unfold_into",
    "chunk_images",
    "grouped_matmul",
    "input_grad",
    "input_grad_compiled",
]

PaddingArg = int | Sequence[int] | str
IntOrPair = int | Sequence[int]


def out_len(size: int, kernel: int, lo: int, hi: int, stride: int, dilation: int) -> int:
    """Output length along one axis for padding ``lo``/``hi`` (notes §3.4; may be < 1: the caller checks)."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def resolve_padding(padding: PaddingArg, kernel: Pair, stride: Pair, dilation: Pair, op: str) -> Padding4:
    """Normalise ``padding`` to ``(top, bottom, left, right)``.

    Accepts an int, a pair ``(ph, pw)``, a 4-tuple ``(top, bottom, left, right)``, ``'valid'`` (no
    padding) or ``'same'`` (output size equals input size; stride 1 only, as in PyTorch). For an even
    effective kernel ``'same'`` puts the extra row/column at the bottom/right, as PyTorch does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ConfigError(f"{op}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ConfigError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if is_int(padding):
        values: tuple[int, ...] = (int(padding),) * 4
    elif isinstance(padding, Sequence) and len(padding) in (2, 4) and all(is_int(v) for v in padding):
        values = tuple(int(v) for v in padding)
        if len(values) == 2:
            values = (values[0], values[0], values[1], values[1])
    else:
        raise ConfigError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if min(values) < 0:
        raise ConfigError(f"{op}: padding must be >= 0, got {padding!r}")
    return values  # type: ignore[return-value]


class ConvGeometry(NamedTuple):
    """Normalised geometry of one convolution."""

    x_shape: tuple[int, int, int, int]
    kernel: Pair
    stride: Pair
    pad: Padding4
    dilation: Pair
    groups: int
    out_hw: Pair

    @property
    def padded_hw(self) -> Pair:
        t, b, l, r = self.pad
        return self.x_shape[2] + t + b, self.x_shape[3] + l + r


def geometry(
    op: str,
    x_shape: tuple[int, ...],
    kernel: Pair,
    stride: IntOrPair,
    padding: PaddingArg,
    dilation: IntOrPair,
    groups: int,
    where: str,
) -> ConvGeometry:
    stride_p = pair(stride, "stride", op)
    dilation_p = pair(dilation, "dilation", op)
    pad = resolve_padding(padding, kernel, stride_p, dilation_p, op)
    _, _, h, w = x_shape
    t, b, l, r = pad
    oh = out_len(h, kernel[0], t, b, stride_p[0], dilation_p[0])
    ow = out_len(w, kernel[1], l, r, stride_p[1], dilation_p[1])
    if oh < 1 or ow < 1:
        eh, ew = dilation_p[0] * (kernel[0] - 1) + 1, dilation_p[1] * (kernel[1] - 1) + 1
        raise ShapeError(
            f"{op}: the kernel ({kernel[0]}x{kernel[1]}, dilation {dilation_p}, covering "
            f"{eh}x{ew} pixels) is larger than the padded input ({h + t + b}x{w + l + r}, padding "
            f"(top, bottom, left, right) = {pad}) for {where}; output size would be ({oh}, {ow})"
        )
    return ConvGeometry(tuple(x_shape), kernel, stride_p, pad, dilation_p, groups, (oh, ow))  # type: ignore[arg-type]


def pad_channels_last(x: np.ndarray, pad: Padding4) -> np.ndarray:
    """Zero-pad ``x`` (N, C, H, W); the result has channels-last memory (a view of an NHWC buffer).

    One copy, or none when there is no padding and ``x`` already has channels-last memory.
    """
    n, c, h, w = x.shape
    t, b, l, r = pad
    xt = x.transpose(0, 2, 3, 1)
    if not any(pad):
        return np.ascontiguousarray(xt).transpose(0, 3, 1, 2)
    hp, wp = h + t + b, w + l + r
    buf = np.empty((n, hp, wp, c), dtype=x.dtype)
    buf[:, :t] = 0
    buf[:, t + h :] = 0
    buf[:, t : t + h, :l] = 0
    buf[:, t : t + h, l + w :] = 0
    buf[:, t : t + h, l : l + w] = xt
    return buf.transpose(0, 3, 1, 2)


def window_view(xp: np.ndarray, spec: ConvGeometry, order: str) -> np.ndarray:
    """A read-only strided view of every kernel window of ``xp`` (N, C, Hp, Wp); no copy.

    ``order='grouped'`` gives axes (N, OH, OW, G, KH, KW, C // G) (NHWC tap order, the GEMM's);
    ``order='chw'`` gives (N, OH, OW, C, KH, KW) (the public im2col's column order).
    """
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    kh, kw = spec.kernel
    (sh, sw), (dh, dw), (oh, ow) = spec.stride, spec.dilation, spec.out_hw
    lead_shape, lead_strides = (n, oh, ow), (s_n, s_h * sh, s_w * sw)
    if order == "grouped":
        g = spec.groups
        shape = (*lead_shape, g, kh, kw, c // g)
        strides = (*lead_strides, s_c * (c // g), s_h * dh, s_w * dw, s_c)
    else:
        shape = (*lead_shape, c, kh, kw)
        strides = (*lead_strides, s_c, s_h * dh, s_w * dw)
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


def col2im_taps(taps: np.ndarray, spec: ConvGeometry, channels_first: bool = False) -> np.ndarray:
    """Adjoint of the window gather: add every tap's values back to the pixels it was read from.

    ``taps`` is ``(KH, KW, N, OH, OW, *channels)`` (any strides): ``taps[p, q]`` holds, for every
    output position, the gradient sent to the pixel under kernel tap ``(p, q)``. A loop over the
    KH*KW kernel offsets, each adding one strided slice of the padded gradient (Chainer's
    ``col2im_cpu``); no loop over pixels or images. The accumulator is NHWC, or CNHW with
    ``channels_first`` (one channel axis only) to match taps laid out that way, so every add runs
    over contiguous memory. Returns dx (N, C, H, W) without the padding.
    """
    kh, kw, n, oh, ow = taps.shape[:5]
    channels = taps.shape[5:]
    _, _, h, w = spec.x_shape
    hp, wp = spec.padded_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    t, _, l, _ = spec.pad
    if channels_first:
        dxp = np.zeros((*channels, n, hp, wp), dtype=taps.dtype).transpose(1, 2, 3, 0)
    else:
        dxp = np.zeros((n, hp, wp, *channels), dtype=taps.dtype)
    for p in range(kh):
        rows = slice(p * dh, p * dh + sh * (oh - 1) + 1, sh)
        for q in range(kw):
            cols = slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)
            dxp[:, rows, cols] += taps[p, q]
    dx = dxp.reshape(n, hp, wp, math.prod(channels))[:, t : t + h, l : l + w]
    return dx.transpose(0, 3, 1, 2)


def weight_matrix(w: np.ndarray, groups: int, b: np.ndarray | None) -> np.ndarray:
    """``w`` (F, Cg, KH, KW) as ``(G, KH*KW*Cg [+ 1], F//G)``, taps in (kh, kw, c) order.

    With ``b``, its values are the last row, so ``[X, 1] @ [[W], [b]] = X @ W + b`` inside one GEMM.
    The result is a transposed view of a C-ordered ``(G, F//G, K)`` array (what BLAS wants).
    """
    f, cg, kh, kw = w.shape
    k = kh * kw * cg
    wt = np.empty((groups, f // groups, k + (b is not None)), dtype=w.dtype)
    wg = w.reshape(groups, f // groups, cg, kh, kw).transpose(0, 1, 3, 4, 2)
    wt[:, :, :k] = wg.reshape(groups, f // groups, k)
    if b is not None:
        wt[:, :, k] = b.reshape(groups, f // groups)
    return wt.transpose(0, 2, 1)


def unfold(xp: np.ndarray, spec: ConvGeometry, ones_column: bool) -> np.ndarray:
    """im2col in GEMM layout: ``(N*OH*OW, G, KH*KW*Cg [+ 1])``, one strided copy.

    The copy moves runs of ``KW * Cg`` contiguous numbers when ``xp`` is channels-last. With
    ``ones_column`` each group's row ends in a 1 (the bias input).
    """
    windows = window_view(xp, spec, "grouped")  # (N, OH, OW, G, KH, KW, Cg)
    n, oh, ow, g, kh, kw, cg = windows.shape
    k = kh * kw * cg
    if not ones_column:
        return np.ascontiguousarray(windows).reshape(n * oh * ow, g, k)
    cols = np.empty((n * oh * ow, g, k + 1), dtype=xp.dtype)
    item = cols.itemsize
    target = as_strided(
        cols,
        shape=windows.shape,
        strides=tuple(
            item * s for s in (oh * ow * g * (k + 1), ow * g * (k + 1), g * (k + 1), k + 1, kw * cg, cg, 1)
        ),
    )
    np.copyto(target, windows)
    cols[:, :, k] = 1
    return cols


def unfold_into(cols: np.ndarray, windows: np.ndarray) -> None:
    """Copy ``windows`` (nb, OH, OW, 1, KH, KW, C) into the first ``K`` columns of ``cols`` (rows, K [+ 1])."""
    nb, oh, ow, _, kh, kw, c = windows.shape
    row = cols.shape[1]
    item = cols.itemsize
    target = as_strided(
        cols,
        shape=windows.shape,
        strides=tuple(item * s for s in (oh * ow * row, ow * row, row, row, kw * c, c, 1)),
    )
    np.copyto(target, windows)


def chunk_images(spec: ConvGeometry, width: int, itemsize: int) -> int:
    """Whole images per chunk so that a chunk's ``(rows, width)`` columns take about ``policy.CHUNK_BYTES``."""
    per_image = spec.out_hw[0] * spec.out_hw[1] * width * itemsize
    return max(1, min(spec.x_shape[0], policy.CHUNK_BYTES // max(1, per_image)))


def grouped_matmul(a: np.ndarray, bmat: np.ndarray) -> np.ndarray:
    """``out[:, g] = a[:, g] @ bmat[g]`` for ``a`` (M, G, K) and ``bmat`` (G, K, P) -> (M, G, P)."""
    m, g, _ = a.shape
    if g == 1:
        return np.matmul(a[:, 0], bmat[0])[:, None]
    out = np.empty((m, g, bmat.shape[2]), dtype=a.dtype)
    np.matmul(a.transpose(1, 0, 2), bmat, out=out.transpose(1, 0, 2))
    return out


def input_grad(dy: np.ndarray, spec: ConvGeometry, wmat: np.ndarray) -> np.ndarray:
    """``col2im(dY @ W)`` laid out so the scatter-adds run over contiguous memory.

    ``dY`` is ``(M, F)``. The same product in the layout that suits the shape:

    - one group, ``C >= 8``: a batched GEMM gives one contiguous ``(M, C)`` slab per kernel tap,
      ``(KH*KW, M, C)``; each scatter-add then moves runs of ``OW * C`` numbers.
    - one group, ``C < 8`` (4 to 7 channels: fewer take the planar path): ``W^T @ dY^T`` gives
      ``(KH*KW*C, M)``, one contiguous ``(N, OH, OW)`` plane per tap and channel; the GEMM stays a
      single wide product and the adds run along image rows (a CNHW accumulator, copied to
      channels-last at the end; dx is small when C is).
    - groups: one ``(M, G, Kg)`` grouped product, scattered per tap.
    """
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw), g = spec.out_hw, spec.kernel, spec.groups
    m, f = dy.shape
    # (G, Kg, Fg) without the bias row: a transposed view of a C-ordered (G, Fg, Kg) array
    wmat = wmat[:, : kh * kw * (c // g)]
    if g == 1 and c >= policy.NARROW_CHANNELS:
        w_taps = wmat[0].T.reshape(f, kh * kw, c).transpose(1, 0, 2)  # (KH*KW, F, C), no copy
        taps = np.matmul(dy, w_taps).reshape(kh, kw, n, oh, ow, c)
        return col2im_taps(taps, spec)
    if g == 1:
        planes = (wmat[0] @ dy.T).reshape(kh, kw, c, n, oh, ow)
        dx = col2im_taps(planes.transpose(0, 1, 3, 4, 5, 2), spec, channels_first=True)
        # back to channels-last memory like every other result (dx has only C < 8 channels)
        return np.ascontiguousarray(dx.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    cg = c // g
    dcols = grouped_matmul(dy.reshape(m, g, f // g), wmat.transpose(0, 2, 1))
    taps = dcols.reshape(n, oh, ow, g, kh, kw, cg).transpose(4, 5, 0, 1, 2, 3, 6)
    return col2im_taps(taps, spec)


def input_grad_compiled(dy: np.ndarray, spec: ConvGeometry, wmat: np.ndarray, kernel: Any) -> np.ndarray:
    """``col2im(dY @ W)`` with the compiled scatter kernel, a chunk of whole images at a time.

    The product ``dY @ W`` for a chunk of about :data:`_DX_CHUNK_BYTES` is computed into one reused
    buffer and scattered into the padded NHWC gradient at once, while it is still in cache: the full
    ``(M, KH*KW*C)`` matrix (75 MB for the notes' second layer at batch 256) is never materialised.
    """
    n, c, h, w = spec.x_shape
    (oh, ow), (kh, kw), g = spec.out_hw, spec.kernel, spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    hp, wp = spec.padded_hw
    t, _, l, _ = spec.pad
    m, f = dy.shape
    kg = kh * kw * (c // g)
    wmat = wmat[:, :kg]  # (G, Kg, Fg), a transposed view
    per_image = oh * ow
    images = max(1, min(n, policy.DX_CHUNK_BYTES // max(1, per_image * g * kg * dy.itemsize)))
    buf = np.empty((images * per_image, g * kg), dtype=dy.dtype)
    dxp = np.zeros((n, hp, wp * c), dtype=dy.dtype)
    w_fk = wmat[0].T if g == 1 else None  # (F, K) C-ordered rows (stride K [+ 1])
    for n0 in range(0, n, images):
        nb = min(images, n - n0)
        rows = slice(n0 * per_image, (n0 + nb) * per_image)
        chunk = buf[: nb * per_image]
        if g == 1:
            np.matmul(dy[rows], w_fk, out=chunk)
        else:
            fg = f // g
            out3 = chunk.reshape(nb * per_image, g, kg).transpose(1, 0, 2)
            np.matmul(dy[rows].reshape(-1, g, fg).transpose(1, 0, 2), wmat.transpose(0, 2, 1), out=out3)
        kernel(chunk, dxp, n0, oh, ow, kh, kw, sh, sw, dh, dw, g)
    return dxp.reshape(n, hp, wp, c)[:, t : t + h, l : l + w].transpose(0, 3, 1, 2)
