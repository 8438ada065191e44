"""Residual: ``y = main(x) + shortcut(x)``, the general form of a residual connection (notes section 10.4).

:class:`~cnnkit.models.residual.BasicBlock` and ``Bottleneck`` are torchvision's fixed blocks. This
container takes any two branches, so a graph from elsewhere (an ONNX file, whose convolutions may carry
the batch norm folded into their bias) can be rebuilt as it is. No ReLU after the sum: put a ``ReLU``
layer after the block. Children are ``main`` and, unless the shortcut is the identity, ``shortcut``.

Backward: ``dL/dx = main.backward(dy) + shortcut.backward(dy)`` (the identity passes ``dy`` itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..layers.base import Layer, Shape, from_config, to_config


class Residual(Layer):
    """``main(x) + shortcut(x)``; ``shortcut=None`` is the identity.

    >>> from cnnkit.layers import Conv2D, ReLU
    >>> block = Residual(Sequential([Conv2D(4, 3, padding=1), ReLU(), Conv2D(4, 3, padding=1)]), seed=0)
    >>> block.build((4, 8, 8))
    >>> block.output_shape, list(block.children())
    ((4, 8, 8), ['main'])
    """

    def __init__(
        self,
        main: Layer,
        shortcut: Layer | None = None,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        self.main = main
        self.shortcut = shortcut

    def children(self) -> dict[str, Layer]:
        out = {"main": self.main}
        if self.shortcut is not None:
            out["shortcut"] = self.shortcut
        return out

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(int(s) for s in input_shape)
        self._seed_children()
        shapes = []
        for key, child in self.children().items():
            if child.dtype != self.dtype:
                child.astype(self.dtype)
            if not child.built:
                try:
                    child.build(input_shape)
                except ShapeError as err:
                    raise ShapeError(f"{self.name}.{key}: {err}") from None
            elif child.input_shape != input_shape:
                raise ShapeError(
                    f"{self.name}.{key}: was built for input {child.input_shape}, but receives {input_shape}"
                )
            shapes.append(tuple(child.output_shape))
        short = shapes[1] if len(shapes) > 1 else input_shape
        if shapes[0] != short:
            raise ShapeError(f"{self.name}: main branch gives {shapes[0]} but the shortcut gives {short}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(self.main.output_shape) if self.main.built else tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = self.main.forward(x, training)
        short = self.shortcut.forward(x, training) if self.shortcut is not None else x
        return out + short

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.main.backward(dy)
        return dx + (self.shortcut.backward(dy) if self.shortcut is not None else dy)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["main"] = to_config(self.main)
        config["shortcut"] = None if self.shortcut is None else to_config(self.shortcut)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Residual:
        config = dict(config)
        main = from_config(config.pop("main"))
        shortcut = config.pop("shortcut", None)
        return cls(main, None if shortcut is None else from_config(shortcut), **config)
