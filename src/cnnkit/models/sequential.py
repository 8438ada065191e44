"""Sequential: a stack of layers run in order, and the container every zoo model is built from.

Forward runs the children in order; backward runs their ``backward`` in reverse order, which is the chain
rule of notes section 7.2 written as a loop: dL/dx_i = J_i^T dL/dx_{i+1}.

Children are named: a list gives them the names ``"0"``, ``"1"``, ... and a dict keeps its keys, so
parameter names match torchvision's state dicts (``features.0.weight``, ``layer1.0.conv1.weight``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers.activations import FUSED, ReLU
from ..layers.base import Layer, Shape, from_config, to_config
from ..layers.conv import Conv2D
from ..layers.pool import MaxPool2D
from .model import ModelMixin


class Sequential(ModelMixin, Layer):
    """Layers applied one after another.

    >>> from cnnkit.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
    >>> model = Sequential([Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(10)],
    ...                    input_shape=(3, 32, 32), seed=0)
    >>> model.output_shape
    (10,)
    """

    def __init__(
        self,
        layers: Iterable[Layer] | Mapping[str, Layer] = (),
        *,
        input_shape: Shape | None = None,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name or "sequential", seed=seed, dtype=dtype)
        self.layers: dict[str, Layer] = {}
        items = layers.items() if isinstance(layers, Mapping) else ((None, lay) for lay in layers)
        for key, layer in items:
            self.add(layer, key)
        if input_shape is not None:
            self.build(input_shape)

    def add(self, layer: Layer, key: str | None = None) -> Sequential:
        """Append ``layer`` under ``key`` (default: its position as a string)."""
        if not isinstance(layer, Layer):
            raise ConfigError(f"{self.name}: can only add cnnkit layers, got {type(layer).__name__}")
        key = str(len(self.layers)) if key is None else str(key)
        if key in self.layers:
            raise ConfigError(f"{self.name}: a child called {key!r} already exists")
        self.layers[key] = layer
        self.built = False
        return self

    def children(self) -> dict[str, Layer]:
        return self.layers

    #: Whether :meth:`backward` must return dL/dx. A training loop that ignores the model's input
    #: gradient sets it False (``fit`` does); the first child then skips computing it when it can
    #: (a ``Conv2D`` with ``needs_input_grad``; its backward returns None). True by default, because a
    #: nested Sequential (a residual ``downsample``, AlexNet's ``features``) and gradcheck need dx.
    _needs_input_grad: bool = True

    @property
    def needs_input_grad(self) -> bool:
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        self._needs_input_grad = bool(value)
        self._wire_input_grad()

    def _wire_input_grad(self) -> None:
        if self.layers:
            first = next(iter(self.layers.values()))
            if hasattr(first, "needs_input_grad"):
                first.needs_input_grad = self._needs_input_grad

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, int):
            return list(self.layers.values())[key]
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def build(self, input_shape: Shape) -> None:
        if not self.layers:
            raise ConfigError(f"{self.name}: cannot build an empty Sequential")
        self._seed_children()
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        for key, child in self.layers.items():
            if child.dtype != self.dtype:
                child.astype(self.dtype)
            if child.built and child.input_shape != shape:
                raise ShapeError(
                    f"{self.name}.{key} ({type(child).__name__}): was built for input "
                    f"{child.input_shape}, but the layer before it gives {shape}"
                )
            if not child.built:
                try:
                    child.build(shape)
                except ShapeError as err:
                    raise ShapeError(f"{self.name}.{key}: {err}") from None
            shape = child.output_shape
        self.output_shape = shape
        self.built = True
        self._wire_input_grad()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Run the children in order; a ReLU followed by a MaxPool2D runs fused (same result, less work).

        ``max_pool(relu(x)) == relu(max_pool(x))`` because ReLU is monotone, so the pair computes the ReLU
        on the pooled output and its mask on the pooled gradient (:meth:`MaxPool2D.forward_after_relu`);
        the ReLU layer's backward then passes the gradient through. A Conv2D before the pair joins them
        when its convolution runs Winograd and the pooling is 2x2 (:meth:`Conv2D.forward_relu_max_pool`:
        the convolution's output is pooled tile by tile and never written).
        """
        children = list(self.layers.values())
        i, count = 0, len(children)
        while i < count:
            child = children[i]
            if (
                i + 2 < count
                and type(child) is Conv2D
                and type(children[i + 1]) is ReLU
                and type(children[i + 2]) is MaxPool2D
            ):
                pooled = child.forward_relu_max_pool(x, children[i + 2])
                if pooled is not None:  # all three in one pass (Winograd convolutions, 2x2 pooling)
                    children[i + 1]._cache = FUSED
                    x = pooled
                    i += 3
                    continue
            if i + 1 < count and type(child) is ReLU and type(children[i + 1]) is MaxPool2D:
                child._cache = FUSED
                x = children[i + 1].forward_after_relu(x, training)
                i += 2
                continue
            x = child.forward(x, training)
            i += 1
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for child in reversed(self.layers.values()):
            dy = child.backward(dy)
        return dy

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = {key: to_config(child) for key, child in self.layers.items()}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        config = dict(config)
        layers = {key: from_config(spec) for key, spec in config.pop("layers").items()}
        input_shape = config.pop("input_shape", None)
        return cls(layers, input_shape=tuple(input_shape) if input_shape else None, **config)
