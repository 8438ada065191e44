"""The data floor: data sets that work offline, batching with prefetch, normalisation, augmentation.

Imports only NumPy, Pillow and cnnkit's errors/utils.

- :mod:`cnnkit.data.datasets` (``cnnkit.datasets``): :func:`fashion_mnist`, :func:`shapes`,
  :func:`image_folder`, the :class:`Dataset` container and :func:`train_test_split`;
- :mod:`cnnkit.data.loader`: :class:`DataLoader` (shuffling per (seed, epoch), prefetch thread);
- :mod:`cnnkit.data.transforms`: :class:`Normalize` (notes §12.1);
- :mod:`cnnkit.data.preprocess`: :class:`Preprocess` (image file -> model input, saved in model files)
  and :func:`load_image_for`;
- :mod:`cnnkit.data.augment`: :class:`Augment`, :func:`hflip`, :func:`rotate`, :func:`warp_affine`
  (notes §12.2);
- :mod:`cnnkit.data.idx`: reading and writing IDX files.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names are imported on first use
    from . import datasets
    from .augment import Augment, affine_inverse_maps, hflip, rotate, warp_affine
    from .core import Dataset, LabeledImages, train_test_split
    from .datasets import FASHION_MNIST_CLASSES, fashion_mnist, find_fashion_mnist
    from .folder import BadFileWarning, FolderSplit, ImageFolder, decode_image, image_folder
    from .idx import read_idx, read_idx_images, read_idx_labels, read_idx_pair, write_idx
    from .loader import DataLoader
    from .preprocess import Preprocess, load_image_for
    from .shapes import SHAPES, shapes
    from .transforms import Normalize

#: Public name -> the submodule defining it. Importing ``cnnkit.data`` (or one submodule, such as
#: ``cnnkit.data.folder`` for ``cnnkit predict``) imports nothing else: each name's submodule is imported
#: the first time the name is looked up (PEP 562), so the loader's threads, gzip or the augmentation
#: code are only loaded by the programs that use them.
_LAZY: dict[str, str] = {
    "datasets": "",
    "Augment": "augment",
    "affine_inverse_maps": "augment",
    "hflip": "augment",
    "rotate": "augment",
    "warp_affine": "augment",
    "Dataset": "core",
    "LabeledImages": "core",
    "train_test_split": "core",
    "FASHION_MNIST_CLASSES": "datasets",
    "fashion_mnist": "datasets",
    "find_fashion_mnist": "datasets",
    "BadFileWarning": "folder",
    "FolderSplit": "folder",
    "ImageFolder": "folder",
    "decode_image": "folder",
    "image_folder": "folder",
    "read_idx": "idx",
    "read_idx_images": "idx",
    "read_idx_labels": "idx",
    "read_idx_pair": "idx",
    "write_idx": "idx",
    "DataLoader": "loader",
    "SHAPES": "shapes",
    "shapes": "shapes",
    "Normalize": "transforms",
    "Preprocess": "preprocess",
    "load_image_for": "preprocess",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access and cache the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "":  # a submodule itself
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps a public name that is also a submodule's name (``shapes``) bound to the function.

    Importing a submodule sets it as an attribute of the package (``cnnkit.data.shapes`` = the module,
    e.g. when :mod:`cnnkit.data.datasets` imports it); the eager package used to rebind the name to the
    function right after, which this does at the moment of the import instead.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Augment",
    "BadFileWarning",
    "DataLoader",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "FolderSplit",
    "ImageFolder",
    "LabeledImages",
    "Normalize",
    "Preprocess",
    "SHAPES",
    "affine_inverse_maps",
    "datasets",
    "decode_image",
    "fashion_mnist",
    "find_fashion_mnist",
    "hflip",
    "image_folder",
    "load_image_for",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_idx_pair",
    "rotate",
    "shapes",
    "train_test_split",
    "warp_affine",
    "write_idx",
]
