"""Dropout layer (notes §10.2, §12 tip 5): inverted dropout in training, the identity in inference."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, TrainingError
from ..ops.dropout import check_rate, dropout_backward, dropout_forward
from ..utils.checks import is_int
from .base import Layer

_STATE_KIND = "cnnkit.keyed_dropout"


class Dropout(Layer):
    """Zero each input with probability ``rate`` in training and scale the rest by ``1 / (1 - rate)``.

    In inference (``training=False`` or after ``model.eval()``) the layer passes its input through.

    Masks are keyed (:func:`cnnkit.ops.dropout.keyed_uniform`): the mask of sample ``i`` of a batch is
    a pure function of the layer's key (two 64-bit ints drawn once, at build, from the layer's seed or
    cnnkit's global generator), of the number of training passes the layer has made (``step``) and of
    the sample's index in the whole batch, ``sample_offset + i``. ``sample_offset`` is 0 unless a
    distributed trainer feeds this process a slice of a larger batch: then every process draws, sample
    by sample, the masks one process would draw for the whole batch. Successive batches get different
    masks and a seeded run is reproducible; the key and step are exposed through :meth:`rng_state`, so a
    resumed run draws the same masks.

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
        self._key: tuple[int, int] | None = None
        self.step = 0
        #: Index, in the whole batch, of the first sample this process sees (set by distributed training).
        self.sample_offset = 0

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        self._key = self._new_key()
        self.step = 0

    def _new_key(self) -> tuple[int, int]:
        return _key_from_seed(int(self.rng().integers(0, 2**63 - 1)))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if self._key is None:
            self._key = self._new_key()
        active = training and self.rate > 0.0
        out, mask = dropout_forward(
            x, self.rate, training, key=self._key, step=self.step, offset=self.sample_offset
        )
        if active:
            self.step += 1
        self._cache = (mask,)
        return out

    def skip_step(self) -> None:
        """Count a training pass this process made on no samples (distributed training, a short batch)."""
        if self.rate > 0.0:
            self.step += 1

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        self.grads = {}
        return dropout_backward(dy, self._cache[0])

    def rng_state(self) -> dict[str, Any] | None:
        """The mask key and step (JSON-able), or None before the layer is built."""
        if self._key is None:
            return None
        return {"bit_generator": _STATE_KIND, "key": list(self._key), "step": self.step}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore the mask key and step from :meth:`rng_state`'s output.

        A PCG64 generator state (what model files written before keyed masks hold) is accepted too: the
        key is then drawn from that generator and the step starts at 0.
        """
        if isinstance(state, dict) and state.get("bit_generator") == _STATE_KIND:
            key, step = state.get("key"), state.get("step")
            ok = isinstance(key, list) and len(key) == 2 and all(is_int(k) and 0 <= k < 2**64 for k in key)
            if ok and is_int(step) and step >= 0:
                self._key = (int(key[0]), int(key[1]))
                self.step = int(step)
                return
        elif isinstance(state, dict) and state.get("bit_generator") == "PCG64":
            gen = np.random.Generator(np.random.PCG64())
            try:
                gen.bit_generator.state = state
            except (TypeError, ValueError, KeyError) as err:
                raise ConfigError(f"{self.name}: bad PCG64 rng state: {err}") from None
            self._key = _key_from_seed(int(gen.integers(0, 2**63 - 1)))
            self.step = 0
            return
        raise ConfigError(
            f"{self.name}: rng state must be a {{'bit_generator': '{_STATE_KIND}', 'key': [k0, k1], "
            f"'step': n}} dict (or a PCG64 state dict), got {state!r:.120}"
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["rate"] = self.rate
        return config


def _key_from_seed(seed: int) -> tuple[int, int]:
    words = np.random.SeedSequence(seed).generate_state(2, np.uint64)
    return int(words[0]), int(words[1])
