"""Mini-batches with a background prefetch thread.

``DataLoader((x, y), 64)`` or ``DataLoader(image_folder_dataset, 64)`` yields ``(xb, yb)``: ``xb``
float32 ``(B, C, H, W)``, ``yb`` int64 ``(B,)``. Per batch it takes the raw images (uint8), applies
``augment`` (random geometry, :class:`~cnnkit.data.augment.Augment`), then ``transform`` (by default
``Normalize("unit")``, i.e. ``x / 255``, for uint8 images; float images are only cast to float32).

Order: epoch ``e`` visits the samples in the permutation drawn from ``(seed, e)`` alone, and the
augmentation of batch ``b`` uses a generator seeded by ``(seed, e, b)``; so a run resumed at epoch
``e`` (``loader.set_epoch(e)``) sees exactly the batches the interrupted run would have seen. Each
``iter(loader)`` uses the current epoch and then advances it, so calling ``set_epoch`` is optional.

Prefetch: a daemon thread prepares up to ``prefetch`` batches ahead into a bounded queue (Pillow
decoding and NumPy work release the GIL, so they overlap with the model's compute). Memory stays
bounded by ``prefetch + 2`` batches. When the consumer stops early (``break``, an exception,
``KeyboardInterrupt``) the iterator is closed, the thread is told to stop and is joined; errors in the
thread (a :class:`~cnnkit.errors.DataError` from a strict image folder, say) are re-raised in the
consumer. ``prefetch=0`` prepares batches in the calling thread.
"""

from __future__ import annotations

import inspect
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DTypeError
from ..utils.checks import check_int
from ..utils.random import epoch_order, global_rng
from .core import check_images_labels
from .transforms import Normalize

Batch = tuple[np.ndarray, np.ndarray]
_POLL_S = 0.05
_JOIN_S = 10.0
_THREAD_NAME = "cnnkit-prefetch"


class _ArraySource:
    """In-memory ``(x, y)`` arrays with the lazy-dataset protocol (``__len__``, ``load_batch``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def load_batch(self, indices: np.ndarray) -> Batch:
        return self.x[indices], self.y[indices]


def _as_source(data: Any) -> Any:
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"DataLoader: expected an (x, y) pair, got a sequence of length {len(data)}")
        x, y = check_images_labels(data[0], data[1], "DataLoader")
        return _ArraySource(x, y)
    if hasattr(data, "load_batch") and hasattr(data, "__len__"):
        return data
    raise DTypeError(
        "DataLoader: expected an (x, y) pair of arrays or a dataset with load_batch (image_folder), "
        f"got {type(data).__name__}"
    )


def _accepts_rng(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "rng" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _int_arg(value: Any, name: str, minimum: int) -> int:
    return check_int(value, name, "DataLoader", minimum)


class DataLoader:
    """Iterate over mini-batches of a data set; see the module docstring.

    Parameters
    ----------
    data: ``(x, y)`` arrays (``x`` uint8 or float ``(N, C, H, W)``, ``y`` integer ``(N,)``) or a lazy
        data set with ``__len__`` and ``load_batch(indices) -> (x, y)`` such as
        :class:`~cnnkit.data.folder.ImageFolder`.
    batch_size: samples per batch (>= 1); the last batch may be smaller unless ``drop_last``.
    shuffle: visit the samples in a new seeded permutation each epoch (else in order).
    seed: seed of the shuffle and augmentation; None draws one from the global generator
        (:func:`cnnkit.set_seed`) once, at construction.
    transform: callable applied to each (augmented) batch, e.g. ``Normalize("standardize").fit(x)``;
        None means ``x / 255`` for uint8 and a float32 cast for float input.
    augment: callable applied to the raw batch, e.g. ``Augment(...)``; when it takes an ``rng`` keyword
        it gets a generator seeded by ``(seed, epoch, batch number, augment.seed)``.
    prefetch: batches prepared ahead in a background thread (0: no thread).
    drop_last: drop the final incomplete batch.

    A lazy data set that skips unreadable files (:func:`~cnnkit.data.folder.image_folder`) yields
    batches that are short by the files it skipped; ``len(loader)`` is then an upper bound.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = 0,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        augment: Callable[..., np.ndarray] | None = None,
        prefetch: int = 2,
        drop_last: bool = False,
    ) -> None:
        self.batch_size = _int_arg(batch_size, "batch_size", 1)
        self.prefetch = _int_arg(prefetch, "prefetch", 0)
        for name, fn in (("transform", transform), ("augment", augment)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"DataLoader: {name} must be callable, got {type(fn).__name__}")
        self.source = _as_source(data)
        self.shuffle = bool(shuffle)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ConfigError(f"DataLoader: seed must be an int >= 0 or None, got {seed!r}")
        self.seed = int(global_rng().integers(2**31)) if seed is None else int(seed)
        self.transform = transform
        self.augment = augment
        self._augment_takes_rng = augment is not None and _accepts_rng(augment)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._default_transform = Normalize("unit")

    @property
    def dataset(self) -> Any:
        """The underlying data set (arrays are wrapped in an object with ``x`` and ``y``)."""
        return self.source

    @property
    def num_samples(self) -> int:
        """Samples in the data set (those visited per epoch, minus a dropped last batch)."""
        return len(self.source)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use epoch ``epoch``'s order (a pure function of ``(seed, epoch)``)."""
        self.epoch = _int_arg(epoch, "epoch", 0)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices visited in ``epoch``, in order."""
        n = self.num_samples
        if not self.shuffle:
            return np.arange(n)
        return epoch_order(self.seed, epoch, n)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The index arrays of the batches of ``epoch``."""
        order = self.order(epoch)
        stop = len(self) * self.batch_size
        return [
            order[s : min(s + self.batch_size, stop, len(order))] for s in range(0, stop, self.batch_size)
        ]

    def _make_batch(self, epoch: int, number: int, indices: np.ndarray) -> Batch | None:
        xb, yb = self.source.load_batch(indices)
        if len(xb) == 0:
            return None  # every file of the batch was unreadable (already reported)
        if self.augment is not None and self._augment_takes_rng:
            aug_seed = getattr(self.augment, "seed", None)
            key = [self.seed, int(epoch), int(number)]
            if isinstance(aug_seed, (int, np.integer)):
                key.append(int(aug_seed) & 0xFFFFFFFFFFFFFFFF)
            xb = self.augment(xb, rng=np.random.default_rng(key))
        elif self.augment is not None:
            xb = self.augment(xb)
        if self.transform is not None:
            xb = self.transform(xb)
        elif xb.dtype == np.uint8:
            xb = self._default_transform(xb)
        else:
            xb = xb.astype(np.float32, copy=False)
        return xb, np.asarray(yb, dtype=np.int64)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        batches = self.batch_indices(epoch)
        if self.prefetch == 0:
            return self._iter_sync(epoch, batches)
        return self._iter_prefetch(epoch, batches)

    def _iter_sync(self, epoch: int, batches: list[np.ndarray]) -> Iterator[Batch]:
        for number, indices in enumerate(batches):
            batch = self._make_batch(epoch, number, indices)
            if batch is not None:
                yield batch

    def _iter_prefetch(self, epoch: int, batches: list[np.ndarray]) -> Iterator[Batch]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for number, indices in enumerate(batches):
                    if stop.is_set():
                        return
                    batch = self._make_batch(epoch, number, indices)
                    if batch is not None and not put(batch):
                        return
                put(done)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(exc)

        thread = threading.Thread(target=produce, name=_THREAD_NAME, daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = q.get(timeout=_POLL_S)
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        raise RuntimeError("DataLoader: the prefetch thread ended unexpectedly") from None
                    continue
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            thread.join(timeout=_JOIN_S)

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.num_samples} samples, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, seed={self.seed}, prefetch={self.prefetch})"
        )
