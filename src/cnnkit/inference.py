"""Image files in, class probabilities out: the pipeline behind ``cnnkit predict`` (and a web page).

``predict_files(model, ["shoe.png", "bag.jpg"])`` loads the model (a path or a loaded model), applies the
preprocessing saved with it (:class:`cnnkit.data.preprocess.Preprocess`: decode, grey/RGB, resize,
normalise), runs the network in inference mode and returns the top-k classes of each image with their
probabilities: the softmax of the scores (notes: Convolutional Neural Networks (February 2026), §6.2),
or the model's own output when it ends with a Softmax layer (:func:`cnnkit.training.predict`, the one
path for both). Unreadable files are returned apart, never raised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError, FileFormatError

__all__ = ["class_names_of", "load_model_for_inference", "predict_files", "top_k"]


def load_model_for_inference(path: str | os.PathLike[str]) -> Any:
    """Load a ``.cnnkit`` model file in inference mode (:class:`DataError` when missing or a folder)."""
    from pathlib import Path

    from .errors import DataError
    from .io.model_file import load_model

    p = Path(path)
    if p.is_dir():
        raise DataError(f"model file expected, got a folder: {p}")
    if not p.exists():
        raise DataError(f"model file not found: {p}")
    model = load_model(p)
    model.eval()
    return model


def class_names_of(model: Any) -> list[str]:
    """The model's class names, or ``"0"``, ``"1"``, ... when it has none (one per output)."""
    outputs = int(model.output_shape[-1])
    names = getattr(model, "class_names", None)
    if not names:
        return [str(i) for i in range(outputs)]
    if len(names) != outputs:
        raise FileFormatError(f"the model has {outputs} outputs but {len(names)} class names")
    return [str(n) for n in names]


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """Per row of ``probs``, the ``min(k, classes)`` best classes: ``{"class", "index", "probability"}``."""
    k = min(int(k), probs.shape[1])
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([{"class": class_names[i], "index": int(i), "probability": float(row[i])} for i in order])
    return out


def predict_files(
    model: Any,
    files: Sequence[str | os.PathLike[str]],
    *,
    top_k: int = 3,
    batch_size: int = 64,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Top-k predictions for image files with the model's saved preprocessing.

    ``model`` is a loaded model or the path of a model file. Returns ``(results, bad)``: one
    ``{"file", "top": [{"class", "index", "probability"}, ...]}`` per readable file, in order, and
    ``(path, reason)`` for each file that could not be read.
    """
    from .data.preprocess import load_images_for
    from .training.fit import predict

    if isinstance(model, (str, os.PathLike)):
        model = load_model_for_inference(model)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"predict_files: top_k must be an integer >= 1, got {top_k!r}")
    names = class_names_of(model)
    results: list[dict[str, Any]] = []
    bad: list[tuple[str, str]] = []
    for start in range(0, len(files), batch_size):
        x, ok, failed = load_images_for(model, files[start : start + batch_size])
        bad.extend(failed)
        if not ok:
            continue
        probs = predict(model, x, batch_size=batch_size)
        for path, top in zip(ok, _top(probs, names, top_k), strict=True):
            results.append({"file": path, "top": top})
    return results, bad


_top = top_k
