"""Pooling: max, average and min over sliding windows; global and adaptive average pooling (notes §4).

Every window op takes ``kernel_size``, ``stride`` (default: the kernel size), ``padding`` and ``dilation``,
each an int or an ``(h, w)`` pair, and gives ``(N, C, OH, OW)`` with PyTorch's floor rule

    OH = floor((H + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1

(notes §3.4 and §5.3: a 2x2 window with stride 2 halves the size; an odd last row is dropped). Padding
is at most half the kernel, as in PyTorch; max pooling pads with -inf and min pooling with +inf, so
padding never wins, and average pooling pads with zeros that count in the divisor (PyTorch's default
``count_include_pad=True``): every window divides by ``kh * kw``.

Backward (notes §7.2, "pass gradients to the max position"): max and min pooling send each output's
gradient to the input position that won its window; on a tie, to the first one in row-major window order,
as PyTorch does. Average pooling spreads each gradient evenly, ``dout / (kh * kw)``, over its window.

Speed: windows that tile the input exactly (stride = kernel, no padding or dilation, sizes divisible;
the common 2x2/stride-2 case) go through a reshape to ``(N, C, OH, kh, OW, kw)``: the backward writes
every input position once, with no zero fill or scatter-add. Other cases read strided views of the
(padded) input, one per kernel offset: a Python loop over the ``kh * kw`` offsets, never over pixels.

A NaN in a window propagates to the max/min output as in PyTorch; its gradient is not routed.

Compiled fast path: when Numba is available (:mod:`cnnkit.ops._jit`), 2x2 stride-2 max pooling of
channels-last float arrays with many channels (where it was measured to pay), and of *planar* arrays
(``(C, N, H, W)`` memory, what a convolution of grey or RGB images returns) runs as single-pass kernels
(:mod:`cnnkit.ops._pool_kernels`) that give the same values and route gradients to the same positions as
the NumPy code above, which stays the reference and the fallback. The kernel keeps the window index of
each maximum (int8; in the data's float dtype for planar input, see the kernels) instead of the input,
so the backward is one pass and the cache holds no full-size array. :func:`relu_max_pool2d_forward`
fuses a preceding ReLU:
``max_pool(relu(x)) == relu(max_pool(x))`` because ReLU is monotone, so the ReLU runs on the 4x smaller
pooled output and its mask on the pooled gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from . import policy
from ._args import Pair, check_array, pair
from ._parallel import run_split

IntOrPair = int | Sequence[int]

__all__ = [
    "PoolGeometry",
    "FastMaxPoolCache",
    "pool_geometry",
    "max_pool2d",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "relu_max_pool2d_forward",
    "relu_max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "min_pool2d",
    "min_pool2d_forward",
    "min_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_forward",
    "global_avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward",
]


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class PoolGeometry:
    """Kernel, stride, padding and dilation of a pooling window, with the input and output sizes."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    in_size: Pair
    out_size: Pair

    @property
    def window_size(self) -> int:
        """Number of taps in a window, ``kh * kw`` (the average-pooling divisor)."""
        return self.kernel[0] * self.kernel[1]


def pool_geometry(
    in_size: Sequence[int],
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    op: str = "pool2d",
    empty_windows_ok: bool = True,
) -> PoolGeometry:
    """Validate pooling arguments for a spatial input size ``(H, W)`` and compute the output size.

    Raises ConfigError for a bad argument (padding more than half the kernel included) and ShapeError
    when the input is too small for even one window. With ``empty_windows_ok=False`` (max and min
    pooling) a window that holds only padding, possible with dilation, is a ConfigError too: its
    max would be -inf. ``op`` names the caller in the messages.
    """
    kernel = pair(kernel_size, "kernel_size", op)
    stride_ = kernel if stride is None else pair(stride, "stride", op)
    pad = pair(padding, "padding", op, minimum=0)
    dil = pair(dilation, "dilation", op)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ConfigError(
            f"{op}: padding must be at most half the kernel size (kernel {kernel} allows at most "
            f"({kernel[0] // 2}, {kernel[1] // 2})), got padding {pad}"
        )
    h, w = (int(s) for s in in_size)
    out = tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip((h, w), kernel, stride_, pad, dil, strict=True)
    )
    if min(out) < 1:
        raise ShapeError(
            f"{op}: input of spatial size ({h}, {w}) is too small for kernel {kernel} with padding "
            f"{pad} and dilation {dil}: expected at least ({dil[0] * (kernel[0] - 1) + 1 - 2 * pad[0]}, "
            f"{dil[1] * (kernel[1] - 1) + 1 - 2 * pad[1]}), got ({h}, {w})"
        )
    if not empty_windows_ok:
        for axis, (size, k, s, p, d, o) in enumerate(
            zip((h, w), kernel, stride_, pad, dil, out, strict=True)
        ):
            taps = np.arange(o)[:, None] * s - p + np.arange(k) * d
            empty = ~((taps >= 0) & (taps < size)).any(axis=1)
            if empty.any():
                i = int(np.argmax(empty))
                raise ConfigError(
                    f"{op}: with padding {pad} and dilation {dil}, output {('row', 'column')[axis]} {i} "
                    f"reads only padding (input positions {taps[i].tolist()}, valid 0..{size - 1}) for "
                    f"input size ({h}, {w}); expected every window to hold an input value: reduce the "
                    "padding or the dilation"
                )
    return PoolGeometry(kernel, stride_, pad, dil, (h, w), (int(out[0]), int(out[1])))


def _channels_last(a: np.ndarray) -> bool:
    """True for an NCHW-shaped array whose memory is NHWC (what :func:`cnnkit.ops.conv2d` returns)."""
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def _alloc(
    shape: tuple[int, ...], dtype: np.dtype, channels_last: bool, fill: float | None = None
) -> np.ndarray:
    """An ``(N, C, H, W)`` array with NCHW or channels-last (NHWC) memory, maybe filled."""
    if channels_last:
        n, c, h, w = shape
        a = np.empty((n, h, w, c), dtype=dtype).transpose(0, 3, 1, 2)
    else:
        a = np.empty(shape, dtype=dtype)
    if fill is not None:
        a.fill(fill)
    return a


def _like_layout(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """``a`` in NCHW or channels-last memory (copied only when it differs): one layout for a whole pass."""
    if _channels_last(a) == channels_last or a.shape[1] == 1:
        return a
    if channels_last:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a)


def _pad(x: np.ndarray, padding: Pair, fill: float) -> np.ndarray:
    """``x`` with ``padding`` rows/columns of ``fill`` on each side (``x`` itself when no padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    xp = _alloc((n, c, h + 2 * ph, w + 2 * pw), x.dtype, _channels_last(x), fill)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    return xp


def _crop(dxp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    (ph, pw), (h, w) = g.padding, g.in_size
    if ph == 0 and pw == 0:
        return dxp
    return np.copy(dxp[:, :, ph : ph + h, pw : pw + w], order="K")


# The 2-D window reduction is done in two 1-D stages: along W (each padded row, one strided view per
# kernel column), then along H over the row results (one view per kernel row). Max, min and sum are
# separable, and so is "first in row-major order": the first kernel row holding the maximum, then the
# first column of that row holding it. Stage views keep long contiguous or evenly strided runs that
# NumPy iterates in one inner loop, where a 2-D window view would iterate in runs of OW elements.
def _cols(a: np.ndarray, g: PoolGeometry, j: int) -> np.ndarray:
    """``(N, C, rows, OW)`` view: the input column of kernel column ``j`` for every output column."""
    sw, dw, ow = g.stride[1], g.dilation[1], g.out_size[1]
    return a[:, :, :, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def _rows(a: np.ndarray, g: PoolGeometry, i: int) -> np.ndarray:
    """``(N, C, OH, cols)`` view: the input row of kernel row ``i`` for every output row."""
    sh, dh, oh = g.stride[0], g.dilation[0], g.out_size[0]
    return a[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, :]


def _reduce(views: list[np.ndarray], ufunc: np.ufunc) -> np.ndarray:
    """``ufunc`` folded over ``views`` into a fresh array with their memory layout."""
    if len(views) == 1:
        return np.copy(views[0], order="K")
    out = ufunc(views[0], views[1])
    for v in views[2:]:
        ufunc(out, v, out=out)
    return out


def _stage_grad(
    shape: tuple[int, ...], dtype: np.dtype, channels_last: bool, g: PoolGeometry, axis: int
) -> np.ndarray:
    """Gradient buffer for one stage; written by assignment when the windows along ``axis`` tile it.

    Windows along an axis are disjoint when stride == kernel and dilation == 1: every position is then
    written at most once, so only the uncovered tail (floor mode, padding) needs zeros.
    """
    k, s, d = g.kernel[axis - 2], g.stride[axis - 2], g.dilation[axis - 2]
    if not (s == k and d == 1):
        return _alloc(shape, dtype, channels_last, 0.0)
    buf = _alloc(shape, dtype, channels_last)
    covered = g.out_size[axis - 2] * k
    if covered < shape[axis]:
        tail = (slice(None),) * axis + (slice(covered, None),)
        buf[tail] = 0
    return buf


def _route(
    dout: np.ndarray, taps: list[np.ndarray], result: np.ndarray, targets: list[np.ndarray], assign: bool
) -> None:
    """Send ``dout`` to the first tap equal to ``result`` (row-major order), into ``targets``."""
    free: np.ndarray | None = None  # outputs whose gradient has not been routed yet
    last = len(taps) - 1
    for k, (tap, target) in enumerate(zip(taps, targets, strict=True)):
        if k == last:
            hit = free  # whatever is left belongs to the last tap (None: a one-tap window)
        else:
            hit = tap == result
            if free is None:
                free = ~hit
            else:
                hit &= free
                free ^= hit
        if assign:
            if hit is None:
                target[...] = dout
            else:
                np.multiply(dout, hit, out=target)
        else:
            target += dout if hit is None else dout * hit


# ----------------------------------------------------------------------------- compiled fast path
@dataclass(frozen=True)
class FastMaxPoolCache:
    """What the compiled max-pooling backward needs: the output, argmax tap indices and the geometry."""

    kind: str
    x_shape: tuple[int, ...]
    out: np.ndarray
    arg: np.ndarray
    g: PoolGeometry
    relu: bool = False
    planar: bool = False  # x had (C, N, H, W) memory: arg is (C, N, OH, OW) and dx is returned planar


def _planar(a: np.ndarray) -> bool:
    """True for an NCHW-shaped array whose memory is ``(C, N, H, W)`` (a few-channel convolution's output)."""
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(1, 0, 2, 3).flags.c_contiguous


def _pool_kernels() -> Any:
    from . import _pool_kernels

    return _pool_kernels


def _fast_kernel(x: np.ndarray, g: PoolGeometry) -> tuple[Any, bool] | None:
    """``(kernel, planar)``: the compiled 2x2 forward kernel when it applies and pays (see
    :mod:`._pool_kernels`), and whether it is the one for planar memory; else None."""
    if not (
        g.kernel == (2, 2)
        and g.stride == (2, 2)
        and g.padding == (0, 0)
        and g.dilation == (1, 1)
        and x.dtype in (np.float32, np.float64)
        and policy.compiled(x.size)
    ):
        return None
    if _planar(x):
        return _pool_kernels().max_pool_2x2_planar_forward_kernel(), True
    if x.shape[1] >= policy.POOL_MIN_CHANNELS and _channels_last(x):
        return _pool_kernels().max_pool_2x2_forward_kernel(), False
    return None


def _max_fast_forward(
    x: np.ndarray, g: PoolGeometry, relu: bool, fast: tuple[Any, bool]
) -> tuple[np.ndarray, Any]:
    """The compiled forward; the output is channels-last (what the next convolution reads)."""
    kernel, planar = fast
    n, c = x.shape[:2]
    out = _alloc((n, c, *g.out_size), x.dtype, True)
    if planar:
        arg = np.empty((c, n, *g.out_size), dtype=x.dtype)  # float indices: see the kernel
        run_split(kernel, n, x.transpose(1, 0, 2, 3), out.transpose(1, 0, 2, 3), arg, relu)
    else:
        arg = np.empty((n, *g.out_size, c), dtype=np.int8)
        run_split(kernel, n, x.transpose(0, 2, 3, 1), out.transpose(0, 2, 3, 1), arg, relu)
    return out, FastMaxPoolCache("max", x.shape, out, arg, g, relu, planar)


def _max_fast_backward(dout: np.ndarray, cache: FastMaxPoolCache) -> np.ndarray:
    """dx in the input's layout: channels-last, or planar for a planar input."""
    oh, ow = cache.g.out_size
    n, c, h, w = cache.x_shape
    if cache.planar:
        dx = np.empty((c, n, h, w), dtype=dout.dtype).transpose(1, 0, 2, 3)
        axes = (1, 0, 2, 3)  # (C, N, ...) views: what the planar kernel and arg use
    else:
        dx = _alloc(cache.x_shape, dout.dtype, True)
        axes = (0, 2, 3, 1)  # (N, H, W, C) views
    dx[:, :, 2 * oh :, :] = 0  # the row and column the floor rule leaves out (odd sizes)
    dx[:, :, :, 2 * ow :] = 0
    if not policy.numba_on():
        kernel = None
    elif cache.planar:
        kernel = _pool_kernels().max_pool_2x2_planar_backward_kernel()
    else:
        kernel = _pool_kernels().max_pool_2x2_backward_kernel()
    if kernel is not None:
        run_split(
            kernel,
            n,
            dout.transpose(*axes),
            cache.out.transpose(*axes),
            cache.arg,
            dx.transpose(*axes),
            cache.relu,
        )
        return dx
    # Numba switched off between forward and backward (tests do this): the same routing in NumPy
    if cache.relu:
        dout = dout * (cache.out > 0)
    d = dout.transpose(*axes)
    dxv = dx.transpose(*axes)
    for t in range(4):
        i, j = divmod(t, 2)
        if cache.planar:
            dxv[:, :, i : 2 * oh : 2, j : 2 * ow : 2] = d * (cache.arg == t)
        else:
            dxv[:, i : 2 * oh : 2, j : 2 * ow : 2] = d * (cache.arg == t)
    return dx


def relu_max_pool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> tuple[np.ndarray, Any]:
    """ReLU followed by max pooling, fused: ``max_pool2d(relu(x)) == relu(max_pool2d(x))``.

    ReLU is monotone, so it commutes with the window maximum (notes §6.1, §4.2.1): the ReLU runs on the
    pooled output only. Backward (:func:`relu_max_pool2d_backward`) masks the pooled gradient with
    ``out > 0`` and routes it to the window's first maximum, which is the position the unfused pair
    routes to: where the maximum is positive it is the same tap; where it is not, both give 0.
    Returns ``(out, cache)``.
    """
    op = "max_pool2d"
    x = check_array(x, op, ndim=4)
    g = pool_geometry(x.shape[2:], kernel_size, stride, padding, dilation, op=op, empty_windows_ok=False)
    fast = _fast_kernel(x, g)
    if fast is not None:
        return _max_fast_forward(x, g, True, fast)
    pooled, inner = max_pool2d_forward(x, kernel_size, stride, padding, dilation)
    np.maximum(pooled, 0, out=pooled)
    return pooled, ("relu_max", inner, pooled)


def relu_max_pool2d_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """dL/dx of :func:`relu_max_pool2d_forward`: ``max_pool2d_backward(dout * [out > 0])``."""
    if isinstance(cache, FastMaxPoolCache):
        return max_pool2d_backward(dout, cache)
    _, inner, pooled = cache
    dout = _check_dout(dout, pooled, "max_pool2d")
    return max_pool2d_backward(dout * (pooled > 0), inner)


# ----------------------------------------------------------------------------- max and min
_EXTREME = {"max": (np.maximum, -np.inf), "min": (np.minimum, np.inf)}


def _extreme_forward(
    x: Any,
    kernel_size: IntOrPair,
    stride: IntOrPair | None,
    padding: IntOrPair,
    dilation: IntOrPair,
    kind: str,
) -> tuple[np.ndarray, tuple]:
    op = f"{kind}_pool2d"
    x = check_array(x, op, ndim=4)
    g = pool_geometry(x.shape[2:], kernel_size, stride, padding, dilation, op=op, empty_windows_ok=False)
    if kind == "max":
        fast = _fast_kernel(x, g)
        if fast is not None:
            return _max_fast_forward(x, g, False, fast)
    ufunc, fill = _EXTREME[kind]
    xp = _pad(x, g.padding, fill)
    row_best = _reduce([_cols(xp, g, j) for j in range(g.kernel[1])], ufunc)  # (N, C, Hp, OW)
    out = _reduce([_rows(row_best, g, i) for i in range(g.kernel[0])], ufunc)  # (N, C, OH, OW)
    return out, (xp, row_best, out, g, kind)


def _extreme_backward(dout: Any, cache: Any, kind: str) -> np.ndarray:
    op = f"{kind}_pool2d"
    cache_kind = cache.kind if isinstance(cache, FastMaxPoolCache) else cache[-1]
    if cache_kind != kind:
        raise ConfigError(
            f"{op}_backward: cache comes from {cache_kind}_pool2d_forward, expected {op}_forward"
        )
    if isinstance(cache, FastMaxPoolCache):
        return _max_fast_backward(_check_dout(dout, cache.out, op), cache)
    xp, row_best, out, g, cache_kind = cache
    dout = _like_layout(_check_dout(dout, out, op), _channels_last(xp))
    kh, kw = g.kernel
    d_row = _stage_grad(row_best.shape, dout.dtype, _channels_last(row_best), g, axis=2)
    _route(
        dout,
        [_rows(row_best, g, i) for i in range(kh)],
        out,
        [_rows(d_row, g, i) for i in range(kh)],
        assign=g.stride[0] == kh and g.dilation[0] == 1,
    )
    dxp = _stage_grad(xp.shape, dout.dtype, _channels_last(xp), g, axis=3)
    _route(
        d_row,
        [_cols(xp, g, j) for j in range(kw)],
        row_best,
        [_cols(dxp, g, j) for j in range(kw)],
        assign=g.stride[1] == kw and g.dilation[1] == 1,
    )
    return _crop(dxp, g)


def _check_dout(dout: Any, out: np.ndarray, op: str) -> np.ndarray:
    dout = check_array(dout, f"{op}_backward", name="dout")
    if dout.shape != out.shape:
        raise ShapeError(f"{op}_backward: dout must have the output's shape {out.shape}, got {dout.shape}")
    return dout


def max_pool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> tuple[np.ndarray, tuple]:
    """Max pooling (notes §4.2.1): ``out[n, c, y, x] = max over the window of the -inf-padded input``.

    Returns ``(out, cache)``; ``out`` has shape ``(N, C, OH, OW)`` and ``x``'s dtype.
    """
    return _extreme_forward(x, kernel_size, stride, padding, dilation, "max")


def max_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of max pooling: each output's gradient goes to the (first) position holding the max (§7.2)."""
    return _extreme_backward(dout, cache, "max")


def max_pool2d(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Max pooling, forward only. See :func:`max_pool2d_forward`.

    >>> import numpy as np
    >>> x = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], np.float32)[None, None]
    >>> max_pool2d(x, 2)[0, 0]
    array([[6., 9.],
           [7., 8.]], dtype=float32)
    """
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation)[0]


def min_pool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> tuple[np.ndarray, tuple]:
    """Min pooling (notes §4.2.3): ``out = min over the window of the +inf-padded input``.

    Equal to ``-max_pool2d(-x)``, ties included. Returns ``(out, cache)``.
    """
    return _extreme_forward(x, kernel_size, stride, padding, dilation, "min")


def min_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of min pooling: each output's gradient goes to the (first) position holding the min."""
    return _extreme_backward(dout, cache, "min")


def min_pool2d(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Min pooling, forward only. See :func:`min_pool2d_forward`."""
    return min_pool2d_forward(x, kernel_size, stride, padding, dilation)[0]


# ----------------------------------------------------------------------------- average
def avg_pool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> tuple[np.ndarray, tuple]:
    """Average pooling (notes §4.2.2): ``out = (sum over the zero-padded window) / (kh * kw)``.

    Padding counts in the divisor (PyTorch's ``count_include_pad=True``). Dilation works too (PyTorch's
    ``avg_pool2d`` has none). Returns ``(out, cache)``.
    """
    op = "avg_pool2d"
    x = check_array(x, op, ndim=4)
    g = pool_geometry(x.shape[2:], kernel_size, stride, padding, dilation, op=op)
    xp = _pad(x, g.padding, 0.0)
    row_sum = _reduce([_cols(xp, g, j) for j in range(g.kernel[1])], np.add)
    out = _reduce([_rows(row_sum, g, i) for i in range(g.kernel[0])], np.add)
    out *= 1.0 / g.window_size
    return out, (_channels_last(xp), xp.shape, row_sum.shape, out.shape, g)


def avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of average pooling: each window position receives ``dout / (kh * kw)``."""
    channels_last, xp_shape, row_shape, out_shape, g = cache
    dout = check_array(dout, "avg_pool2d_backward", name="dout")
    if dout.shape != out_shape:
        raise ShapeError(
            f"avg_pool2d_backward: dout must have the output's shape {out_shape}, got {dout.shape}"
        )
    share = _like_layout(dout, channels_last) * (1.0 / g.window_size)
    kh, kw = g.kernel
    d_row = _stage_grad(row_shape, dout.dtype, channels_last, g, axis=2)
    row_assign = g.stride[0] == kh and g.dilation[0] == 1
    for i in range(kh):
        target = _rows(d_row, g, i)
        if row_assign:
            target[...] = share
        else:
            target += share
    dxp = _stage_grad(xp_shape, dout.dtype, channels_last, g, axis=3)
    col_assign = g.stride[1] == kw and g.dilation[1] == 1
    for j in range(kw):
        target = _cols(dxp, g, j)
        if col_assign:
            target[...] = d_row
        else:
            target += d_row
    return _crop(dxp, g)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Average pooling, forward only. See :func:`avg_pool2d_forward`."""
    return avg_pool2d_forward(x, kernel_size, stride, padding, dilation)[0]


# ----------------------------------------------------------------------------- global and adaptive
def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Global average pooling: ``out[n, c, 0, 0] = mean over (h, w) of x[n, c, h, w]``.

    The output is ``(N, C, 1, 1)``, not ``(N, C)``: it stays NCHW like PyTorch's ``AdaptiveAvgPool2d(1)``;
    follow it with :func:`cnnkit.ops.flatten` for a dense layer. Returns ``(out, cache)``.
    """
    x = check_array(x, "global_avg_pool2d", ndim=4)
    if x.shape[2] * x.shape[3] == 0:
        raise ShapeError(f"global_avg_pool2d: spatial size must be at least (1, 1), got {x.shape[2:]}")
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def global_avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of global average pooling: ``dout / (H * W)`` broadcast over each feature map."""
    x_shape = cache
    dout = check_array(dout, "global_avg_pool2d_backward", name="dout")
    if dout.shape != (*x_shape[:2], 1, 1):
        raise ShapeError(
            f"global_avg_pool2d_backward: dout must have the output's shape {(*x_shape[:2], 1, 1)}, "
            f"got {dout.shape}"
        )
    return np.broadcast_to(dout * (1.0 / (x_shape[2] * x_shape[3])), x_shape).copy()


def global_avg_pool2d(x: np.ndarray) -> np.ndarray:
    """Global average pooling to ``(N, C, 1, 1)``, forward only. See :func:`global_avg_pool2d_forward`."""
    return global_avg_pool2d_forward(x)[0]


def adaptive_bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins: bin ``i`` spans ``[floor(i*H/out), ceil((i+1)*H/out))``."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


def _adaptive_matrix(in_size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """``(out, in)`` matrix whose row ``i`` averages bin ``i``: ``out = M @ x`` along one axis."""
    m = np.zeros((out_size, in_size), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_bins(in_size, out_size)):
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: IntOrPair) -> tuple[np.ndarray, tuple]:
    """Adaptive average pooling to ``output_size`` (PyTorch's ``AdaptiveAvgPool2d``).

    Output bin ``(i, j)`` averages rows ``floor(i*H/OH) .. ceil((i+1)*H/OH) - 1`` and the matching
    columns; bins may overlap, and an output larger than the input repeats pixels. When the bins tile
    the input this is :func:`avg_pool2d` with kernel = stride = ``H / OH``; otherwise it is two small
    matrix products, ``out = A_h @ x @ A_w^T``. Returns ``(out, cache)``.
    """
    op = "adaptive_avg_pool2d"
    x = check_array(x, op, ndim=4)
    oh, ow = pair(output_size, "output_size", op)
    h, w = x.shape[2:]
    if h == 0 or w == 0:
        raise ShapeError(f"{op}: spatial size must be at least (1, 1), got {x.shape[2:]}")
    if (oh, ow) == (h, w):
        return x.copy(), ("identity", x.shape)
    if h % oh == 0 and w % ow == 0:
        out, cache = avg_pool2d_forward(x, (h // oh, w // ow))
        return out, ("avg", cache)
    a_h, a_w = _adaptive_matrix(h, oh, x.dtype), _adaptive_matrix(w, ow, x.dtype)
    return np.matmul(np.matmul(a_h, x), a_w.T), ("matrix", (a_h, a_w, x.shape))


def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dL/dx of adaptive average pooling: ``A_h^T @ dout @ A_w`` (each bin's gradient spread evenly)."""
    kind, inner = cache
    dout = check_array(dout, "adaptive_avg_pool2d_backward", name="dout")
    if kind == "avg":
        return avg_pool2d_backward(dout, inner)
    if kind == "identity":
        if dout.shape != inner:
            raise ShapeError(
                f"adaptive_avg_pool2d_backward: dout must have the output's shape {inner}, got {dout.shape}"
            )
        return dout.copy()
    a_h, a_w, x_shape = inner
    expected = (*x_shape[:2], a_h.shape[0], a_w.shape[0])
    if dout.shape != expected:
        raise ShapeError(
            f"adaptive_avg_pool2d_backward: dout must have the output's shape {expected}, got {dout.shape}"
        )
    return np.matmul(np.matmul(a_h.T, dout), a_w)


def adaptive_avg_pool2d(x: np.ndarray, output_size: IntOrPair) -> np.ndarray:
    """Adaptive average pooling, forward only. See :func:`adaptive_avg_pool2d_forward`."""
    return adaptive_avg_pool2d_forward(x, output_size)[0]
