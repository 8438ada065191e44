"""2-D convolution: output sizes, im2col/col2im, and the forward and backward kernels (notes §3, §11).

Layout and dtype
----------------
Arrays are NCHW: ``x`` is ``(N, C, H, W)``, the weight ``w`` is ``(F, C // groups, KH, KW)`` and the bias
``b`` is ``(F,)``. float32 stays float32 and float64 stays float64. Inside, the kernels work
channels-last (NHWC), which lets the im2col copy move runs of ``KW * C`` contiguous numbers and turns the
convolution into one matrix product with the output already in NHWC order. The arrays returned keep
the NCHW *shape* (``out.shape == (N, F, OH, OW)``); their *memory* is channels-last (a transposed view
of an NHWC buffer, as PyTorch's ``channels_last``). The exception is a convolution of at most
``policy.PLANAR_MAX_CHANNELS`` (3) input channels, a first layer on grey or RGB images: it runs "taps first"
and its result (and its ``dx``) has *planar* ``(C, N, H, W)`` memory (see :mod:`.conv_paths.planar`).
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
whole images (about ``policy.CHUNK_BYTES``) into a small buffer that stays in cache and multiplies it at
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

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError
from ._args import check_array, is_int, pair
from .conv_paths import grouped, planar, pointwise
from .conv_paths import im2col as im2col_path
from .conv_paths import winograd as winograd_path
from .conv_paths.common import (
    ConvGeometry,
    IntOrPair,
    PaddingArg,
    col2im_taps,
    geometry,
    out_len,
    pad_channels_last,
    resolve_padding,
    window_view,
)
from .conv_plan import ConvCache, ConvPlan, conv_plan

__all__ = [
    "conv_output_size",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_forward",
    "conv2d_backward",
    "plan_conv2d",
]

#: The module that runs each path of :func:`cnnkit.ops.conv_plan.conv_plan`.
PATH_MODULES: dict[str, ModuleType] = {
    "pointwise": pointwise,
    "planar": planar,
    "winograd": winograd_path,
    "im2col": im2col_path,
    "grouped": grouped,
}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# kept for cnnkit.explain.network, which resolves padding the layer's way
_resolve_padding = resolve_padding


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
    out = out_len(int(size), int(kernel), int(padding), int(padding), int(stride), int(dilation))
    if out < 1:
        raise ConfigError(
            f"{op}: kernel {kernel} (dilation {dilation}, covering "
            f"{dilation * (kernel - 1) + 1} pixels) does not fit in size {size} + 2*padding "
            f"{padding} = {size + 2 * padding}; output size would be {out}"
        )
    return out


def _check_arrays(op: str, x: object, w: object, b: object) -> None:
    """Validate the arrays of :func:`conv2d_forward` (their shapes are the planner's to check)."""
    x = check_array(x, op, "x", ndim=4)
    w = check_array(w, op, "w")
    if w.ndim != 4:
        raise ShapeError(
            f"{op}: w must have 4 dimensions (F, C // groups, KH, KW), got {w.ndim} with shape {w.shape}"
        )
    if x.dtype not in _FLOATS:
        raise DTypeError(f"{op}: x must be float32 or float64, got {x.dtype}")
    if w.dtype != x.dtype:
        raise DTypeError(
            f"{op}: x and w must have the same dtype, got x {x.dtype} and w {w.dtype}; "
            f"cast one, e.g. w.astype(np.{x.dtype})"
        )
    if b is not None:
        f = w.shape[0]
        if not isinstance(b, np.ndarray):
            raise DTypeError(f"{op}: b must be a numpy.ndarray or None, got {type(b).__name__}")
        if b.shape != (f,):
            raise ShapeError(f"{op}: b must have shape (F,) = ({f},), got {b.shape}")
        if b.dtype != x.dtype:
            raise DTypeError(f"{op}: b must have the dtype of x ({x.dtype}), got {b.dtype}")


def plan_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> ConvPlan:
    """Validate the arguments of :func:`conv2d_forward` (the same errors) and return their plan
    (:func:`cnnkit.ops.conv_plan.conv_plan`)."""
    _check_arrays("conv2d", x, w, b)
    return conv_plan(x.shape, w.shape, stride, padding, dilation, groups, x.dtype)


# ----------------------------------------------------------------------------- public im2col/col2im
def _im2col_args(
    op: str, kernel_size: IntOrPair, x_shape: tuple[int, ...], stride, padding, dilation
) -> ConvGeometry:
    kernel = pair(kernel_size, "kernel_size", op)
    return geometry(op, x_shape, kernel, stride, padding, dilation, 1, f"input of shape {x_shape}")


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
    xp = x if not any(spec.pad) else pad_channels_last(x, spec.pad)
    n, c = x.shape[:2]
    oh, ow = spec.out_hw
    kh, kw = spec.kernel
    return np.ascontiguousarray(window_view(xp, spec, "chw")).reshape(n * oh * ow, c * kh * kw)


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
    return col2im_taps(taps, spec)


# ----------------------------------------------------------------------------- forward / backward
def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    flip_kernel: bool = False,
) -> tuple[np.ndarray, ConvCache]:
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

    The path is planned once from the shapes (:func:`cnnkit.ops.conv_plan.conv_plan`: pointwise,
    planar, Winograd, streamed im2col or grouped) and run by its module in :mod:`cnnkit.ops.conv_paths`;
    the cache is that path's typed cache (``cache.path`` names it).
    """
    plan = plan_conv2d(x, w, b, stride, padding, dilation, groups)
    if flip_kernel:
        w = w[:, :, ::-1, ::-1]
    return PATH_MODULES[plan.path].forward(plan, x, w, b, bool(flip_kernel))


def conv2d_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
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
    if not isinstance(cache, ConvCache) or cache.path not in PATH_MODULES:
        raise ConfigError(f"{op}: cache must come from conv2d_forward, got {type(cache).__name__}")
    spec = cache.spec
    n, (oh, ow), f = spec.x_shape[0], spec.out_hw, cache.filters
    dout = check_array(dout, op, "dout", ndim=4)
    if dout.shape != (n, f, oh, ow):
        raise ShapeError(
            f"{op}: dout must have the output's shape (N, F, OH, OW) = {(n, f, oh, ow)}, got {dout.shape}"
        )
    dx, dw, db = PATH_MODULES[cache.path].backward(dout, cache, need_dx)
    if cache.flip_kernel:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])
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
