"""A few images of the data set a model was trained on, for the page's "pick a sample" row.

The model file's metadata names the data (``cnnkit train`` writes ``metadata["data"]["name"]``):
Fashion-MNIST gives two test images per class (the full set when installed, else the subset bundled
with cnnkit); ``shapes`` gives freshly drawn shapes at the model's size. Other data (a folder of the
learner's own images) gives none: the page then offers upload and drawing only.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

#: Test images per class.
PER_CLASS = 2


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _pick(x: np.ndarray, y: np.ndarray, names: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for k, name in enumerate(names):
        for i in np.flatnonzero(y == k)[:PER_CLASS]:
            out.append((name, _png(x[i])))
    return out


def sample_images(metadata: dict[str, Any], image_size: tuple[int, int]) -> list[tuple[str, bytes]]:
    """``(class name, PNG bytes)`` pairs; empty when the model's data is not a built-in data set."""
    name = (metadata.get("data") or {}).get("name")
    if name == "fashion-mnist":
        from ..data import fashion_mnist

        ds = fashion_mnist()
        return _pick(ds.x_test, ds.y_test, list(ds.class_names))
    if name == "shapes":
        from ..data import shapes

        images = shapes(PER_CLASS * 12, tuple(image_size), seed=1)
        return _pick(images.x, images.y, list(images.class_names))
    return []
