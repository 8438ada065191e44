"""The one place where the page calls the inference pipeline "model file + saved preprocessing + image ->
probabilities" (the pipeline of ``cnnkit predict``), so that ``/api/predict`` answers what
``cnnkit predict --json`` prints for the same file.

Kept in one small module on purpose: when the pipeline moves into a public library function (the saved
preprocessing as ``cnnkit.data.preprocess.Preprocess``, probabilities from ``cnnkit.training.predict``,
loading from ``cnnkit.inference``), only this file changes; ``tests/test_serve_api.py`` checks that the
page still answers exactly what ``cnnkit predict --json`` prints.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np


def load(path: str | os.PathLike[str]) -> tuple[Any, Any, list[str]]:
    """``(model, preprocess, class_names)`` of a ``.cnnkit`` file, as ``cnnkit predict`` loads them."""
    from ..cli._common import Preprocess, class_names_of, load_model_file

    model = load_model_file(path)
    return model, Preprocess.from_model(model), class_names_of(model)


def for_model(model: Any) -> tuple[Any, list[str]]:
    """``(preprocess, class_names)`` of a model object (its metadata, else its input shape and x/255)."""
    from ..cli._common import Preprocess, class_names_of

    return Preprocess.from_model(model), class_names_of(model)


def describe(pre: Any) -> dict[str, Any]:
    """The saved preprocessing as JSON: ``image_size`` ``[H, W]``, ``color``, ``normalize`` (its config)."""
    return {
        "image_size": [int(s) for s in pre.image_size],
        "color": str(pre.color),
        "normalize": pre.normalize.get_config(),
    }


def decode(pre: Any, data: bytes) -> np.ndarray:
    """Image bytes -> uint8 ``(C, H, W)`` at the model's size and colour (the saved preprocessing)."""
    from ..errors import DataError

    try:
        return pre.load(io.BytesIO(data))
    except DataError as err:  # its message starts with the "file name", here a BytesIO's repr
        raise DataError(f"the uploaded file: {str(err).split(': ', 1)[-1]}") from None


def model_input(pre: Any, image: np.ndarray) -> np.ndarray:
    """uint8 ``(C, H, W)`` -> the normalised float32 batch ``(1, C, H, W)`` the network reads."""
    return np.asarray(pre.normalize(image[None]), dtype=np.float32)


def probabilities(model: Any, pre: Any, data: bytes) -> np.ndarray:
    """Softmax probabilities ``(classes,)`` of one image file's bytes, as ``cnnkit predict`` computes them."""
    from ..cli._common import predict_probabilities

    return predict_probabilities(model, pre.normalize(np.stack([decode(pre, data)])), 1)[0]
