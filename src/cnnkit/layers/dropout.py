"""Dropout layer (notes §10.2, §12 tip 5): inverted dropout in training, the identity in inference."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, TrainingError
from ..ops.dropout import check_rate, dropout_backward, dropout_forward
from .base import Layer


class Dropout(Layer):
    """Zero each input with probability ``rate`` in training and scale the rest by ``1 / (1 - rate)``.

    In inference (``training=False`` or after ``model.eval()``) the layer passes its input through.
    Masks come from a generator created once, at build, from the layer's seed (or cnnkit's global
    generator): successive batches get different masks and a seeded run is reproducible. Its state is
    exposed through :meth:`rng_state` so a resumed run draws the same masks.

    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=0)
    >>> y = layer(np.ones((1, 8), np.float32), training=True)
    >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / (1 - 0.5)
    [0.0, 2.0]
    >>> layer(np.ones((1, 8), np.float32), training=False).tolist()
    [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(
        self, rate: float, *, name: str | None = None, seed: int | None = None, dtype: Any = np.float32
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)
        self.rate = check_rate(rate, self.name)
        self._generator: np.random.Generator | None = None

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        self._generator = self._new_generator()

    def _new_generator(self) -> np.random.Generator:
        return np.random.default_rng(int(self.rng().integers(0, 2**63 - 1)))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if self._generator is None:
            self._generator = self._new_generator()
        out, mask = dropout_forward(x, self.rate, training, self._generator)
        self._cache = (mask,)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        self.grads = {}
        return dropout_backward(dy, self._cache[0])

    def rng_state(self) -> dict[str, Any] | None:
        """The mask generator's state (JSON-able), or None before the layer is built."""
        return None if self._generator is None else self._generator.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore the mask generator from :meth:`rng_state`'s output."""
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ConfigError(f"{self.name}: rng state must be a PCG64 state dict, got {state!r:.120}")
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = state
        self._generator = gen

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["rate"] = self.rate
        return config
