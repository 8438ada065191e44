"""Data sets that work offline (exported as ``cnnkit.datasets``).

- :func:`fashion_mnist`: Zalando's Fashion-MNIST (70,000 grey 28x28 images of clothing, 10 classes,
  MIT licence, (c) 2017 Zalando SE), read from the original IDX files on disk, or a class-balanced
  subset that ships inside cnnkit when no copy is installed.
- :func:`shapes`: a seeded generator of RGB images of simple shapes, any size (notes §5 and §9).
- :func:`image_folder`: your own photos, one sub-folder per class, decoded lazily (notes §9).

One API for arrays: a :class:`~cnnkit.data.core.Dataset` with ``x_train, y_train, x_test, y_test,
class_names, source`` (images uint8 ``(N, C, H, W)``, labels int64). Generators return
:class:`~cnnkit.data.core.LabeledImages` ``(x, y, class_names)`` whose ``.split(test_size)`` gives a
``Dataset``; :func:`train_test_split` splits any arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .core import Dataset, LabeledImages, train_test_split
from .folder import FolderSplit, ImageFolder, image_folder
from .idx import read_idx_pair
from .shapes import SHAPES, shapes

__all__ = [
    "Dataset",
    "LabeledImages",
    "FolderSplit",
    "ImageFolder",
    "FASHION_MNIST_CLASSES",
    "SHAPES",
    "fashion_mnist",
    "find_fashion_mnist",
    "image_folder",
    "shapes",
    "train_test_split",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The class-balanced subset shipped with cnnkit (made by tools/make_fashion_subset.py).
ASSETS_DIR = Path(__file__).resolve().parent / "_assets"
BUNDLED_PREFIX = "fashion-mnist-subset-"
BUNDLED_SOURCE = "bundled subset"

FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _files_in(folder: Path, prefix: str = "") -> list[Path] | None:
    """The four files in ``folder`` (``.gz`` or raw), None when none is there; DataError when some are."""
    found: list[Path | None] = []
    for base in FASHION_FILES:
        hit = next(
            (
                folder / f"{prefix}{base}{ext}"
                for ext in (".gz", "")
                if (folder / f"{prefix}{base}{ext}").is_file()
            ),
            None,
        )
        found.append(hit)
    if all(f is None for f in found):
        return None
    missing = [f"{prefix}{b}[.gz]" for b, f in zip(FASHION_FILES, found, strict=True) if f is None]
    if missing:
        raise DataError(
            f"fashion_mnist: {folder} holds only part of Fashion-MNIST; missing {', '.join(missing)}"
        )
    return [f for f in found if f is not None]


def _search(folder: Path) -> tuple[Path, list[Path]] | None:
    for candidate in (folder, folder / "fashion-mnist"):
        if candidate.is_dir():
            files = _files_in(candidate)
            if files is not None:
                return candidate, files
    return None


def find_fashion_mnist(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding the full Fashion-MNIST files, or None (search order as :func:`fashion_mnist`)."""
    if path is not None:
        found = _search(Path(path))
        return None if found is None else found[0]
    for folder in _default_places():
        found = _search(folder)
        if found is not None:
            return found[0]
    return None


def _default_places() -> list[Path]:
    places = []
    env = os.environ.get("CNNKIT_DATA")
    if env:
        places.append(Path(env))
    places.append(DEFAULT_FASHION_DIR)
    return places


def fashion_mnist(path: str | os.PathLike[str] | None = None, subset: bool | None = None) -> Dataset:
    """Load Fashion-MNIST: ``x`` uint8 ``(N, 1, 28, 28)``, ``y`` int64 in ``0..9``.

    Where from:

    1. ``path``, when given: a folder with ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
       ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the uncompressed files),
       directly or in its ``fashion-mnist/`` sub-folder; a :class:`~cnnkit.errors.DataError` if absent;
    2. else ``$CNNKIT_DATA`` (directly or its ``fashion-mnist/`` sub-folder);
    3. else ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``);
    4. else the class-balanced subset bundled with cnnkit: 8,000 training and 2,000 test images
       (800 / 200 per class) drawn from the original files.

    ``subset=True`` always uses the bundled subset; ``subset=False`` refuses it (a DataError when no full
    copy is found); None (default) falls back to it. ``Dataset.source`` names the folder used or says
    ``"bundled subset"``. Corrupt files raise :class:`~cnnkit.errors.FileFormatError` naming the file.
    60,000 training and 10,000 test images: 47 MB + 7.8 MB as uint8.
    """
    if subset is True:
        return _load_bundled()
    if path is not None:
        found = _search(Path(path))
        if found is None:
            raise DataError(
                f"fashion_mnist: no Fashion-MNIST files in {path} or {Path(path) / 'fashion-mnist'} "
                f"(expected {', '.join(f + '.gz' for f in FASHION_FILES)})"
            )
        return _load(found[1], str(found[0]))
    for folder in _default_places():
        found = _search(folder)
        if found is not None:
            return _load(found[1], str(found[0]))
    if subset is False:
        places = ", ".join(str(p) for p in _default_places())
        raise DataError(f"fashion_mnist: no full copy found (searched {places}; set $CNNKIT_DATA)")
    return _load_bundled()


def _load(files: list[Path], source: str) -> Dataset:
    x_train, y_train = read_idx_pair(files[0], files[1], num_classes=10, image_shape=(28, 28))
    x_test, y_test = read_idx_pair(files[2], files[3], num_classes=10, image_shape=(28, 28))
    return Dataset(x_train, y_train, x_test, y_test, list(FASHION_MNIST_CLASSES), source)


def _load_bundled() -> Dataset:
    files = _files_in(ASSETS_DIR, BUNDLED_PREFIX)
    if files is None:
        raise DataError(f"fashion_mnist: the bundled subset is missing from {ASSETS_DIR} (broken install?)")
    return _load(files, BUNDLED_SOURCE)
