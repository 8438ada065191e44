"""How an image file becomes model input, and how that recipe is saved in a model file.

:class:`Preprocess` is the recipe: decode with Pillow (EXIF orientation applied, 16-bit and float
images scaled to 0..255: :func:`cnnkit.data.folder.decode_image`), convert to grey or RGB, resize
bilinearly to ``image_size`` ``(H, W)``, then :class:`~cnnkit.data.transforms.Normalize` (notes:
Convolutional Neural Networks (February 2026), §12, tip 1). ``cnnkit train`` writes it into the model
file's metadata under ``"preprocess"`` with :meth:`Preprocess.to_metadata`; everything that reads a model
file (``cnnkit predict``, ``cnnkit evaluate``, ``cnnkit show``, a web page) gets it back with
:meth:`Preprocess.from_model`. This module is the one writer and the one reader of that format::

    {"image_size": [H, W], "color": "grey" | "rgb",
     "normalize": {"mode": "unit" | "symmetric" | "standardize", "mean": [...] | null,
                   "std": [...] | null, "max_value": 255.0}}

A model file without it (saved from Python) is treated as images of its input shape scaled by ``x / 255``.

Imports only NumPy, Pillow and the two data modules it uses, so ``cnnkit predict`` stays lean.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .transforms import MODES, Normalize

__all__ = ["METADATA_KEY", "Preprocess", "load_image_for", "load_images_for"]

#: The key of the recipe in a model file's user metadata.
METADATA_KEY = "preprocess"

_COLORS = {"grey": "grey", "gray": "grey", "l": "grey", "rgb": "rgb"}


def _normalize_from(config: Any) -> Normalize:
    """A :class:`Normalize` from its saved ``get_config`` dict, every value checked (ConfigError)."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"preprocess: 'normalize' should be a JSON object, found {type(config).__name__}")
    mode = config.get("mode", "unit")
    if mode not in MODES:
        raise ConfigError(f"preprocess: normalize mode should be one of {MODES}, found {mode!r}")
    max_value = config.get("max_value", 255.0)
    if not _finite_number(max_value) or not max_value > 0:
        raise ConfigError(f"preprocess: normalize max_value should be a number > 0, found {max_value!r}")
    mean, std = config.get("mean"), config.get("std")
    if mode != "standardize":
        return Normalize(mode, max_value=float(max_value))
    for key, values in (("mean", mean), ("std", std)):
        if not isinstance(values, list) or not values or not all(_finite_number(v) for v in values):
            raise ConfigError(
                f"preprocess: standardize needs {key} as a list of finite numbers (one per channel), "
                f"found {values!r:.200}"
            )
    try:
        return Normalize(mode, mean, std, float(max_value))
    except ConfigError as err:
        raise ConfigError(f"preprocess: {err}") from None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Preprocess:
    """Decode, convert to ``color`` (``"grey"``/``"rgb"``), resize to ``image_size`` ``(H, W)``, normalise."""

    image_size: tuple[int, int]
    color: str
    normalize: Normalize

    @property
    def channels(self) -> int:
        """1 for grey, 3 for RGB."""
        return 1 if self.color == "grey" else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The per-sample shape ``(C, H, W)`` it produces."""
        return (self.channels, *self.image_size)

    # ------------------------------------------------------------------------------ the saved format
    def to_metadata(self) -> dict[str, Any]:
        """The JSON saved under ``metadata["preprocess"]`` (see the module docstring)."""
        return {
            "image_size": [int(s) for s in self.image_size],
            "color": self.color,
            "normalize": self.normalize.get_config(),
        }

    @classmethod
    def from_metadata(cls, meta: Any) -> Preprocess:
        """Inverse of :meth:`to_metadata`; every value is checked (:class:`ConfigError` naming it)."""
        if not isinstance(meta, Mapping):
            raise ConfigError(f"preprocess: expected a JSON object, found {type(meta).__name__}")
        size = meta.get("image_size")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 15 for v in size)
        ):
            raise ConfigError(
                f"preprocess: image_size should be [H, W], two integers in 1..32768, found {size!r}"
            )
        color = _COLORS.get(str(meta.get("color", "rgb")).lower())
        if color is None:
            raise ConfigError(f"preprocess: color should be 'grey' or 'rgb', found {meta.get('color')!r}")
        normalize = _normalize_from(meta.get("normalize") or {"mode": "unit"})
        if normalize.mean is not None and len(normalize.mean) != (1 if color == "grey" else 3):
            raise ConfigError(
                f"preprocess: {color} images have {1 if color == 'grey' else 3} channel(s), but the "
                f"normalisation has statistics for {len(normalize.mean)}"
            )
        return cls((size[0], size[1]), color, normalize)

    @classmethod
    def from_model(cls, model: Any) -> Preprocess:
        """The recipe saved with a loaded model; without one, its input shape and ``x / 255``.

        Raises :class:`ConfigError` when the saved recipe is invalid, does not produce the model's input
        shape, or the model does not take images (1 or 3 channels) and has no recipe.
        """
        meta = (getattr(model, "metadata", None) or {}).get(METADATA_KEY)
        shape = getattr(model, "input_shape", None)
        if meta is not None:
            try:
                pre = cls.from_metadata(meta)
            except ConfigError as err:
                raise ConfigError(f"the model file's preprocessing metadata is invalid: {err}") from None
            if shape is not None and tuple(shape) != pre.input_shape:
                raise ConfigError(
                    f"the model file's preprocessing makes inputs of shape {pre.input_shape}, "
                    f"but the model takes {tuple(shape)}"
                )
            return pre
        if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
            raise ConfigError(
                f"the model takes input {shape}, not images (1 or 3 channels), and its file has no "
                "preprocessing metadata (it was not written by `cnnkit train`)"
            )
        color = "grey" if shape[0] == 1 else "rgb"
        return cls((int(shape[1]), int(shape[2])), color, Normalize("unit"))

    # ------------------------------------------------------------------------------ applying it
    def read(self, path: str | os.PathLike[str]) -> np.ndarray:
        """One image file as uint8 ``(C, H, W)``; :class:`DataError` naming the file when unreadable."""
        from .folder import decode_image

        try:
            return decode_image(path, self.image_size, self.color)
        except Exception as err:  # any Pillow failure means an unreadable file
            raise DataError(
                f"{os.fspath(path)}: not a readable image ({type(err).__name__}: {err})"
            ) from None

    #: Older name of :meth:`read`.
    load = read

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Normalise uint8 ``(N, C, H, W)`` or ``(C, H, W)`` pixels to float32 model input."""
        return self.normalize(images)

    def prepare(self, path: str | os.PathLike[str]) -> np.ndarray:
        """One image file as float32 model input ``(C, H, W)``."""
        return self.normalize(self.read(path))


def load_image_for(model: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """One image file as a batch of one ``(1, C, H, W)``, preprocessed as ``model`` was trained.

    ``model.predict(load_image_for(model, "shoe.png"))`` gives the class probabilities. Raises
    :class:`DataError` for an unreadable file, :class:`ConfigError` for invalid saved preprocessing.
    """
    return Preprocess.from_model(model).prepare(path)[None]


def load_images_for(
    model: Any, paths: Sequence[str | os.PathLike[str]]
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Several image files preprocessed for ``model``: ``(x (k, C, H, W), readable paths, bad)``.

    ``bad`` lists ``(path, reason)`` for the files that could not be read (they are left out of ``x``).
    """
    pre = Preprocess.from_model(model)
    images, ok, bad = [], [], []
    for path in paths:
        try:
            images.append(pre.read(path))
            ok.append(os.fspath(path))
        except DataError as err:
            bad.append((os.fspath(path), str(err).removeprefix(f"{os.fspath(path)}: ")))
    if not images:
        return np.zeros((0, *pre.input_shape), dtype=np.float32), ok, bad
    return pre(np.stack(images)), ok, bad
