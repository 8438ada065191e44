"""The convolution planner: which path a convolution takes, decided once from the shapes (notes §3, §11).

:func:`conv_plan` looks at the input and weight shapes, the geometry and the dtype and returns a
:class:`ConvPlan`, a small frozen record that names the path. :func:`cnnkit.ops.conv2d_forward` runs the
plan's path module (:mod:`cnnkit.ops.conv_paths`), whose typed cache (a :class:`ConvCache` subclass)
names the path again, so :func:`cnnkit.ops.conv2d_backward` runs the same path's backward without
asking anything twice. The size thresholds and whether compiled kernels may run come from
:mod:`cnnkit.ops.policy`.

The paths, in the order they are tried:

==============  ==================================================================================
``pointwise``   1x1, stride 1, no padding, one group (notes §8.1): one GEMM over the channels
``planar``      one group and at most ``PLANAR_MAX_CHANNELS`` (3) input channels, a first layer on
                grey or RGB images: "taps first", planar ``(C, N, H, W)`` memory
``winograd``    3x3, stride 1, no dilation, one group, enough channels and tiles, a big enough input
                and Numba: Winograd's F(4x4, 3x3) (:mod:`cnnkit.ops.winograd`)
``im2col``      every other one-group convolution: im2col and GEMM streamed a chunk of images at a time
``grouped``     ``groups > 1`` (depthwise included): one batched GEMM per group over the unfolded input
==============  ==================================================================================

>>> conv_plan((64, 3, 32, 32), (32, 3, 3, 3), padding=1).path
'planar'
>>> conv_plan((64, 32, 16, 16), (64, 32, 3, 3), padding=1, groups=1).path in ("winograd", "im2col")
True
>>> conv_plan((1, 32, 16, 16), (64, 32, 3, 3), padding=1).path  # one image: NumPy only, no Numba
'im2col'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError
from . import policy, winograd
from ._args import is_int
from .conv_paths.common import ConvGeometry, IntOrPair, PaddingArg, geometry

__all__ = ["PATHS", "ConvPlan", "ConvCache", "conv_plan"]

#: Every path, in the order the planner tries them.
PATHS = ("pointwise", "planar", "winograd", "im2col", "grouped")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ConvPlan:
    """How one convolution runs: its ``path`` (one of :data:`PATHS`), its normalised ``geometry``, the
    number of ``filters``, the ``dtype``, and whether its ``compiled`` kernels run (the planar path's
    unfold and direct weight gradient; always True on the Winograd path, False elsewhere)."""

    path: str
    geometry: ConvGeometry
    filters: int
    dtype: np.dtype
    compiled: bool = False


@dataclass(frozen=True, eq=False)
class ConvCache:
    """What a path's backward needs; each path module subclasses it and sets :attr:`path`."""

    path: ClassVar[str] = ""
    plan: ConvPlan
    has_bias: bool
    flip_kernel: bool

    @property
    def spec(self) -> ConvGeometry:
        return self.plan.geometry

    @property
    def filters(self) -> int:
        return self.plan.filters

    @property
    def dtype(self) -> np.dtype:
        return self.plan.dtype


def _shape4(shape: Any, op: str, name: str, layout: str) -> tuple[int, int, int, int]:
    if not isinstance(shape, Sequence) or len(shape) != 4 or not all(is_int(s) for s in shape):
        raise ShapeError(f"{op}: {name} must have 4 dimensions {layout}, got shape {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def conv_plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    dtype: Any = np.float32,
) -> ConvPlan:
    """The plan of a convolution of an ``x_shape`` (N, C, H, W) input with ``w_shape`` (F, C // groups,
    KH, KW) filters; arguments as :func:`cnnkit.ops.conv2d_forward`'s. Raises the errors that function
    raises for a bad shape or argument (ShapeError, ConfigError, DTypeError)."""
    op = "conv2d"
    x_shape = _shape4(x_shape, op, "x", "(N, C, H, W)")
    w_shape = _shape4(w_shape, op, "w", "(F, C // groups, KH, KW)")
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise DTypeError(f"{op}: x must be float32 or float64, got {dtype}")
    if min(x_shape[1:]) < 1 or min(w_shape) < 1:
        raise ShapeError(
            f"{op}: x (N, C, H, W) and w (F, C // groups, KH, KW) need C, H, W, F, KH, KW >= 1, "
            f"got x {x_shape} and w {w_shape}"
        )
    if not is_int(groups) or groups < 1:
        raise ConfigError(f"{op}: groups must be an int >= 1, got {groups!r}")
    g = int(groups)
    n, c, _, _ = x_shape
    f, cg, kh, kw = w_shape
    if c % g:
        raise ConfigError(f"{op}: groups={g} must divide the input channels C={c} (x shape {x_shape})")
    if f % g:
        raise ConfigError(f"{op}: groups={g} must divide the filters F={f} (w shape {w_shape})")
    if cg * g != c:
        raise ShapeError(
            f"{op}: channel mismatch: x has C={c} channels (shape {x_shape}) but w expects "
            f"w.shape[1] * groups = {cg} * {g} = {cg * g} (w shape {w_shape})"
        )
    where = f"x of shape {x_shape} and w of shape {w_shape}"
    spec = geometry(op, x_shape, (kh, kw), stride, padding, dilation, g, where)
    path, compiled = _choose(spec, f)
    return ConvPlan(path, spec, f, dtype, compiled)


def _choose(spec: ConvGeometry, filters: int) -> tuple[str, bool]:
    """``(path, compiled)`` for a geometry: the table in the module docstring."""
    n, c = spec.x_shape[:2]
    g = spec.groups
    if spec.kernel == (1, 1) and spec.stride == (1, 1) and not any(spec.pad) and g == 1:
        return "pointwise", False
    if g == 1 and c <= policy.PLANAR_MAX_CHANNELS:
        hp, wp = spec.padded_hw
        return "planar", policy.compiled(n * c * hp * wp)
    if g == 1 and winograd.applies(
        spec.x_shape, filters, spec.kernel, spec.stride, spec.dilation, g, spec.out_hw
    ):
        return "winograd", True
    return ("im2col", False) if g == 1 else ("grouped", False)
