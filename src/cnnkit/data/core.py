"""In-memory data sets: the :class:`Dataset` container, labelled image arrays and a stratified split.

Images stay ``uint8`` ``(N, C, H, W)`` until a :class:`~cnnkit.data.transforms.Normalize` turns a batch
into float32 (notes §12.1): 60,000 Fashion-MNIST images are 47 MB as uint8 and 188 MB as float32.
Labels are int64 class indices into ``class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, DataError, DTypeError, ShapeError


def check_images_labels(x: object, y: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``x`` is an ``(N, C, H, W)`` array and ``y`` ``N`` integer labels; return them."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{where}: images must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{where}: images must have 4 dimensions (N, C, H, W), got shape {x.shape}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise DTypeError(f"{where}: images must be uint8 or floating point, got {x.dtype}")
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DTypeError(
            f"{where}: labels must be a 1-D integer array, got dtype {y.dtype} and shape {y.shape}"
        )
    if len(y) != len(x):
        raise DataError(f"{where}: expected as many labels as images ({len(x)}), got {len(y)}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{where}: labels must be >= 0, got {int(y.min())}")
    return x, y.astype(np.int64, copy=False)


@dataclass
class Dataset:
    """A train/test pair of labelled images.

    ``x_train``/``x_test``: uint8 ``(N, C, H, W)``; ``y_train``/``y_test``: int64 ``(N,)``;
    ``class_names[k]`` names label ``k``; ``source`` says where the data came from (a folder path,
    ``"bundled subset"``, ``"shapes(...)"``). ``ds.train`` and ``ds.test`` are ``(x, y)`` tuples, ready
    for :class:`~cnnkit.data.loader.DataLoader` (which scales uint8 to [0, 1]); ``model.fit`` takes float
    images, so scale them first (``x.astype(np.float32) / 255``, notes §12.1) or pass a DataLoader.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_train, y_train)``."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample image shape ``(C, H, W)``."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Dataset(train={self.x_train.shape} {self.x_train.dtype}, test={self.x_test.shape}, "
            f"classes={self.class_names}, source={self.source!r})"
        )


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int | None = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(x, y)`` into ``(x_train, y_train, x_test, y_test)``.

    With ``stratify`` each class gives ``round(n_k * test_size)`` samples to the test part, so both parts
    keep the class proportions; which samples is a pure function of ``seed``. The samples keep their
    original relative order inside each part.
    """
    x, y = check_images_labels(x, y, "train_test_split")
    if not 0.0 <= float(test_size) < 1.0:
        raise ConfigError(f"train_test_split: test_size must be in [0, 1), got {test_size!r}")
    test_mask = split_mask(y, float(test_size), seed, stratify)
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


def split_mask(y: np.ndarray, fraction: float, seed: int | None, stratify: bool = True) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of the samples (per class when ``stratify``)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    groups = [np.flatnonzero(y == k) for k in np.unique(y)] if stratify else [np.arange(len(y))]
    for idx in groups:
        take = int(round(len(idx) * fraction))
        if take:
            mask[rng.permutation(idx)[:take]] = True
    return mask


class LabeledImages(NamedTuple):
    """Images with labels and class names, as a generator returns them: ``x, y, names = shapes(100)``."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]

    def split(self, test_size: float = 0.2, seed: int | None = 0, source: str = "arrays") -> Dataset:
        """A stratified, seeded :class:`Dataset` (see :func:`train_test_split`)."""
        x_tr, y_tr, x_te, y_te = train_test_split(self.x, self.y, test_size, seed)
        return Dataset(x_tr, y_tr, x_te, y_te, list(self.class_names), source)
