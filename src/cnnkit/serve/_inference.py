"""The one place where the page calls the inference pipeline "model file + saved preprocessing + image ->
probabilities" (:mod:`cnnkit.inference`, the pipeline of ``cnnkit predict``), so that ``/api/predict``
answers what ``cnnkit predict --json`` prints for the same file (``tests/test_serve_api.py`` checks it).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np


def load(path: str | os.PathLike[str]) -> tuple[Any, Any, list[str]]:
    """``(model, preprocess, class_names)`` of a ``.cnnkit`` file, as ``cnnkit predict`` loads them."""
    from ..inference import load_model_for_inference

    model = load_model_for_inference(path)
    return (model, *for_model(model))


def for_model(model: Any) -> tuple[Any, list[str]]:
    """``(preprocess, class_names)`` of a model object (its metadata, else its input shape and x/255)."""
    from ..data.preprocess import Preprocess
    from ..inference import class_names_of

    return Preprocess.from_model(model), class_names_of(model)


def describe(pre: Any) -> dict[str, Any]:
    """The saved preprocessing as JSON: ``image_size`` ``[H, W]``, ``color``, ``normalize`` (its config)."""
    return pre.to_metadata()


def decode(pre: Any, data: bytes) -> np.ndarray:
    """Image bytes -> uint8 ``(C, H, W)`` at the model's size and colour (the saved preprocessing)."""
    from ..data.folder import decode_image
    from ..errors import DataError

    try:
        return decode_image(io.BytesIO(data), pre.image_size, pre.color)
    except Exception as err:  # any Pillow failure means an unreadable file (as Preprocess.read says)
        raise DataError(f"the uploaded file: not a readable image ({type(err).__name__}: {err})") from None


def model_input(pre: Any, image: np.ndarray) -> np.ndarray:
    """uint8 ``(C, H, W)`` -> the normalised float32 batch ``(1, C, H, W)`` the network reads."""
    return np.asarray(pre(image[None]), dtype=np.float32)


def probabilities(model: Any, pre: Any, data: bytes) -> np.ndarray:
    """Softmax probabilities ``(classes,)`` of one image file's bytes, as ``cnnkit predict`` computes them."""
    from ..training.fit import predict

    return predict(model, model_input(pre, decode(pre, data)))[0]
