"""``--data`` for the ``cnnkit`` subcommands: Fashion-MNIST, the generated shapes or an image folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ._args import DATASET_NAMES
from ._models import get_zoo_model

#: Images generated for ``--data shapes`` (a fifth of them is the test split).
SHAPES_SAMPLES = 6000
#: Images of a lazy folder used to measure the ``standardize`` statistics.
NORMALIZE_SAMPLE = 2000


def data_label(spec: str) -> str:
    """The data set's short name used in the default output folder: ``runs/<model>-<label>``."""
    if spec in DATASET_NAMES:
        return spec
    return Path(spec).resolve().name or "data"


class Subset:
    """A lazy view of ``indices`` of a data set with ``__len__`` and ``load_batch`` (an ImageFolder)."""

    def __init__(self, base: Any, indices: Any) -> None:
        import numpy as np

        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def load_batch(self, indices: Any) -> Any:
        import numpy as np

        return self.base.load_batch(self.indices[np.asarray(indices, dtype=np.int64)])


@dataclass
class LoadedData:
    """A data set as the CLI uses it: splits (``(x, y)`` uint8 arrays or lazy folders) and how it was made.

    ``test`` is None for a single folder without ``--test-split`` (its held-out part is ``validation``).
    """

    name: str
    source: str
    class_names: list[str]
    image_size: tuple[int, int]
    color: str
    train: Any
    validation: Any = None
    test: Any = None
    notes: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    #: Loaded by ``evaluation=True``: ``train`` holds the images to evaluate on.
    evaluation: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1 if self.color == "grey" else 3, *self.image_size)

    def bad_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of the unreadable files skipped so far."""
        return list(self.bad)

    def sizes(self) -> dict[str, int | None]:
        return {
            "train": _length(self.train),
            "validation": _length(self.validation),
            "test": _length(self.test),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able description for metrics.json and the model file."""
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.class_names),
            "image_size": list(self.image_size),
            "color": self.color,
            "images": self.sizes(),
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        sizes = self.sizes()
        parts = [f"{sizes[k]} {k}" for k in ("train", "validation", "test") if sizes[k] is not None]
        if self.evaluation:
            parts = [str(sizes["train"])]
        shape = "x".join(map(str, self.input_shape))
        text = (
            f"data: {self.name} ({self.source}): {', '.join(parts)} images, "
            f"{len(self.class_names)} classes, {shape}"
        )
        return text + "".join(f"\n  note: {n}" for n in self.notes)


def _length(split: Any) -> int | None:
    if split is None:
        return None
    return len(split[0]) if isinstance(split, tuple) else len(split)


def _model_default_shape(model_name: str | None) -> tuple[int, int, int] | None:
    if not model_name:
        return None
    from ..models import zoo

    try:
        return tuple(zoo.info(model_name).input_shape)  # type: ignore[return-value]
    except ConfigError:
        return None


def convert_images(x: Any, image_size: tuple[int, int], color: str) -> Any:
    """Resize/convert a uint8 ``(N, C, H, W)`` batch with Pillow, as :func:`cnnkit.data.decode_image` does."""
    import numpy as np
    from PIL import Image

    want_c = 1 if color == "grey" else 3
    if x.shape[1] == want_c and tuple(x.shape[2:]) == tuple(image_size):
        return x
    h, w = image_size
    mode = "L" if color == "grey" else "RGB"
    out = np.empty((len(x), want_c, h, w), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        pil = pil.convert(mode)
        if pil.size != (w, h):
            pil = pil.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def _subset_arrays(x: Any, y: Any, limit: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    if limit >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
    return x[keep], y[keep]


def load_data(
    spec: str,
    *,
    model_name: str | None = None,
    image_size: tuple[int, int] | None = None,
    color: str | None = None,
    validation_split: float = 0.0,
    seed: int = 0,
    strict: bool = False,
    limit: int | None = None,
    on_bad_file: Any = None,
    evaluation: bool = False,
    test_split: float = 0.0,
) -> LoadedData:
    """Load ``--data``: ``fashion-mnist``, ``shapes`` or a folder.

    A folder is either one sub-folder per class, or the layout torchvision's ImageFolder users have:
    ``train/`` and ``test/`` (and optionally ``val/``), each with one sub-folder per class. Image size
    and colour default to the data's own (Fashion-MNIST 28x28 grey), else the zoo model's default input
    (folders, shapes). ``limit`` keeps a seeded random subset of the training images;
    ``validation_split`` holds out a stratified fraction of them (unless the folder has ``val/``);
    ``test_split`` holds out a stratified fraction of a single class folder as the test split. With
    ``evaluation`` only the images to evaluate on are loaded: the test split of Fashion-MNIST, shapes
    or a ``train/``+``test/`` folder, else every image of a folder (as ``train``, with no split).
    """
    default = _model_default_shape(model_name)
    if spec == "fashion-mnist":
        return _load_fashion(image_size, color, validation_split, seed, limit, evaluation)
    if spec == "shapes":
        size = image_size or ((default[1], default[2]) if default else (32, 32))
        return _load_shapes(size, color or "rgb", validation_split, seed, limit, evaluation)
    root = Path(spec)
    if not root.exists():
        raise DataError(
            f"data folder not found: {spec} (--data takes {', '.join(DATASET_NAMES)} or a folder with one "
            "sub-folder of images per class)"
        )
    if not root.is_dir():
        raise DataError(f"--data must be a folder with one sub-folder per class, got a file: {spec}")
    size = image_size or ((default[1], default[2]) if default else (64, 64))
    if color is None:
        color = "grey" if default and default[0] == 1 else "rgb"
    if _split_layout(root):
        data = _load_split_folders(
            root, size, color, validation_split, seed, strict, limit, on_bad_file, evaluation
        )
    else:
        data = _load_folder(
            root,
            size,
            color,
            0.0 if evaluation else validation_split,
            seed,
            strict,
            limit,
            on_bad_file,
            0.0 if evaluation else test_split,
        )
    data.evaluation = evaluation
    return data


#: Folder names of the ``train/`` + ``test/`` (+ validation) layout.
SPLIT_NAMES = {"train": ("train",), "test": ("test",), "validation": ("val", "valid", "validation")}


def _split_layout(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "test": ..., ["validation": ...]}`` when ``root`` has ``train/`` and ``test/``."""
    found = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    if "train" in found and "test" in found:
        return found
    return None


def _load_fashion(
    image_size: tuple[int, int] | None,
    color: str | None,
    validation_split: float,
    seed: int,
    limit: int | None,
    evaluation: bool,
) -> LoadedData:
    from ..data import fashion_mnist

    ds = fashion_mnist()
    size = tuple(image_size or (28, 28))
    color = color or "grey"
    notes = []
    if ds.source == "bundled subset":
        notes.append(
            "the full Fashion-MNIST was not found; using the 8,000 + 2,000 image subset bundled with cnnkit"
        )
    if size != (28, 28) or color != "grey":
        notes.append(f"images converted from 28x28 grey to {size[0]}x{size[1]} {color}")
    data = LoadedData("fashion-mnist", ds.source, list(ds.class_names), size, color, None, notes=notes)
    if evaluation:
        data.source += ", test split"
    return _split_arrays(data, ds, validation_split, seed, limit, evaluation)


def _load_shapes(
    size: tuple[int, int], color: str, validation_split: float, seed: int, limit: int | None, evaluation: bool
) -> LoadedData:
    from ..data import shapes

    images = shapes(SHAPES_SAMPLES, size, seed=seed)
    ds = images.split(0.2, seed=seed)
    source = f"shapes({SHAPES_SAMPLES}, {size[0]}x{size[1]}, seed={seed}), test split 20%"
    data = LoadedData("shapes", source, list(ds.class_names), tuple(size), color, None)
    return _split_arrays(data, ds, validation_split, seed, limit, evaluation)


def _split_arrays(
    data: LoadedData, ds: Any, validation_split: float, seed: int, limit: int | None, evaluation: bool
) -> LoadedData:
    """Fill ``data`` from an in-memory train/test Dataset: its test split for evaluation; otherwise the
    (optionally ``limit``-ed) training images, less a seeded stratified validation split, plus the test split.
    """
    from ..data import train_test_split

    size, color = data.image_size, data.color
    data.test = (convert_images(ds.x_test, size, color), ds.y_test)
    if evaluation:
        data.train, data.test, data.evaluation = data.test, None, True
        return data
    x, y = ds.x_train, ds.y_train
    if limit:
        x, y = _subset_arrays(x, y, limit, seed)
    x = convert_images(x, size, color)
    if validation_split > 0:
        x, y, xv, yv = train_test_split(x, y, validation_split, seed)
        data.validation = (xv, yv)
    data.train = (x, y)
    return data


#: Folders up to this many files are decoded in full before training, so that the opening counts are
#: final (a truncated file is found now, not mid-epoch); larger ones only have their headers read.
FULL_CHECK_FILES = 10_000


def _count_files(root: Path) -> int:
    return sum(1 for q in root.rglob("*") if q.is_file())


def _open_folder(
    root: Path,
    size: Any,
    color: str,
    split: float,
    seed: int,
    strict: bool,
    record: Any,
    notes: list[str] | None = None,
) -> Any:
    from ..data import image_folder

    check = "full" if _count_files(root) <= FULL_CHECK_FILES else "header"
    if check == "header" and notes is not None:
        notes.append(
            f"{root}: more than {FULL_CHECK_FILES:,} files, so only their headers were checked up front; "
            "a file damaged further in is skipped when it is decoded (metrics.json lists it)"
        )
    return image_folder(root, size, color, split, seed, check=check, strict=strict, on_bad_file=record)


def _limited(train: Any, limit: int | None, seed: int) -> Any:
    import numpy as np

    if limit and limit < len(train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:limit])
        return Subset(train, keep)
    return train


def _bad_recorder(on_bad_file: Any) -> tuple[list[tuple[str, str]], Any]:
    bad: list[tuple[str, str]] = []

    def record(path: str, reason: str) -> None:
        bad.append((path, reason))
        if on_bad_file is not None:
            on_bad_file(path, reason)

    return bad, record


def _load_folder(
    root: Path,
    size: tuple[int, int],
    color: str,
    validation_split: float,
    seed: int,
    strict: bool,
    limit: int | None,
    on_bad_file: Any,
    test_split: float = 0.0,
) -> LoadedData:
    """One folder of class sub-folders: ``test_split`` of each class held out as the test split, then
    ``validation_split`` of the rest (both stratified and seeded)."""
    from ..data.core import split_mask

    if not 0.0 <= test_split < 1.0 or validation_split + test_split >= 1.0:
        raise ConfigError(
            f"--test-split {test_split} and --validation-split {validation_split} leave no training images"
        )
    bad, record = _bad_recorder(on_bad_file)
    first = test_split if test_split > 0 else validation_split
    notes: list[str] = []
    split = _open_folder(root, size, color, first, seed, strict, record, notes)
    train, validation, test = split.train, split.validation, None
    if test_split > 0:
        test, validation = split.validation, None
        notes.append(f"{test_split:g} of each class held out as the test split (--test-split)")
        if validation_split > 0:
            fraction = validation_split / (1.0 - test_split)
            mask = split_mask(train.labels, fraction, seed + 1)
            validation = train.select(mask.nonzero()[0])
            train = train.select((~mask).nonzero()[0])
    return LoadedData(
        root.name or str(root),
        str(root),
        list(split.train.class_names),
        tuple(size),
        color,
        _limited(train, limit, seed),
        validation=validation,
        test=test,
        notes=notes,
        bad=bad,
    )


def _load_split_folders(
    root: Path,
    size: tuple[int, int],
    color: str,
    validation_split: float,
    seed: int,
    strict: bool,
    limit: int | None,
    on_bad_file: Any,
    evaluation: bool,
) -> LoadedData:
    """The ``train/`` + ``test/`` (+ ``val/``) layout; the test and validation classes must be training
    classes (their labels are re-indexed to the training folder's class order)."""
    layout = _split_layout(root)
    assert layout is not None
    bad, record = _bad_recorder(on_bad_file)
    notes: list[str] = []
    train_part = _open_folder(layout["train"], size, color, 0.0, seed, strict, record, notes).train
    names = list(train_part.class_names)
    test = _open_folder(layout["test"], size, color, 0.0, seed, strict, record, notes).train.relabel(names)
    data = LoadedData(
        root.name or str(root), str(root), names, tuple(size), color, None, notes=notes, bad=bad
    )
    if evaluation:
        data.source += f", {layout['test'].name}/"
        data.train = test
        return data
    data.test = test
    folders = f"{layout['train'].name}/ + {layout['test'].name}/"
    if "validation" in layout:
        val = _open_folder(layout["validation"], size, color, 0.0, seed, strict, record, notes).train
        data.validation = val.relabel(names)
        data.train = train_part
        folders += f" + {layout['validation'].name}/"
    elif validation_split > 0:
        from ..data.core import split_mask

        mask = split_mask(train_part.labels, validation_split, seed)
        data.validation = train_part.select(mask.nonzero()[0])
        data.train = train_part.select((~mask).nonzero()[0])
    else:
        data.train = train_part
    data.train = _limited(data.train, limit, seed)
    data.notes.append(f"folders {folders}")
    return data


def build_for_data(model_name: str, data: LoadedData, seed: int | None = None) -> Any:
    """The zoo model for the data's input shape and number of classes."""
    return get_zoo_model(
        model_name, num_classes=len(data.class_names), input_shape=data.input_shape, seed=seed
    )


def fit_normalize(normalize: Any, train: Any, seed: int = 0) -> Any:
    """Fit ``standardize`` statistics on the training images (a seeded sample of a lazy folder)."""
    import numpy as np

    if normalize.mode != "standardize":
        return normalize
    if isinstance(train, tuple):
        return normalize.fit(train[0])
    if len(train) > NORMALIZE_SAMPLE:
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:NORMALIZE_SAMPLE])
        train = Subset(train, keep)
    return normalize.fit(train)
