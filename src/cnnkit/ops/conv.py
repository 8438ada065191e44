"""2-D convolution: output sizes, im2col/col2im, and the forward and backward kernels (notes §3, §11).

Layout and dtype
----------------
Arrays are NCHW: ``x`` is ``(N, C, H, W)``, the weight ``w`` is ``(F, C // groups, KH, KW)`` and the bias
``b`` is ``(F,)``. float32 stays float32 and float64 stays float64. Inside, the kernels work
channels-last (NHWC), which lets the im2col copy move runs of ``KW * C`` contiguous numbers and turns the
convolution into one matrix product with the output already in NHWC order. The arrays returned keep
the NCHW *shape* (``out.shape == (N, F, OH, OW)``); their *memory* is channels-last (a transposed view
of an NHWC buffer, as PyTorch's ``channels_last``). The exception is a convolution of at most
``_PLANAR_MAX_CHANNELS`` (3) input channels, a first layer on grey or RGB images: it runs "taps first"
and its result (and its ``dx``) has *planar* ``(C, N, H, W)`` memory (see :func:`_planar_forward`).
Every NumPy operation sees an ordinary NCHW array either way; call ``np.ascontiguousarray(out)`` if
C-ordered memory is needed. A channels-last input is used without a layout copy.

Cross-correlation versus convolution
------------------------------------
The notes define convolution in §3.2 with a flipped kernel,
``(I * K)[i, j] = sum_m sum_n I[i - m, j - n] K[m, n]``, but their worked example in §3.3 slides the
kernel *without* flipping it, which is cross-correlation,
``out[i, j] = sum_m sum_n I[i + m, j + n] K[m, n]``. Every deep-learning framework (PyTorch, Keras,
TensorFlow, JAX) computes cross-correlation and calls it convolution; so does :func:`conv2d` by default.
With ``flip_kernel=True`` it computes the true convolution of §3.2 (the kernel turned by 180 degrees),
restricted to the positions where the kernel lies inside the padded input. For a learned kernel the
difference does not matter (the network learns the flipped kernel instead); for a hand-written kernel
such as §3.3's edge detector it changes the sign of the answer.

With stride ``(sh, sw)``, dilation ``(dh, dw)`` and the input zero-padded to ``xp``, the forward pass is
(for filter ``f`` in group ``g``, ``Cg = C // groups`` input channels per group)::

    out[n, f, i, j] = b[f] + sum_{c < Cg, p < KH, q < KW}
                      xp[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw] * w[f, c, p, q]

Output size (notes §3.4, generalised): ``OH = floor((H + pt + pb - dh*(KH-1) - 1) / sh) + 1``.

As a matrix product (notes §11.1): ``im2col(x)`` has one row per output position and one column per
kernel tap, so the forward pass is ``im2col(x) @ w.reshape(F, -1).T``: one GEMM per convolution (per
group), for the whole batch at once.

Backward (notes §7.2, §11.2), with ``dY = dL/dout`` as an ``(N*OH*OW, F)`` matrix and ``X = im2col(x)``:

- ``dL/dw = dY^T @ X``. Written out, ``dw[f, c, p, q] = sum_{n,i,j} dout[n, f, i, j] *
  xp[n, c, i*sh + p*dh, j*sw + q*dw]``: the *cross-correlation* of the padded input with ``dout``
  (``dout`` used as the kernel, its taps spread ``stride`` apart, the result sampled ``dilation``
  apart). The notes' §11.2 writes "convolution(dL/dO, I)"; for stride 1, no dilation it is exactly
  the valid cross-correlation ``corr(I, dL/dO)``, not a flipped-kernel convolution.
- ``dL/dx = col2im(dY @ W)``: every output position sends ``dout * w`` back to the pixels it read,
  overlapping contributions added. This is the "full" convolution of ``dout`` (with ``stride - 1``
  zeros between its entries) with the kernel, i.e. a full cross-correlation with the flipped kernel,
  cropped by the padding.
- ``dL/db[f] = sum_{n,i,j} dout[n, f, i, j]``, i.e. ``dY^T @ ones``. The forward pass folds the bias
  into its GEMM (``[X, 1] @ [[W], [b]]``: no separate pass over the output to add it), so ``db``
  comes out of the weight-gradient GEMM as its last column.

With ``flip_kernel=True`` the same formulas hold for the flipped kernel and ``dw`` is flipped back.

Speed (one group): the im2col matrix is never stored whole. The forward pass unfolds a chunk of
whole images (about ``_CHUNK_BYTES``) into a small buffer that stays in cache and multiplies it at
once; the cache keeps the padded input, and the backward pass unfolds each chunk again for
``dw`` and, when Numba is available, scatters that chunk's ``dY @ W`` into ``dx`` with a compiled
kernel (:mod:`cnnkit.ops._conv_kernels`) in the same pass. A 3x3 stride-1 convolution with at least
16 input channels and filters runs Winograd's F(4x4, 3x3) instead (:mod:`cnnkit.ops.winograd`: 4x
fewer multiplications, compiled transforms) for the forward pass, ``dx`` and ``dw``. Small
inputs (one image in ``cnnkit predict``) stay on the NumPy paths, so they never import Numba. Every
array returned (``out``, ``dx``, ``dw``, ``db``) is freshly
allocated: results kept from earlier calls are never overwritten; only the chunk buffers are internal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ConfigError, DTypeError, ShapeError
from . import policy, winograd
from ._args import Padding4, Pair, check_array, is_int, pair
from ._conv_kernels import col2im_rows_kernel, planar_unfold_kernel
from ._direct_kernels import planar_weight_grad_kernel
from ._parallel import run_split, threads

__all__ = [
    "conv_output_size",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_forward",
    "conv2d_backward",
]

PaddingArg = int | Sequence[int] | str
IntOrPair = int | Sequence[int]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------- sizes and arguments
def conv_output_size(size: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """Output length of a convolution (or pooling) along one axis (notes §3.4).

    ``out = floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1``

    With ``dilation = 1`` this is the notes' ``(W - F + 2P) / S + 1``, rounded *down* when the
    division is not exact: the last window that does not fit is dropped (6, kernel 3, stride 2 gives
    ``floor(1.5) + 1 = 2``). A dilated kernel covers ``dilation*(kernel - 1) + 1`` pixels.

    >>> conv_output_size(32, 3, padding=1)  # notes §5, layer 1
    32
    >>> conv_output_size(100, 3, padding=1, stride=2)  # exercise 1.2: 50.5 floored
    50

    Raises :class:`~cnnkit.errors.ConfigError` if an argument is not an int in range or the result
    is smaller than 1 (the kernel does not fit in the padded input).
    """
    op = "conv_output_size"
    for name, value, minimum in (
        ("size", size, 1),
        ("kernel", kernel, 1),
        ("padding", padding, 0),
        ("stride", stride, 1),
        ("dilation", dilation, 1),
    ):
        if not is_int(value) or value < minimum:
            raise ConfigError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    out = _out_len(int(size), int(kernel), int(padding), int(padding), int(stride), int(dilation))
    if out < 1:
        raise ConfigError(
            f"{op}: kernel {kernel} (dilation {dilation}, covering "
            f"{dilation * (kernel - 1) + 1} pixels) does not fit in size {size} + 2*padding "
            f"{padding} = {size + 2 * padding}; output size would be {out}"
        )
    return out


def _out_len(size: int, kernel: int, lo: int, hi: int, stride: int, dilation: int) -> int:
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def _resolve_padding(padding: PaddingArg, kernel: Pair, stride: Pair, dilation: Pair, op: str) -> Padding4:
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


class _Spec(NamedTuple):
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


def _geometry(
    op: str,
    x_shape: tuple[int, ...],
    kernel: Pair,
    stride: IntOrPair,
    padding: PaddingArg,
    dilation: IntOrPair,
    groups: int,
    where: str,
) -> _Spec:
    stride_p = pair(stride, "stride", op)
    dilation_p = pair(dilation, "dilation", op)
    pad = _resolve_padding(padding, kernel, stride_p, dilation_p, op)
    _, _, h, w = x_shape
    t, b, l, r = pad
    oh = _out_len(h, kernel[0], t, b, stride_p[0], dilation_p[0])
    ow = _out_len(w, kernel[1], l, r, stride_p[1], dilation_p[1])
    if oh < 1 or ow < 1:
        eh, ew = dilation_p[0] * (kernel[0] - 1) + 1, dilation_p[1] * (kernel[1] - 1) + 1
        raise ShapeError(
            f"{op}: the kernel ({kernel[0]}x{kernel[1]}, dilation {dilation_p}, covering "
            f"{eh}x{ew} pixels) is larger than the padded input ({h + t + b}x{w + l + r}, padding "
            f"(top, bottom, left, right) = {pad}) for {where}; output size would be ({oh}, {ow})"
        )
    return _Spec(tuple(x_shape), kernel, stride_p, pad, dilation_p, groups, (oh, ow))  # type: ignore[arg-type]


def _check_float(arr: np.ndarray, op: str, name: str) -> None:
    if arr.dtype not in _FLOATS:
        raise DTypeError(f"{op}: {name} must be float32 or float64, got {arr.dtype}")


def _check_conv(
    op: str,
    x: object,
    w: object,
    b: object,
    stride: IntOrPair,
    padding: PaddingArg,
    dilation: IntOrPair,
    groups: int,
) -> _Spec:
    """Validate every argument of :func:`conv2d_forward`; return the normalised geometry."""
    x = check_array(x, op, "x", ndim=4)
    w = check_array(w, op, "w")
    if w.ndim != 4:
        raise ShapeError(
            f"{op}: w must have 4 dimensions (F, C // groups, KH, KW), got {w.ndim} with shape {w.shape}"
        )
    _check_float(x, op, "x")
    if w.dtype != x.dtype:
        raise DTypeError(
            f"{op}: x and w must have the same dtype, got x {x.dtype} and w {w.dtype}; "
            f"cast one, e.g. w.astype(np.{x.dtype})"
        )
    if min(x.shape[1:]) < 1 or min(w.shape) < 1:
        raise ShapeError(
            f"{op}: x (N, C, H, W) and w (F, C // groups, KH, KW) need C, H, W, F, KH, KW >= 1, "
            f"got x {x.shape} and w {w.shape}"
        )
    if not is_int(groups) or groups < 1:
        raise ConfigError(f"{op}: groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    n, c, h, width = x.shape
    f, cg, kh, kw = w.shape
    if c % groups:
        raise ConfigError(f"{op}: groups={groups} must divide the input channels C={c} (x shape {x.shape})")
    if f % groups:
        raise ConfigError(f"{op}: groups={groups} must divide the filters F={f} (w shape {w.shape})")
    if cg * groups != c:
        raise ShapeError(
            f"{op}: channel mismatch: x has C={c} channels (shape {x.shape}) but w expects "
            f"w.shape[1] * groups = {cg} * {groups} = {cg * groups} (w shape {w.shape})"
        )
    if b is not None:
        if not isinstance(b, np.ndarray):
            raise DTypeError(f"{op}: b must be a numpy.ndarray or None, got {type(b).__name__}")
        if b.shape != (f,):
            raise ShapeError(f"{op}: b must have shape (F,) = ({f},), got {b.shape}")
        if b.dtype != x.dtype:
            raise DTypeError(f"{op}: b must have the dtype of x ({x.dtype}), got {b.dtype}")
    where = f"x of shape {x.shape} and w of shape {w.shape}"
    return _geometry(op, x.shape, (kh, kw), stride, padding, dilation, groups, where)


# ----------------------------------------------------------------------------- strided kernels
def _pad_channels_last(x: np.ndarray, pad: Padding4) -> np.ndarray:
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


def _windows(xp: np.ndarray, spec: _Spec, order: str) -> np.ndarray:
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


def _col2im_taps(taps: np.ndarray, spec: _Spec, channels_first: bool = False) -> np.ndarray:
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


# ----------------------------------------------------------------------------- public im2col/col2im
def _im2col_args(
    op: str, kernel_size: IntOrPair, x_shape: tuple[int, ...], stride, padding, dilation
) -> _Spec:
    kernel = pair(kernel_size, "kernel_size", op)
    return _geometry(op, x_shape, kernel, stride, padding, dilation, 1, f"input of shape {x_shape}")


def im2col(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Unfold every kernel window of ``x`` (N, C, H, W) into a row (notes §11.1).

    Returns ``cols`` of shape ``(N*OH*OW, C*KH*KW)``: row ``(n*OH + i)*OW + j`` holds the window
    under output position ``(i, j)`` of image ``n``, its columns ordered ``(c, kh, kw)`` so that
    ``im2col(x, ...) @ w.reshape(F, -1).T`` is the convolution (as an ``(N*OH*OW, F)`` matrix).
    Built from a strided view with a single copy (plus one for padding).

    >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # notes §11.1: x11..x33 -> 1..9
    >>> im2col(x, 2)
    array([[1., 2., 4., 5.],
           [2., 3., 5., 6.],
           [4., 5., 7., 8.],
           [5., 6., 8., 9.]])
    """
    op = "im2col"
    x = check_array(x, op, "x", ndim=4)
    spec = _im2col_args(op, kernel_size, x.shape, stride, padding, dilation)
    xp = x if not any(spec.pad) else _pad_channels_last(x, spec.pad)
    n, c = x.shape[:2]
    oh, ow = spec.out_hw
    kh, kw = spec.kernel
    return np.ascontiguousarray(_windows(xp, spec, "chw")).reshape(n * oh * ow, c * kh * kw)


def col2im(
    cols: np.ndarray,
    x_shape: Sequence[int],
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter rows back to an ``x_shape`` array, summing overlaps.

    ``cols`` is ``(N*OH*OW, C*KH*KW)`` in :func:`im2col`'s order; the result has shape ``x_shape``
    (N, C, H, W), and the values that fell on the padding are dropped. It satisfies
    ``sum(im2col(x) * cols) == sum(x * col2im(cols, x.shape))``, which is why the backward pass of the
    convolution uses it: ``dx = col2im(dY @ W)``.
    """
    op = "col2im"
    cols = check_array(cols, op, "cols", ndim=2)
    if len(tuple(x_shape)) != 4 or not all(is_int(s) and s >= 1 for s in x_shape):
        raise ShapeError(f"{op}: x_shape must be 4 positive ints (N, C, H, W), got {x_shape!r}")
    x_shape = tuple(int(s) for s in x_shape)
    spec = _im2col_args(op, kernel_size, x_shape, stride, padding, dilation)
    n, c = x_shape[:2]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    expected = (n * oh * ow, c * kh * kw)
    if cols.shape != expected:
        raise ShapeError(
            f"{op}: cols must have shape (N*OH*OW, C*KH*KW) = {expected} for x_shape {x_shape}, "
            f"got {cols.shape}"
        )
    taps = cols.reshape(n, oh, ow, c, kh, kw).transpose(4, 5, 0, 1, 2, 3)
    return _col2im_taps(taps, spec)


# ----------------------------------------------------------------------------- forward / backward
class _ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs: the unfolded input and the weight as GEMM operands."""

    cols: np.ndarray | None  # (M, G, Kg [+ 1]): taps in (kh, kw, c) order, then a ones column (bias);
    # None on the streamed path, which keeps the padded input ``xp`` instead and unfolds it again
    wmat: np.ndarray  # (G, Kg [+ 1], Fg): the weight (and bias row) as the GEMM's right operand
    spec: _Spec
    filters: int
    has_bias: bool
    flip_kernel: bool
    pointwise: bool  # the 1x1 fast path: no im2col, no col2im, bias added after the GEMM
    xp: np.ndarray | None = None  # streamed path: the zero-padded input, channels-last memory;
    # planar path: the zero-padded input as (C, N, Hp, Wp)
    planar: bool = False  # the few-channel path: wmat is (F, K + 1), taps in (c, kh, kw) order
    winograd: bool = False  # the forward pass ran Winograd F(4x4, 3x3); xp is padded for its tiles

    @property
    def dtype(self) -> np.dtype:
        return self.wmat.dtype

    @property
    def bias_folded(self) -> bool:
        """Whether the bias is a row of ``wmat`` (times a ones column of ``cols``)."""
        return self.has_bias and not self.pointwise and not self.planar


def _weight_matrix(w: np.ndarray, groups: int, b: np.ndarray | None) -> np.ndarray:
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


def _unfold(xp: np.ndarray, spec: _Spec, ones_column: bool) -> np.ndarray:
    """im2col in GEMM layout: ``(N*OH*OW, G, KH*KW*Cg [+ 1])``, one strided copy.

    The copy moves runs of ``KW * Cg`` contiguous numbers when ``xp`` is channels-last. With
    ``ones_column`` each group's row ends in a 1 (the bias input).
    """
    windows = _windows(xp, spec, "grouped")  # (N, OH, OW, G, KH, KW, Cg)
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


def _unfold_into(cols: np.ndarray, windows: np.ndarray) -> None:
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


def _chunk_images(spec: _Spec, width: int, itemsize: int) -> int:
    """Whole images per chunk so that a chunk's ``(rows, width)`` columns take about ``_CHUNK_BYTES``."""
    per_image = spec.out_hw[0] * spec.out_hw[1] * width * itemsize
    return max(1, min(spec.x_shape[0], policy.CHUNK_BYTES // max(1, per_image)))


def _streamed_forward(xp: np.ndarray, wmat: np.ndarray, spec: _Spec, bias: bool) -> np.ndarray:
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
    images = _chunk_images(spec, width, xp.itemsize)
    windows = _windows(xp, spec, "grouped")
    cols = np.empty((images * per_image, width), dtype=xp.dtype)
    if bias:
        cols[:, k] = 1
    out = np.empty((n * per_image, wmat.shape[2]), dtype=xp.dtype)
    for n0 in range(0, n, images):
        nb = min(images, n - n0)
        chunk = cols[: nb * per_image]
        _unfold_into(chunk, windows[n0 : n0 + nb])
        np.matmul(chunk, wmat[0], out=out[n0 * per_image : (n0 + nb) * per_image])
    return out


def _pad_planar(x: np.ndarray, pad: Padding4) -> np.ndarray:
    """Zero-pad ``x`` (N, C, H, W) into a C-contiguous ``(C, N, Hp, Wp)`` array: one plane per channel."""
    n, c, h, w = x.shape
    t, b, l, r = pad
    hp, wp = h + t + b, w + l + r
    buf = np.empty((c, n, hp, wp), dtype=x.dtype)
    buf[:, :, :t] = 0
    buf[:, :, t + h :] = 0
    buf[:, :, t : t + h, :l] = 0
    buf[:, :, t : t + h, l + w :] = 0
    buf[:, :, t : t + h, l : l + w] = x.transpose(1, 0, 2, 3)
    return buf


def _planar_weights(w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``[W, b]``: ``w`` (F, C, KH, KW) as ``(F, K + 1)``, taps in (c, kh, kw) order, the bias (or 0) last."""
    f = w.shape[0]
    weights = np.empty((f, w[0].size + 1), dtype=w.dtype)
    weights[:, :-1] = w.reshape(f, -1)
    weights[:, -1] = 0 if b is None else b
    return weights


def _planar_taps(spec: _Spec) -> list[tuple[int, slice, slice]]:
    """``(channel, rows, cols)`` of every kernel tap in ``(c, kh, kw)`` order (``w.reshape(F, -1)``'s)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = spec.kernel, spec.stride, spec.dilation, spec.out_hw
    return [
        (c, slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw))
        for c in range(spec.x_shape[1])
        for p in range(kh)
        for q in range(kw)
    ]


def _planar_columns(spec: _Spec, k: int, dtype: np.dtype) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The ``(K + 1, images * OH * OW)`` columns buffer of the planar path, its last row all ones (the
    bias input), sized by :func:`_chunk_images`; and the ``(first image, images)`` of every chunk."""
    n = spec.x_shape[0]
    images = _chunk_images(spec, k + 1, dtype.itemsize)
    cols = np.empty((k + 1, images * spec.out_hw[0] * spec.out_hw[1]), dtype=dtype)
    cols[k] = 1
    return cols, [(n0, min(images, n - n0)) for n0 in range(0, n, images)]


def _planar_unfold(xp: np.ndarray, taps: list, spec: _Spec, n0: int, nb: int, cols: np.ndarray) -> None:
    """im2col transposed, for images ``n0 : n0 + nb``: row ``k`` of ``cols`` is tap ``k``'s input plane
    (``taps`` from :func:`_planar_taps`). Compiled for big inputs (:func:`planar_unfold_kernel`)."""
    oh, ow = spec.out_hw
    kernel = planar_unfold_kernel() if policy.compiled(xp.size) else None
    if kernel is not None:
        (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
        kernel(xp, cols, n0, nb, kh, kw, sh, sw, dh, dw, oh, ow)
        return
    images = slice(n0, n0 + nb)
    for k, (c, rows, cols_) in enumerate(taps):
        cols[k].reshape(nb, oh, ow)[...] = xp[c, images, rows, cols_]


def _planar_forward(xp: np.ndarray, weights: np.ndarray, spec: _Spec) -> np.ndarray:
    """The forward pass as ``[W, b] @ [im2col(x)^T; 1]``, an ``(F, K + 1) @ (K + 1, N*OH*OW)`` GEMM.

    For a first layer on grey or RGB images (``C <= 3``) the usual ``im2col(x) @ W^T`` has a tiny inner
    size ``K = C*KH*KW`` and its im2col copy moves runs of only ``KW*C`` numbers. Transposed ("taps
    first"), each row of the unfolded input is one tap's strided slice of one padded channel plane
    (``xp`` is ``(C, N, Hp, Wp)``), copied whole, and the GEMM writes one long row per filter: the
    result is *planar*, ``(F, N*OH*OW)``, returned as an ``(N, F, OH, OW)`` view of ``(F, N, OH, OW)``
    memory. Max pooling reads that layout with a compiled kernel that also turns it channels-last
    (:mod:`cnnkit.ops._pool_kernels`); every other op accepts any layout. Streamed a chunk of images
    at a time like :func:`_streamed_forward`; the bias rides in the GEMM as a row of ones.
    """
    n, f = spec.x_shape[0], weights.shape[0]
    k = weights.shape[1] - 1
    (oh, ow), per_image = spec.out_hw, spec.out_hw[0] * spec.out_hw[1]
    cols, chunks = _planar_columns(spec, k, xp.dtype)
    taps = _planar_taps(spec)
    out = np.empty((f, n * per_image), dtype=xp.dtype)
    for n0, nb in chunks:
        chunk = cols[:, : nb * per_image]
        _planar_unfold(xp, taps, spec, n0, nb, chunk)
        np.matmul(weights, chunk, out=out[:, n0 * per_image : (n0 + nb) * per_image])
    return out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)


def _planar_backward(
    dy: np.ndarray, cache: _ConvCache, need_dx: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW = dY @ [im2col(x)^T; 1]^T`` (the bias gradient as its last column) and, with ``need_dx``,
    ``dX = col2im(W^T @ dY)``, for ``dY`` planar ``(F, N*OH*OW)``, a chunk of images at a time.

    The chunk's unfolded input is rebuilt from the cached planes (cheaper than keeping it: it is
    ``KH*KW`` times the input); dX is scattered back one tap plane at a time into a planar
    ``(C, N, Hp, Wp)`` accumulator. Returns ``(dwmat (F, K + 1), dx or None)``.
    """
    spec = cache.spec
    if not need_dx and _direct_weight_grad_applies(spec, cache.xp):
        return _direct_weight_grad(dy, cache), None
    _, _, h, w = spec.x_shape
    t, _, l, _ = spec.pad
    weights = cache.wmat  # (F, K + 1)
    f, k = weights.shape[0], weights.shape[1] - 1
    per_image = spec.out_hw[0] * spec.out_hw[1]
    cols, chunks = _planar_columns(spec, k, dy.dtype)
    taps = _planar_taps(spec)
    dwmat = np.zeros((f, k + 1), dtype=dy.dtype)
    part = np.empty_like(dwmat)
    if need_dx:
        dcols = np.empty((k, cols.shape[1]), dtype=dy.dtype)
        dxp = np.zeros(cache.xp.shape, dtype=dy.dtype)
        w_t = weights[:, :k].T
    for n0, nb in chunks:
        chunk = cols[:, : nb * per_image]
        dchunk = dy[:, n0 * per_image : (n0 + nb) * per_image]
        _planar_unfold(cache.xp, taps, spec, n0, nb, chunk)
        np.matmul(dchunk, chunk.T, out=part)
        dwmat += part
        if need_dx:
            dtaps = dcols[:, : nb * per_image]
            np.matmul(w_t, dchunk, out=dtaps)
            for row, (ch, rows, cols_) in enumerate(taps):
                dxp[ch, n0 : n0 + nb, rows, cols_] += dtaps[row].reshape(nb, *spec.out_hw)
    if not need_dx:
        return dwmat, None
    return dwmat, dxp[:, :, t : t + h, l : l + w].transpose(1, 0, 2, 3)


def _direct_weight_grad_applies(spec: _Spec, xp: np.ndarray) -> bool:
    """Whether a planar layer's weight gradient runs :func:`_direct_weight_grad`: stride 1, no
    dilation, filters 3 or 5 wide, an input big enough for the compiled kernel."""
    return (
        spec.stride == (1, 1)
        and spec.dilation == (1, 1)
        and spec.kernel[1] in (3, 5)
        and policy.compiled(xp.size)
    )


def _direct_weight_grad(dy: np.ndarray, cache: _ConvCache) -> np.ndarray:
    """``[dW, db]`` ``(F, K + 1)`` of a first layer (no input gradient wanted) by a direct kernel
    (:func:`~._direct_kernels.planar_weight_grad_kernel`) instead of a GEMM with ``F`` rows, ``K + 1``
    columns and an inner size of ``N*OH*OW``, which OpenBLAS ran at ~10 GFLOP/s after unfolding the
    input ``K`` times (measured in one process: LeNet-5's first layer 4.2 -> 1.1 ms, notes §5's 5.4 ->
    3.6 ms). Chunks of images go to threads (:mod:`._parallel`), each into its own partial sum."""
    spec = cache.spec
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw) = spec.out_hw, spec.kernel
    f = dy.shape[0]
    planes = dy.reshape(f, n, oh, ow)
    chunk = max(1, -(-n // (4 * threads())))
    partial = np.zeros((-(-n // chunk), f, c, kh, kw), dtype=dy.dtype)
    kernel = planar_weight_grad_kernel()

    def part(n0: int, n1: int) -> None:
        kernel(cache.xp, planes, partial[n0 // chunk], n0, n1)

    run_split(part, n, chunk=chunk)
    dwmat = np.empty((f, c * kh * kw + 1), dtype=dy.dtype)
    dwmat[:, :-1] = partial.sum(axis=0).reshape(f, -1)
    dwmat[:, -1] = dy.sum(axis=1)
    return dwmat


def _streamed_backward(dy: np.ndarray, cache: _ConvCache, kernel) -> tuple[np.ndarray, np.ndarray | None]:
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
    width = k + cache.bias_folded
    per_image = oh * ow
    f = dy.shape[1]
    images = _chunk_images(spec, width, dy.itemsize)
    windows = _windows(cache.xp, spec, "grouped")
    cols = np.empty((images * per_image, width), dtype=dy.dtype)
    if cache.bias_folded:
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
        _unfold_into(chunk, windows[n0 : n0 + nb])
        np.matmul(dy[rows].T, chunk, out=part)
        dwmat += part
        if kernel is not None:
            dchunk = dcols[: nb * per_image]
            np.matmul(dy[rows], w_fk, out=dchunk)
            kernel(dchunk, dxp, n0, oh, ow, kh, kw, sh, sw, dh, dw, 1)
    if kernel is None:
        return dwmat, None
    return dwmat, dxp.reshape(n, hp, wp, c)[:, t : t + h, l : l + w].transpose(0, 3, 1, 2)


def _grouped_matmul(a: np.ndarray, bmat: np.ndarray) -> np.ndarray:
    """``out[:, g] = a[:, g] @ bmat[g]`` for ``a`` (M, G, K) and ``bmat`` (G, K, P) -> (M, G, P)."""
    m, g, _ = a.shape
    if g == 1:
        return np.matmul(a[:, 0], bmat[0])[:, None]
    out = np.empty((m, g, bmat.shape[2]), dtype=a.dtype)
    np.matmul(a.transpose(1, 0, 2), bmat, out=out.transpose(1, 0, 2))
    return out


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    flip_kernel: bool = False,
) -> tuple[np.ndarray, _ConvCache]:
    """2-D convolution (cross-correlation, see the module docstring) and a cache for backward.

    Args:
        x: input ``(N, C, H, W)``, float32 or float64.
        w: filters ``(F, C // groups, KH, KW)``, same dtype as ``x``.
        b: bias ``(F,)`` or None.
        stride, dilation: int or ``(vertical, horizontal)`` pair, >= 1.
        padding: int, ``(ph, pw)``, ``(top, bottom, left, right)``, ``'valid'`` or ``'same'``
            (stride 1 only; an even effective kernel gets the extra row/column at the
            bottom/right, as in PyTorch).
        groups: split channels into ``groups`` independent convolutions (``groups == C`` is a
            depthwise convolution).
        flip_kernel: compute the true convolution of notes §3.2 (kernel turned by 180 degrees)
            instead of the cross-correlation every framework computes.

    Returns:
        ``out`` ``(N, F, OH, OW)`` (channels-last memory; planar for at most 3 input channels, see
        the module docstring) and the cache for :func:`conv2d_backward`.

    A 1x1, stride-1, unpadded convolution (notes §8.1) skips im2col: it is one matrix product over
    the channel axis. Everything else is one strided im2col copy (with a ones column when there is
    a bias, which then rides in the GEMM) and one GEMM per group, batched over all images.
    """
    op = "conv2d"
    spec = _check_conv(op, x, w, b, stride, padding, dilation, groups)
    n = x.shape[0]
    f = w.shape[0]
    (oh, ow), g = spec.out_hw, spec.groups
    if flip_kernel:
        w = w[:, :, ::-1, ::-1]
    pointwise = spec.kernel == (1, 1) and spec.stride == (1, 1) and not any(spec.pad) and g == 1
    if pointwise:
        # notes §8.1: a 1x1 convolution mixes channels only: (N*H*W, C) @ (C, F); no im2col, and
        # no copy at all when x already has channels-last memory.
        cols = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * oh * ow, 1, x.shape[1])
        wmat = _weight_matrix(w, g, None)
    elif g == 1 and x.shape[1] <= policy.PLANAR_MAX_CHANNELS:
        # a first layer on grey or RGB images: taps-first GEMM with a planar result, see _planar_forward
        xp = _pad_planar(x, spec.pad)
        weights = _planar_weights(w, b)
        out = _planar_forward(xp, weights, spec)
        return out, _ConvCache(None, weights, spec, f, b is not None, bool(flip_kernel), False, xp, True)
    elif g == 1:
        wmat = _weight_matrix(w, g, b)
        use_winograd = winograd.applies(x.shape, f, spec.kernel, spec.stride, spec.dilation, g, spec.out_hw)
        if use_winograd:
            # 3x3, stride 1, enough channels: Winograd F(4x4, 3x3), see cnnkit.ops.winograd
            xp = _pad_channels_last(x, winograd.padding(spec.pad, spec.out_hw))
            out = winograd.winograd_conv(
                xp.transpose(0, 2, 3, 1), winograd.transform_weights(w), b, spec.out_hw
            )
        else:
            # streamed: im2col and GEMM a chunk of images at a time (the bias rides in as a ones column)
            xp = _pad_channels_last(x, spec.pad)
            out = _streamed_forward(xp, wmat, spec, b is not None).reshape(n, oh, ow, f)
        cache = _ConvCache(
            None, wmat, spec, f, b is not None, bool(flip_kernel), False, xp, winograd=use_winograd
        )
        return out.transpose(0, 3, 1, 2), cache
    else:
        # the bias rides in the GEMM as a ones column: no separate pass over the output
        cols = _unfold(_pad_channels_last(x, spec.pad), spec, ones_column=b is not None)
        wmat = _weight_matrix(w, g, b)
    out = _grouped_matmul(cols, wmat).reshape(n * oh * ow, f)
    if pointwise and b is not None:
        out += b
    out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    cache = _ConvCache(cols, wmat, spec, f, b is not None, bool(flip_kernel), pointwise)
    return out, cache


def _input_grad(dy: np.ndarray, cache: _ConvCache) -> np.ndarray:
    """``col2im(dY @ W)`` laid out so the scatter-adds run over contiguous memory.

    ``dY`` is ``(M, F)``. The same product in the layout that suits the shape:

    - 1x1 fast path: ``dY @ W`` is already dx in NHWC; nothing to scatter.
    - one group, ``C >= 8``: a batched GEMM gives one contiguous ``(M, C)`` slab per kernel tap,
      ``(KH*KW, M, C)``; each scatter-add then moves runs of ``OW * C`` numbers.
    - one group, ``C < 8`` (4 to 7 channels: fewer take the planar path): ``W^T @ dY^T`` gives
      ``(KH*KW*C, M)``, one contiguous ``(N, OH, OW)`` plane per tap and channel; the GEMM stays a
      single wide product and the adds run along image rows (a CNHW accumulator, copied to
      channels-last at the end; dx is small when C is).
    - groups: one ``(M, G, Kg)`` grouped product, scattered per tap.
    """
    spec = cache.spec
    n, c = spec.x_shape[:2]
    (oh, ow), (kh, kw), g = spec.out_hw, spec.kernel, spec.groups
    m, f = dy.shape
    # (G, Kg, Fg) without the bias row: a transposed view of a C-ordered (G, Fg, Kg) array
    wmat = cache.wmat[:, : kh * kw * (c // g)]
    if cache.pointwise:
        return (dy @ wmat[0].T).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)
    if g == 1 and c >= policy.NARROW_CHANNELS:
        w_taps = wmat[0].T.reshape(f, kh * kw, c).transpose(1, 0, 2)  # (KH*KW, F, C), no copy
        taps = np.matmul(dy, w_taps).reshape(kh, kw, n, oh, ow, c)
        return _col2im_taps(taps, spec)
    if g == 1:
        planes = (wmat[0] @ dy.T).reshape(kh, kw, c, n, oh, ow)
        dx = _col2im_taps(planes.transpose(0, 1, 3, 4, 5, 2), spec, channels_first=True)
        # back to channels-last memory like every other result (dx has only C < 8 channels)
        return np.ascontiguousarray(dx.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    cg = c // g
    dcols = _grouped_matmul(dy.reshape(m, g, f // g), wmat.transpose(0, 2, 1))
    taps = dcols.reshape(n, oh, ow, g, kh, kw, cg).transpose(4, 5, 0, 1, 2, 3, 6)
    return _col2im_taps(taps, spec)


def _input_grad_compiled(dy: np.ndarray, cache: _ConvCache, kernel) -> np.ndarray:
    """``col2im(dY @ W)`` with the compiled scatter kernel, a chunk of whole images at a time.

    The product ``dY @ W`` for a chunk of about :data:`_DX_CHUNK_BYTES` is computed into one reused
    buffer and scattered into the padded NHWC gradient at once, while it is still in cache: the full
    ``(M, KH*KW*C)`` matrix (75 MB for the notes' second layer at batch 256) is never materialised.
    """
    spec = cache.spec
    n, c, h, w = spec.x_shape
    (oh, ow), (kh, kw), g = spec.out_hw, spec.kernel, spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    hp, wp = spec.padded_hw
    t, _, l, _ = spec.pad
    m, f = dy.shape
    kg = kh * kw * (c // g)
    wmat = cache.wmat[:, :kg]  # (G, Kg, Fg), a transposed view
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


def _input_grad_winograd(dout: np.ndarray, cache: _ConvCache) -> np.ndarray:
    """dX of a 3x3 stride-1 convolution as a Winograd convolution of ``dout`` padded by ``2 - pad``
    (see :func:`cnnkit.ops.winograd.input_grad_weights`); padding up to 2 on every side."""
    spec = cache.spec
    _, c, h, w = spec.x_shape
    t, b, l, r = spec.pad
    dyp = _pad_channels_last(
        dout.astype(cache.dtype, copy=False), winograd.padding((2 - t, 2 - b, 2 - l, 2 - r), (h, w))
    )
    u = winograd.input_grad_weights(cache.wmat[0, : 9 * c].reshape(3, 3, c, cache.filters))
    return winograd.winograd_conv(dyp.transpose(0, 2, 3, 1), u, None, (h, w)).transpose(0, 3, 1, 2)


def _winograd_backward(
    dout: np.ndarray, dy: np.ndarray, cache: _ConvCache, need_dx: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """:func:`conv2d_backward` after a Winograd forward pass: ``dw`` by the forward's adjoint
    (:func:`cnnkit.ops.winograd.winograd_weight_grad`), ``db = ones @ dY``, ``dx`` as a Winograd
    convolution of ``dout`` (padding up to 2; col2im beyond)."""
    spec = cache.spec
    n, (oh, ow), f = spec.x_shape[0], spec.out_hw, cache.filters
    dw = winograd.winograd_weight_grad(cache.xp.transpose(0, 2, 3, 1), dy.reshape(n, oh, ow, f))
    if cache.flip_kernel:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])
    db = np.ones(dy.shape[0], dtype=dy.dtype) @ dy if cache.has_bias else None
    if not need_dx:
        dx = None
    elif max(spec.pad) <= 2:
        dx = _input_grad_winograd(dout, cache)
    else:
        kernel = col2im_rows_kernel()
        dx = _input_grad(dy, cache) if kernel is None else _input_grad_compiled(dy, cache, kernel)
    return dx, dw, db


def conv2d_backward(
    dout: np.ndarray, cache: _ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dw, db)`` for ``dout = dL/dout``.

    ``dx`` has ``x``'s shape, ``dw`` ``w``'s, ``db`` is ``(F,)`` or None when the forward pass had
    no bias. ``dw = dY^T @ im2col(x)`` (the cross-correlation of the input with ``dout``),
    ``dx = col2im(dY @ W)`` (a full convolution of ``dout`` with the kernel), ``db = dY^T @ ones``
    (the sum of ``dout`` over N, H, W); see the module docstring. ``dout`` may have any memory
    layout and is cast to the forward pass's dtype. ``dx`` has channels-last memory (planar on the few-channel path).

    With ``need_dx=False`` the input gradient (a third of the work) is skipped and ``dx`` is None:
    for a network's first layer, whose input is the data.

    Numba, when available (see :mod:`cnnkit.ops._jit`), scatters ``dX`` with a compiled kernel in
    the same chunked pass that computes ``dw``; otherwise NumPy computes the same sums.
    """
    op = "conv2d_backward"
    if not isinstance(cache, _ConvCache):
        raise ConfigError(f"{op}: cache must come from conv2d_forward, got {type(cache).__name__}")
    spec = cache.spec
    n = spec.x_shape[0]
    (oh, ow), f, g = spec.out_hw, cache.filters, spec.groups
    dout = check_array(dout, op, "dout", ndim=4)
    if dout.shape != (n, f, oh, ow):
        raise ShapeError(
            f"{op}: dout must have the output's shape (N, F, OH, OW) = {(n, f, oh, ow)}, got {dout.shape}"
        )
    dtype = cache.dtype
    m, kh, kw = n * oh * ow, *spec.kernel
    cg = spec.x_shape[1] // g
    k = kh * kw * cg
    if cache.planar:  # dY as (F, N*OH*OW): no copy when dout is planar (what max pooling returns for it)
        dy_planar = np.ascontiguousarray(dout.transpose(1, 0, 2, 3), dtype=dtype).reshape(f, m)
        dwmat, dx = _planar_backward(dy_planar, cache, need_dx)
        dw = dwmat[:, :k].reshape(f, cg, kh, kw)
        if cache.flip_kernel:
            dw = dw[:, :, ::-1, ::-1]
        return dx, np.ascontiguousarray(dw), dwmat[:, k].copy() if cache.has_bias else None
    dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1), dtype=dtype).reshape(m, f)

    if cache.winograd and policy.numba_on():  # after a Winograd forward pass: its adjoint gives dw
        # (Numba switched off since, as tests do: the streamed path below reads the same cache)
        return _winograd_backward(dout, dy, cache, need_dx)

    # dw[g] = dY[:, g]^T @ X[:, g] -> (G, Fg, Kg [+ 1]); with the folded bias the last column is
    # dY^T @ ones = db
    kernel = None if cache.pointwise or not need_dx else col2im_rows_kernel()
    dx = None
    if cache.cols is None:  # streamed (one group): dw, and dx with the compiled kernel, in one pass
        dwmat, dx = _streamed_backward(dy, cache, kernel)
        dwmat = dwmat[None]
    else:
        dwmat = np.matmul(dy.reshape(m, g, f // g).transpose(1, 2, 0), cache.cols.transpose(1, 0, 2))
    if cache.bias_folded:
        db = dwmat[:, :, k].reshape(f)
    elif cache.has_bias:
        db = np.ones(m, dtype=dtype) @ dy
    else:
        db = None
    dw = dwmat[:, :, :k].reshape(f, kh, kw, cg).transpose(0, 3, 1, 2)
    if cache.flip_kernel:
        dw = dw[:, :, ::-1, ::-1]
    dw = np.ascontiguousarray(dw)

    # dX = col2im(dY @ W): each tap's (M, C) slab, scattered back to the pixels it was read from
    if dx is None and need_dx:
        dx = _input_grad(dy, cache) if kernel is None else _input_grad_compiled(dy, cache, kernel)
    return dx, dw, db


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    flip_kernel: bool = False,
) -> np.ndarray:
    """Forward-only :func:`conv2d_forward` (same arguments); returns ``out`` (N, F, OH, OW).

    Notes §3.3's example, computed as every framework does (cross-correlation):

    >>> image = np.array([[1, 0, 1, 2], [0, 2, 1, 0], [1, 1, 0, 1], [2, 0, 1, 1]], float)
    >>> kernel = np.array([[-1, 0, 1]] * 3, float)
    >>> conv2d(image[None, None], kernel[None, None])[0, 0]
    array([[ 0.,  0.],
           [-1., -1.]])
    """
    return conv2d_forward(x, w, b, stride, padding, dilation, groups, flip_kernel)[0]
