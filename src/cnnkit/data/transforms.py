"""Input normalisation (notes §12.1: "Always normalize inputs: scale pixels to [0, 1] or [-1, 1]").

:class:`Normalize` turns raw pixels (uint8, or floats on the same 0..255 scale) into float32:

- ``"unit"``:        ``x / 255``                       -> [0, 1]
- ``"symmetric"``:   ``x / 127.5 - 1``                 -> [-1, 1]
- ``"standardize"``: ``(x / 255 - mean_c) / std_c``    -> per channel mean 0, standard deviation 1 on
  the data it was fitted to. ``mean_c``/``std_c`` are measured on the [0, 1] scale (so Fashion-MNIST
  gives about 0.286 / 0.353, comparable with published values) by :meth:`Normalize.fit` on the
  *training* data only, and kept as plain floats so the model file can carry them
  (:meth:`Normalize.get_config` / :meth:`Normalize.from_config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError

MODES = ("unit", "symmetric", "standardize")


class Normalize:
    """Pixels -> float32 network inputs; see the module docstring for the three modes."""

    def __init__(
        self,
        mode: str = "unit",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_value: float = 255.0,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"Normalize: mode must be one of {MODES}, got {mode!r}")
        if not max_value > 0:
            raise ConfigError(f"Normalize: max_value must be > 0, got {max_value!r}")
        self.mode = mode
        self.max_value = float(max_value)
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        if (mean is None) != (std is None):
            raise ConfigError("Normalize: give both mean and std, or neither")
        if mean is not None and std is not None:
            if mode != "standardize":
                raise ConfigError(f"Normalize: mean/std only apply to mode 'standardize', got mode {mode!r}")
            self.mean = [float(m) for m in np.ravel(mean)]
            self.std = [float(s) for s in np.ravel(std)]
            if len(self.mean) != len(self.std) or not self.mean:
                raise ConfigError(
                    f"Normalize: mean and std need one value per channel, got {len(self.mean)} and "
                    f"{len(self.std)}"
                )
            if min(self.std) <= 0:
                raise ConfigError(f"Normalize: std must be > 0, got {self.std}")

    @property
    def fitted(self) -> bool:
        """True when the transform can be applied (always, except an unfitted ``"standardize"``)."""
        return self.mode != "standardize" or self.mean is not None

    def fit(self, data: Any, batch_size: int = 1024) -> Normalize:
        """Measure per-channel mean and standard deviation (population, on the [0, 1] scale).

        ``data``: an ``(N, C, H, W)`` array, an ``(x, y)`` pair, or a lazy dataset with ``load_batch``
        (:class:`~cnnkit.data.folder.ImageFolder`). Reads ``batch_size`` images at a time and merges
        the per-chunk moments (Chan et al.), so a large uint8 array is never copied to float whole.
        Only ``"standardize"`` uses the statistics; other modes store nothing. Returns ``self``.
        """
        if self.mode != "standardize":
            return self
        count = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for chunk in _chunks(data, batch_size):
            c = chunk.astype(np.float64) / self.max_value
            k = c.shape[0] * c.shape[2] * c.shape[3]
            if k == 0:
                continue
            cm = c.mean(axis=(0, 2, 3))
            cm2 = ((c - cm[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))
            if mean is None or m2 is None:
                mean, m2, count = cm, cm2, k
                continue
            if cm.shape != mean.shape:
                raise ShapeError(f"Normalize.fit: channel count changed from {mean.size} to {cm.size}")
            delta = cm - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + cm2 + delta**2 * (count * k / total)
            count = total
        if mean is None or m2 is None:
            raise ConfigError("Normalize.fit: no data to fit (0 images)")
        std = np.sqrt(m2 / count)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) if v > 0 else 1.0 for v in std]  # a constant channel is only centred
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise a batch ``(N, C, H, W)`` or one image ``(C, H, W)``; returns float32."""
        if not isinstance(x, np.ndarray) or not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise DTypeError(f"Normalize: x must be a uint8 or floating numpy array, got {got}")
        if x.ndim not in (3, 4):
            raise ShapeError(f"Normalize: x must be (N, C, H, W) or (C, H, W), got shape {x.shape}")
        out = x.astype(np.float32)
        if self.mode == "unit":
            out /= np.float32(self.max_value)
        elif self.mode == "symmetric":
            out /= np.float32(self.max_value / 2)
            out -= np.float32(1.0)
        else:
            mean, std = self._stats(x)
            out /= np.float32(self.max_value)
            out -= mean
            out /= std
        return out

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Map normalised values back to the pixel scale (float32, not clipped or rounded)."""
        out = np.asarray(x, dtype=np.float32).copy()
        if self.mode == "unit":
            out *= np.float32(self.max_value)
        elif self.mode == "symmetric":
            out += np.float32(1.0)
            out *= np.float32(self.max_value / 2)
        else:
            mean, std = self._stats(out)
            out *= std
            out += mean
            out *= np.float32(self.max_value)
        return out

    def _stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.std is None:
            raise ConfigError(
                "Normalize: mode 'standardize' needs mean/std: call fit(x_train) first or pass them"
            )
        channels = x.shape[-3]
        if channels != len(self.mean):
            raise ShapeError(
                f"Normalize: fitted for {len(self.mean)} channel(s), got {channels} (shape {x.shape})"
            )
        shape = (channels, 1, 1)
        return (
            np.asarray(self.mean, dtype=np.float32).reshape(shape),
            np.asarray(self.std, dtype=np.float32).reshape(shape),
        )

    def get_config(self) -> dict[str, Any]:
        """JSON-able state: ``{"mode", "mean", "std", "max_value"}``."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "max_value": self.max_value}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Normalize:
        """Rebuild from :meth:`get_config`'s output."""
        return cls(
            config.get("mode", "unit"), config.get("mean"), config.get("std"), config.get("max_value", 255.0)
        )

    def __repr__(self) -> str:
        extra = f", mean={self.mean}, std={self.std}" if self.mode == "standardize" else ""
        return f"Normalize(mode={self.mode!r}{extra})"


def _chunks(data: Any, batch_size: int):
    """Yield uint8/float ``(n, C, H, W)`` chunks of an array, an (x, y) pair or a lazy dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], np.ndarray):
        data = data[0]
    if isinstance(data, np.ndarray):
        if data.ndim != 4:
            raise ShapeError(f"Normalize.fit: x must be (N, C, H, W), got shape {data.shape}")
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size]
    elif hasattr(data, "load_batch") and hasattr(data, "__len__"):
        for start in range(0, len(data), batch_size):
            xb, _ = data.load_batch(np.arange(start, min(len(data), start + batch_size)))
            yield xb
    else:
        raise DTypeError(
            f"Normalize.fit: expected an (N, C, H, W) array, an (x, y) pair or a dataset, got {type(data).__name__}"
        )
