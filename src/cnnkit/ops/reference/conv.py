"""Slow, obvious loop versions of the convolution kernels: the oracle for :mod:`cnnkit.ops.conv`.

Written to be read next to the notes (§3.2-§3.4, §11), not to be fast: explicit padding, then a loop
over every output position, each one a sum over its kernel window. They accumulate in float64 and
return the input's dtype. They validate nothing: give them what :func:`cnnkit.ops.conv2d` accepts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv2d_reference", "conv2d_backward_reference", "im2col_reference"]


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    return int(value[0]), int(value[1])


def _padding(padding, kernel, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right); 'same' puts the odd pixel at the bottom/right (as PyTorch)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        total_h = dilation[0] * (kernel[0] - 1)
        total_w = dilation[1] * (kernel[1] - 1)
        return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def _prepare(x, kernel, stride, padding, dilation):
    """Zero-pad x and work out the output size (notes §3.4, with dilation, rounded down)."""
    stride, dilation = _pair(stride), _pair(dilation)
    top, bottom, left, right = _padding(padding, kernel, dilation)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h = (xp.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (xp.shape[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return xp, stride, dilation, (top, bottom, left, right), out_h, out_w


def _window(i, j, kernel, stride, dilation):
    """Index slices of the input window under output position (i, j)."""
    rows = slice(i * stride[0], i * stride[0] + dilation[0] * (kernel[0] - 1) + 1, dilation[0])
    cols = slice(j * stride[1], j * stride[1] + dilation[1] * (kernel[1] - 1) + 1, dilation[1])
    return rows, cols


def conv2d_reference(
    x, w, b=None, stride=1, padding=0, dilation=1, groups=1, flip_kernel=False
) -> np.ndarray:
    """out[n, f, i, j] = b[f] + sum over the window of (input * kernel), one position at a time.

    Cross-correlation (notes §3.3); with ``flip_kernel`` the kernel is turned by 180 degrees first,
    which gives the true convolution of §3.2.
    """
    filters, channels_per_group, kh, kw = w.shape
    kernel = w.astype(np.float64)
    if flip_kernel:
        kernel = kernel[:, :, ::-1, ::-1]
    xp, stride, dilation, _, out_h, out_w = _prepare(x, (kh, kw), stride, padding, dilation)
    filters_per_group = filters // groups
    out = np.zeros((x.shape[0], filters, out_h, out_w))
    for n in range(x.shape[0]):
        for f in range(filters):
            group = f // filters_per_group
            first_channel = group * channels_per_group
            channels = slice(first_channel, first_channel + channels_per_group)
            for i in range(out_h):
                for j in range(out_w):
                    rows, cols = _window(i, j, (kh, kw), stride, dilation)
                    patch = xp[n, channels, rows, cols]
                    total = np.sum(patch * kernel[f])
                    if b is not None:
                        total += b[f]
                    out[n, f, i, j] = total
    return out.astype(x.dtype)


def conv2d_backward_reference(
    dout, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, flip_kernel=False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dx, dw, db) by the chain rule, one output position at a time.

    Each output ``out[n, f, i, j]`` was ``sum(patch * kernel[f]) + b[f]``, so its gradient ``g``
    sends ``g * kernel[f]`` to the input patch it read, ``g * patch`` to the kernel and ``g`` to the
    bias. ``db`` is None when ``b`` is None.
    """
    filters, channels_per_group, kh, kw = w.shape
    kernel = w.astype(np.float64)
    if flip_kernel:
        kernel = kernel[:, :, ::-1, ::-1]
    xp, stride, dilation, pad, out_h, out_w = _prepare(x, (kh, kw), stride, padding, dilation)
    filters_per_group = filters // groups
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    db = np.zeros(filters)
    for n in range(x.shape[0]):
        for f in range(filters):
            group = f // filters_per_group
            first_channel = group * channels_per_group
            channels = slice(first_channel, first_channel + channels_per_group)
            for i in range(out_h):
                for j in range(out_w):
                    g = float(dout[n, f, i, j])
                    rows, cols = _window(i, j, (kh, kw), stride, dilation)
                    dxp[n, channels, rows, cols] += g * kernel[f]
                    dkernel[f] += g * xp[n, channels, rows, cols]
                    db[f] += g
    top, bottom, left, right = pad
    dx = dxp[:, :, top : dxp.shape[2] - bottom, left : dxp.shape[3] - right]
    dw = dkernel[:, :, ::-1, ::-1] if flip_kernel else dkernel
    return (
        dx.astype(x.dtype),
        dw.astype(x.dtype),
        None if b is None else db.astype(x.dtype),
    )


def im2col_reference(x, kernel_size, stride=1, padding=0, dilation=1) -> np.ndarray:
    """One row per output position (n, i, j in row-major order): the window, flattened (c, kh, kw)."""
    kernel = _pair(kernel_size)
    xp, stride, dilation, _, out_h, out_w = _prepare(x, kernel, stride, padding, dilation)
    rows_out = []
    for n in range(x.shape[0]):
        for i in range(out_h):
            for j in range(out_w):
                rows, cols = _window(i, j, kernel, stride, dilation)
                rows_out.append(xp[n, :, rows, cols].ravel())
    return np.array(rows_out).astype(x.dtype)
