"""Residual blocks (notes section 10.4): ResNet's BasicBlock and Bottleneck, as torchvision has them.

A residual block learns a correction ``F(x)`` to its input instead of a whole new mapping::

    y = relu(F(x) + shortcut(x))

The shortcut is the identity when ``F(x)`` has ``x``'s shape, else a *projection*: a 1x1 convolution with
the block's stride followed by batch norm (torchvision's ``downsample``), which gives ``x`` the main
branch's channel count and spatial size.

Backward follows from the sum: ``dL/dx = dL/dx through F + dL/dx through the shortcut``. The gradient
reaching the block's input through the identity is ``dL/dy`` (masked by the final ReLU) unchanged, however
deep the network; that is why ResNets up to 152 layers still train ("solves vanishing gradient", notes
10.4). Each block runs its children's backward in reverse order (the chain rule of notes 7.2) and adds the
shortcut's gradient; the final ReLU's mask is applied once, before the two branches split.

Names follow torchvision so state dicts match key for key: ``conv1``, ``bn1``, ``conv2``, ``bn2``,
(``conv3``, ``bn3``), ``downsample.0`` (the 1x1 conv) and ``downsample.1`` (its batch norm).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ShapeError, TrainingError
from ..layers import BatchNorm2D, Conv2D
from ..layers.base import Layer, Shape
from ..ops._args import check_int
from .sequential import Sequential

__all__ = ["BasicBlock", "Bottleneck", "ResidualBlock"]


def _relu_inplace(a: np.ndarray) -> np.ndarray:
    """``max(a, 0)`` written into ``a`` (for arrays the block owns); returns ``a``."""
    np.maximum(a, a.dtype.type(0), out=a)
    return a


class ResidualBlock(Layer):
    """Shared machinery of the residual blocks: the main branch, the shortcut and their sum.

    Subclasses set ``expansion`` and implement :meth:`_main_layers`, the main branch's layers in order as
    ``(name, layer, relu_after)`` triples.
    """

    #: Output channels = ``planes * expansion``.
    expansion: ClassVar[int] = 1

    def __init__(
        self,
        planes: int,
        stride: int = 1,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        self.planes = check_int(planes, "planes", self.name)
        self.stride = check_int(stride, "stride", self.name)
        self._main: list[tuple[str, Layer, bool]] = self._main_layers()
        self.downsample: Sequential | None = None

    def _main_layers(self) -> list[tuple[str, Layer, bool]]:
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        """Channels of the block's output, ``planes * expansion``."""
        return self.planes * self.expansion

    def children(self) -> dict[str, Layer]:
        out = {key: layer for key, layer, _ in self._main}
        if self.downsample is not None:
            out["downsample"] = self.downsample
        return out

    def __getitem__(self, key: str) -> Layer:
        """A child by name: ``block["conv1"]``, ``block["downsample"]`` (after build)."""
        children = self.children()
        if key not in children:
            raise KeyError(f"{self.name}: no child {key!r}; children: {', '.join(children)}")
        return children[key]

    # ----------------------------------------------------------------- building
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(
                f"{self.name}: expected a per-sample input of shape (C, H, W), got {input_shape}"
            )
        _, h, w = input_shape
        # every 3x3 convolution has padding 1, so only the stride changes the size: floor((H - 1) / S) + 1
        return (self.out_channels, (h - 1) // self.stride + 1, (w - 1) // self.stride + 1)

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(int(s) for s in input_shape)
        out_shape = self.compute_output_shape(input_shape)
        if self.downsample is None and (self.stride != 1 or input_shape[0] != self.out_channels):
            self.downsample = Sequential(
                [
                    Conv2D(
                        self.out_channels,
                        1,
                        stride=self.stride,
                        use_bias=False,
                        name="downsample.0",
                        dtype=self.dtype,
                    ),
                    BatchNorm2D(name="downsample.1", dtype=self.dtype),
                ],
                name="downsample",
                dtype=self.dtype,
            )
        self._seed_children()
        shape = input_shape
        for key, layer, _ in self._main:
            shape = self._build_child(key, layer, shape)
        if self.downsample is not None:
            short = self._build_child("downsample", self.downsample, input_shape)
        else:
            short = input_shape
        if shape != out_shape or short != out_shape:
            raise ShapeError(
                f"{self.name}: main branch gives {shape} and shortcut {short}, expected {out_shape}"
            )
        super().build(input_shape)

    def _build_child(self, key: str, child: Layer, shape: Shape) -> Shape:
        if child.dtype != self.dtype:
            child.astype(self.dtype)
        if child.built and child.input_shape != shape:
            raise ShapeError(
                f"{self.name}.{key}: was built for input {child.input_shape}, but receives {shape}"
            )
        if not child.built:
            try:
                child.build(shape)
            except ShapeError as err:
                raise ShapeError(f"{self.name}.{key}: {err}") from None
        return tuple(child.output_shape)

    # ----------------------------------------------------------------- running
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """``relu(F(x) + shortcut(x))``.

        Batch norm returns a fresh array it does not keep, so the ReLUs after it and the sum with the
        shortcut are done in place (no full-size temporaries; channels-last memory is kept). Each inner
        ReLU's output is kept for its mask (the next convolution reads it anyway); the final ReLU's mask
        is kept as a boolean array, since the block's output belongs to the caller.
        """
        relu_outputs = []
        out = x
        for _, layer, relu_after in self._main:
            out = layer.forward(out, training)
            if relu_after:
                out = _relu_inplace(out) if isinstance(layer, BatchNorm2D) else np.maximum(out, 0)
                relu_outputs.append(out)
        shortcut = self.downsample.forward(x, training) if self.downsample is not None else x
        if isinstance(self._main[-1][1], BatchNorm2D):
            np.add(out, shortcut, out=out)
        else:
            out = out + shortcut
        final = out > 0
        np.maximum(out, out.dtype.type(0), out=out)
        self._cache = (relu_outputs, final)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        relu_outputs, final = self._cache
        dy = dy * final  # the final ReLU, once, before the branches split (a new array: ours to reuse)
        d = dy
        remaining = len(relu_outputs)
        for _, layer, relu_after in reversed(self._main):
            if relu_after:
                remaining -= 1
                d = d * (relu_outputs[remaining] > 0)
            d = layer.backward(d)
        if self.downsample is not None:
            return d + self.downsample.backward(dy)
        return np.add(dy, d, out=dy) if dy.shape == d.shape and dy.dtype == d.dtype else d + dy

    # ----------------------------------------------------------------- description
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(planes=self.planes, stride=self.stride)
        return config


class BasicBlock(ResidualBlock):
    """ResNet-18/34's block: two 3x3 convolutions, ``expansion = 1`` (torchvision ``BasicBlock``).

    ``conv1`` (3x3, ``stride``, padding 1, no bias) -> ``bn1`` -> ReLU -> ``conv2`` (3x3, padding 1, no
    bias) -> ``bn2``; plus the shortcut; then ReLU. The projection ``downsample`` (1x1 conv with
    ``stride``, no bias, then batch norm) is created at build when ``stride != 1`` or the input has a
    channel count other than ``planes``; otherwise the shortcut is the identity.

    >>> block = BasicBlock(128, stride=2, seed=0)
    >>> block.build((64, 56, 56))
    >>> block.output_shape, list(block.children())
    ((128, 28, 28), ['conv1', 'bn1', 'conv2', 'bn2', 'downsample'])
    """

    expansion = 1

    def _main_layers(self) -> list[tuple[str, Layer, bool]]:
        p, s, dt = self.planes, self.stride, self.dtype
        return [
            ("conv1", Conv2D(p, 3, stride=s, padding=1, use_bias=False, name="conv1", dtype=dt), False),
            ("bn1", BatchNorm2D(name="bn1", dtype=dt), True),
            ("conv2", Conv2D(p, 3, padding=1, use_bias=False, name="conv2", dtype=dt), False),
            ("bn2", BatchNorm2D(name="bn2", dtype=dt), False),
        ]


class Bottleneck(ResidualBlock):
    """ResNet-50/101/152's block: 1x1 reduce, 3x3, 1x1 expand, ``expansion = 4`` (torchvision ``Bottleneck``).

    ``conv1`` (1x1, ``planes``) -> ``bn1`` -> ReLU -> ``conv2`` (3x3, ``stride``, padding 1) -> ``bn2`` ->
    ReLU -> ``conv3`` (1x1, ``planes * 4``) -> ``bn3``; plus the shortcut; then ReLU. All convolutions
    have no bias. As in torchvision (ResNet "v1.5") the stride sits on the 3x3 convolution, not on the
    first 1x1 as in the 2015 paper. The 1x1 convolutions are notes 8.1's dimensionality reduction: the
    3x3 works on ``planes`` channels instead of ``4 * planes``.

    >>> block = Bottleneck(64, seed=0)
    >>> block.build((64, 56, 56))
    >>> block.output_shape, block.count_params()  # 4096+128 + 36864+128 + 16384+512 + 16384+512
    ((256, 56, 56), 75008)
    """

    expansion = 4

    def _main_layers(self) -> list[tuple[str, Layer, bool]]:
        p, s, dt = self.planes, self.stride, self.dtype
        return [
            ("conv1", Conv2D(p, 1, use_bias=False, name="conv1", dtype=dt), False),
            ("bn1", BatchNorm2D(name="bn1", dtype=dt), True),
            ("conv2", Conv2D(p, 3, stride=s, padding=1, use_bias=False, name="conv2", dtype=dt), False),
            ("bn2", BatchNorm2D(name="bn2", dtype=dt), True),
            ("conv3", Conv2D(p * 4, 1, use_bias=False, name="conv3", dtype=dt), False),
            ("bn3", BatchNorm2D(name="bn3", dtype=dt), False),
        ]
