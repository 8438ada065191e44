"""Sequential: a stack of layers run in order, and the container every zoo model is built from.

Forward runs the children in order; backward runs their ``backward`` in reverse order, which is the chain
rule of notes section 7.2 written as a loop: dL/dx_i = J_i^T dL/dx_{i+1}.

Children are named: a list gives them the names ``"0"``, ``"1"``, ... and a dict keeps its keys, so
parameter names match torchvision's state dicts (``features.0.weight``, ``layer1.0.conv1.weight``).

Fusion is decided once, when the model is built (:mod:`cnnkit.layers.fused`): :attr:`Sequential.layers`
keeps the layers as declared (they own the parameters and are what a saved file lists), and
:meth:`Sequential.children` gives the layers as they *run*, a ``Conv2D -> ReLU -> MaxPool2D`` run or a
``ReLU -> MaxPool2D`` pair replaced by one fused layer that wraps them. ``forward``, ``backward`` and a
plain loop over ``children()`` all run that list, so they give the same values bit for bit.
``Sequential(..., fuse=False)`` or :meth:`Sequential.set_fusion` switches it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers.base import Layer, Shape, from_config, to_config
from ..layers.fused import fuse_layers
from .model import ModelMixin


class Sequential(ModelMixin, Layer):
    """Layers applied one after another.

    >>> from cnnkit.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
    >>> model = Sequential([Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(10)],
    ...                    input_shape=(3, 32, 32), seed=0)
    >>> model.output_shape
    (10,)
    >>> list(model.layers), list(model.children())  # declared; as run (conv, ReLU and pool fused)
    (['0', '1', '2', '3', '4'], ['0', '3', '4'])
    >>> model.set_fusion(False).children() is model.layers
    True

    Args:
        layers: the layers in order, a list (named ``"0"``, ``"1"``, ...) or a dict of name to layer.
        input_shape: per-sample input shape; builds the model now (else at the first batch).
        fuse: run ``Conv2D -> ReLU -> MaxPool2D`` and ``ReLU -> MaxPool2D`` as fused layers (see the
            module docstring); saved with the model only when False.
    """

    def __init__(
        self,
        layers: Iterable[Layer] | Mapping[str, Layer] = (),
        *,
        input_shape: Shape | None = None,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
        fuse: bool = True,
    ) -> None:
        super().__init__(name=name or "sequential", seed=seed, dtype=dtype)
        self.layers: dict[str, Layer] = {}
        #: Whether the build fuses runs of layers (see the module docstring).
        self.fuse = bool(fuse)
        self._run: dict[str, Layer] | None = None  # the layers as they run; None: ``layers`` itself
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
        self._run = None
        return self

    def children(self) -> dict[str, Layer]:
        """The layers as they run: :attr:`layers`, with fused runs replaced by one fused layer each once
        the model is built with fusion on (:mod:`cnnkit.layers.fused`)."""
        return self.layers if self._run is None else self._run

    def set_fusion(self, on: bool = True) -> Sequential:
        """Switch fusion on or off for this model and every Sequential inside it; returns ``self``.

        A built model re-derives its running list at once; the parameters do not change.
        """
        for _, layer in [("", self), *self.named_layers()]:
            if isinstance(layer, Sequential):
                layer.fuse = bool(on)
                layer._run = fuse_layers(layer.layers) if layer.fuse and layer.built else None
        return self

    # The declared layers own every parameter, buffer and name: walk them, not the fused view.
    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        for key, child in self.layers.items():
            yield prefix + key, child
            yield from child.named_layers(f"{prefix}{key}.")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        for key in self.params:
            yield prefix + key, self, key
        for key, child in self.layers.items():
            yield from child.named_parameters(f"{prefix}{key}.")

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        for key in self.buffers:
            yield prefix + key, self, key
        for key, child in self.layers.items():
            yield from child.named_buffers(f"{prefix}{key}.")

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
        self._run = None
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
        if self.fuse:
            self._run = fuse_layers(self.layers)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Run :meth:`children` in order (fused layers included: same values as the layers one by one)."""
        for child in self.children().values():
            x = child.forward(x, training)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for child in reversed(self.children().values()):
            dy = child.backward(dy)
        return dy

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = {key: to_config(child) for key, child in self.layers.items()}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        if not self.fuse:
            config["fuse"] = False
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        config = dict(config)
        layers = {key: from_config(spec) for key, spec in config.pop("layers").items()}
        input_shape = config.pop("input_shape", None)
        return cls(layers, input_shape=tuple(input_shape) if input_shape else None, **config)
