"""Data adapters (Keras's term): arrays and DataLoaders as one kind of per-epoch batch iterator.

Every adapter has ``len()`` (batches per epoch), ``num_samples`` (or None) and ``batches(epoch)``, an
iterator of ``(images, labels)`` for that epoch. ``checked`` tells whether its batches were checked up
front (arrays) or must be checked one by one (a DataLoader).

**One shuffling recipe.** With ``shuffle``, epoch ``e`` of arrays visits the samples in
:func:`cnnkit.utils.random.epoch_order` ``(seed, e)``, the permutation :class:`cnnkit.data.DataLoader`
draws for its own seed: ``fit(x, y, seed=s, batch_size=b)`` and ``fit(DataLoader((x, y), b, seed=s))``
see the same batches in the same order (float32 images).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DTypeError
from ..layers.base import Layer
from ..utils.random import epoch_order
from .inputs import Batch, as_images, as_labels, check_label_range, shape_error

__all__ = [
    "ArrayAdapter",
    "DataAdapter",
    "LoaderAdapter",
    "first_batch_checked",
    "is_loader",
    "make_adapter",
    "split_validation",
    "unpack_pair",
    "validation_adapter",
]


def is_loader(obj: Any) -> bool:
    """True for a DataLoader-like object: iterable with a length, and not an array or a container."""
    return (
        not isinstance(obj, (np.ndarray, list, tuple, dict, str, bytes))
        and hasattr(obj, "__iter__")
        and hasattr(obj, "__len__")
    )


class ArrayAdapter:
    """Batches of in-memory arrays; the order of epoch ``e`` is :func:`epoch_order` ``(seed, e)``."""

    checked = True

    def __init__(
        self, x: np.ndarray, y: np.ndarray | None, batch_size: int, shuffle: bool, seed: int
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray | None:
        """The sample order of ``epoch`` (None: in order)."""
        if not self.shuffle:
            return None
        return epoch_order(self.seed, epoch, len(self.x))

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.order(epoch)
        n, bs = len(self.x), self.batch_size
        for start in range(0, n, bs):
            idx: Any = slice(start, start + bs) if order is None else order[start : start + bs]
            yield self.x[idx], (self.y[idx] if self.y is not None else None)


class LoaderAdapter:
    """A DataLoader: ``set_epoch(e)`` before each pass, batches as it yields them (checked one by one)."""

    checked = False

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    @property
    def num_samples(self) -> int | None:
        n = getattr(self.loader, "num_samples", None)
        return int(n) if n is not None else None

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int) -> Iterator[Batch]:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        iterator = iter(self.loader)
        try:
            for item in iterator:
                if isinstance(item, (tuple, list)):
                    yield item[0], (item[1] if len(item) > 1 else None)
                else:
                    yield item, None
        finally:
            close = getattr(iterator, "close", None)  # stop a prefetch thread now, not at garbage collection
            if close is not None:
                close()

    def first(self, epoch: int) -> Batch:
        """The first batch of ``epoch`` (to check shapes before training)."""
        iterator = self.batches(epoch)
        try:
            return next(iterator)
        except StopIteration:
            raise DataError("the DataLoader yielded no batches") from None
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


DataAdapter = ArrayAdapter | LoaderAdapter


def unpack_pair(x: Any, y: Any) -> tuple[Any, Any]:
    """``fit(model, (x, y))`` as ``fit(model, x, y)`` (a data set's ``train`` pair)."""
    if y is None and isinstance(x, tuple) and len(x) == 2 and all(isinstance(a, np.ndarray) for a in x):
        return x
    return x, y


def make_adapter(
    x: Any,
    y: Any,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    op: str,
    name: str,
    labels: bool = True,
    where: str | None = None,
) -> DataAdapter:
    """The adapter for ``x`` (arrays or a DataLoader) with labels ``y``, checked as far as possible."""
    if is_loader(x):
        if y is not None:
            raise ConfigError(f"{op}: {name} is a DataLoader, which yields its own labels; do not pass y")
        if len(x) == 0:
            raise DataError(f"{op}: the DataLoader given as {where or name} is empty (0 batches)")
        return LoaderAdapter(x)
    images = as_images(x, op, name)
    if len(images) == 0 and labels:
        raise DataError(f"{op}: {where or name} is empty (0 samples)")
    targets = as_labels(y, len(images), op, "y" if name == "x" else f"{name} labels") if labels else None
    return ArrayAdapter(images, targets, batch_size, shuffle, seed)


def split_validation(x: Any, y: Any, validation_split: float, validation_data: Any) -> tuple[Any, Any, Any]:
    """Keras semantics: the last ``validation_split`` fraction of (x, y), taken before any shuffling."""
    if not validation_split:
        return x, y, validation_data
    if validation_data is not None:
        raise ConfigError("fit: give either validation_data or validation_split, not both")
    if is_loader(x):
        raise ConfigError(
            "fit: validation_split needs arrays; with a DataLoader pass validation_data=<another DataLoader>"
        )
    x = as_images(x, "fit", "x")
    y = as_labels(y, len(x), "fit", "y")
    n = len(x)
    split_at = int(n * (1.0 - validation_split))
    if split_at < 1 or split_at >= n:
        raise DataError(
            f"fit: validation_split={validation_split} of {n} samples leaves {split_at} for training and "
            f"{n - split_at} for validation; both need at least 1"
        )
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])


def validation_adapter(
    validation_data: Any, batch_size: int, model: Layer, classes: int
) -> DataAdapter | None:
    """The adapter of ``fit``'s ``validation_data`` (a pair or a DataLoader), checked against the model."""
    if validation_data is None:
        return None
    kw: dict[str, Any] = dict(batch_size=batch_size, shuffle=False, seed=0, op="fit", name="validation_data")
    if is_loader(validation_data):
        return make_adapter(validation_data, None, **kw)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ConfigError(
            "fit: validation_data must be a pair (x_val, y_val) or a DataLoader, "
            f"got {type(validation_data).__name__}"
            + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else "")
        )
    xv, yv = validation_data
    adapter = make_adapter(xv, yv, **kw)
    assert isinstance(adapter, ArrayAdapter)
    if tuple(adapter.x.shape[1:]) != tuple(model.input_shape):
        raise shape_error("fit", "validation_data x", tuple(model.input_shape), tuple(adapter.x.shape[1:]))
    assert adapter.y is not None
    check_label_range(adapter.y, classes, "fit", "validation labels")
    return adapter


def first_batch_checked(adapter: LoaderAdapter, model: Layer, op: str) -> Batch:
    """The loader's first batch, as numpy arrays (for building the model before training)."""
    xb, yb = adapter.first(0)
    if not isinstance(xb, np.ndarray):
        raise DTypeError(f"{op}: the DataLoader must yield numpy arrays, got {type(xb).__name__}")
    return xb, yb
