"""Checks of what ``fit``, ``evaluate`` and ``predict`` are given: the model, images, labels, batches.

Every check runs before the first step where the data allows (arrays), else on each batch as it comes (a
DataLoader), and raises a cnnkit error naming the expected and the actual value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DTypeError, ShapeError
from ..layers.base import Layer

__all__ = [
    "Batch",
    "as_images",
    "as_labels",
    "check_batch",
    "check_label_range",
    "check_model",
    "ensure_built",
    "num_classes",
    "shape_error",
]

Batch = tuple[np.ndarray, np.ndarray]


def check_model(model: Any, op: str) -> Layer:
    if not isinstance(model, Layer):
        raise ConfigError(
            f"{op}: expected a cnnkit model (a Layer such as Sequential), got {type(model).__name__}"
        )
    return model


def _is_loader(obj: Any) -> bool:
    return (
        not isinstance(obj, (np.ndarray, list, tuple, dict, str, bytes))
        and hasattr(obj, "__iter__")
        and hasattr(obj, "__len__")
    )


def as_images(x: Any, op: str, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ConfigError(
            f"{op}: {name} must be a numpy array of images or a DataLoader, got {type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(
            f"{op}: {name} must hold floats (float32 or float64), got {x.dtype}; scale pixels first, "
            f"e.g. {name} = {name}.astype(np.float32) / 255 (notes section 12: always normalise inputs)"
        )
    if x.ndim < 2:
        raise ShapeError(f"{op}: {name} needs a batch axis, (N, C, H, W) for images, got shape {x.shape}")
    return x


def as_labels(y: Any, n: int, op: str, name: str) -> np.ndarray:
    if y is None:
        raise DataError(f"{op}: labels are missing: pass y (an (N,) array of class indices) with the images")
    y = np.asarray(y)
    if y.ndim != 1:
        hint = "; for one-hot rows use y.argmax(axis=1)" if y.ndim == 2 else ""
        raise ShapeError(f"{op}: {name} must be 1-D class indices of shape ({n},), got shape {y.shape}{hint}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DTypeError(
            f"{op}: {name} must hold integer class indices, got {y.dtype}; use {name}.astype(np.int64)"
        )
    if len(y) != n:
        raise DataError(f"{op}: the images and {name} differ in length: {n} images, {len(y)} labels")
    return y.astype(np.int64, copy=False)


def check_label_range(y: np.ndarray, classes: int, op: str, name: str) -> None:
    if y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        bad = int(np.count_nonzero((y < 0) | (y >= classes)))
        raise DataError(
            f"{op}: {name} must be class indices in 0..{classes - 1} for a model with {classes} outputs, "
            f"got values from {low} to {high} ({bad} out of range)"
        )


def shape_error(op: str, name: str, expected: tuple[int, ...], got: tuple[int, ...]) -> ShapeError:
    exp = ", ".join(map(str, expected))
    hint = ""
    if len(got) == len(expected) - 1 and tuple(got) == tuple(expected[1:]):
        hint = f"; add the channel axis with {name}[:, None]"
    elif len(got) == len(expected) and sorted(got) == sorted(expected) and len(got) == 3:
        hint = "; cnnkit uses channels-first NCHW, try .transpose(0, 3, 1, 2)"
    return ShapeError(
        f"{op}: the model expects samples of shape ({exp}), i.e. {name} of shape (N, {exp}), "
        f"got samples of shape {tuple(got)}{hint}"
    )


def ensure_built(model: Layer, sample_shape: tuple[int, ...], op: str, name: str) -> None:
    if not model.built:
        model.build(tuple(int(s) for s in sample_shape))
    elif tuple(sample_shape) != tuple(model.input_shape):
        raise shape_error(op, name, tuple(model.input_shape), tuple(sample_shape))


def num_classes(model: Layer, op: str) -> int:
    out = model.output_shape
    if out is None or len(out) != 1:
        raise ShapeError(
            f"{op}: the model must output one score per class, per-sample shape (classes,), got {out}; "
            "end it with Flatten() and Dense(classes)"
        )
    if out[0] < 2:
        raise ShapeError(f"{op}: a classifier needs at least 2 outputs, the model has {out[0]}")
    return int(out[0])


def check_batch(xb: Any, yb: Any, model: Layer, classes: int | None, op: str, where: str) -> Batch:
    """Per-batch checks for data that could not be checked up front (DataLoaders)."""
    if not isinstance(xb, np.ndarray) or not np.issubdtype(xb.dtype, np.floating):
        kind = xb.dtype if isinstance(xb, np.ndarray) else type(xb).__name__
        raise DTypeError(
            f"{op}: {where} gave images of type {kind}; the network needs float arrays, "
            "e.g. x.astype(np.float32) / 255 (notes section 12: always normalise inputs)"
        )
    if tuple(xb.shape[1:]) != tuple(model.input_shape):
        raise shape_error(op, "x", tuple(model.input_shape), tuple(xb.shape[1:]))
    if classes is not None:
        if yb is None:
            raise DataError(f"{op}: {where} gave a batch without labels; it must yield (images, labels)")
        yb = np.asarray(yb)
        if yb.ndim != 1 or len(yb) != len(xb) or not np.issubdtype(yb.dtype, np.integer):
            raise DataError(
                f"{op}: {where} gave labels of shape {yb.shape} and dtype {yb.dtype} for {len(xb)} images; "
                f"expected integer class indices of shape ({len(xb)},)"
            )
        check_label_range(yb, classes, op, f"the labels from {where}")
    return xb, yb
