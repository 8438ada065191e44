"""The data floor: data sets that work offline, batching with prefetch, normalisation, augmentation.

Imports only NumPy, Pillow and cnnkit's errors/utils.

- :mod:`cnnkit.data.datasets` (``cnnkit.datasets``): :func:`fashion_mnist`, :func:`shapes`,
  :func:`image_folder`, the :class:`Dataset` container and :func:`train_test_split`;
- :mod:`cnnkit.data.loader`: :class:`DataLoader` (shuffling per (seed, epoch), prefetch thread);
- :mod:`cnnkit.data.transforms`: :class:`Normalize` (notes §12.1);
- :mod:`cnnkit.data.augment`: :class:`Augment`, :func:`hflip`, :func:`rotate`, :func:`warp_affine`
  (notes §12.2);
- :mod:`cnnkit.data.idx`: reading and writing IDX files.
"""

from . import datasets
from .augment import Augment, affine_inverse_maps, hflip, rotate, warp_affine
from .core import Dataset, LabeledImages, train_test_split
from .datasets import FASHION_MNIST_CLASSES, fashion_mnist, find_fashion_mnist
from .folder import BadFileWarning, FolderSplit, ImageFolder, decode_image, image_folder
from .idx import read_idx, read_idx_images, read_idx_labels, read_idx_pair, write_idx
from .loader import DataLoader
from .shapes import SHAPES, shapes
from .transforms import Normalize

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
    "SHAPES",
    "affine_inverse_maps",
    "datasets",
    "decode_image",
    "fashion_mnist",
    "find_fashion_mnist",
    "hflip",
    "image_folder",
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
