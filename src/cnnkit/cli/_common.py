"""Helpers shared by the ``cnnkit`` subcommands: argument parsing, tables, output guards, preprocessing.

Only the standard library is imported at module level; NumPy, Pillow and the rest of cnnkit are imported
inside the functions that need them, so ``cnnkit --help`` stays fast and ``cnnkit predict`` pulls in no
more than NumPy, Pillow, cnnkit's ops, layers and io, and the two modules of :mod:`cnnkit.data` it
preprocesses with (``folder``, ``transforms``: the package's ``__init__`` imports nothing eagerly).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

#: Image file suffixes ``cnnkit predict`` picks up from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: Names accepted by ``--data`` besides a folder path.
DATASET_NAMES = ("fashion-mnist", "shapes")

#: ``--augment`` presets: keyword arguments for :class:`cnnkit.data.Augment`.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "light": {"rotation": 10.0, "translate": 0.1},
    "standard": {"rotation": 15.0, "flip": True, "zoom": 0.1, "translate": 0.1},
    "strong": {"rotation": 30.0, "flip": True, "zoom": 0.2, "translate": 0.15},
}

#: Default strength of a bare ``--augment`` flag such as ``rotation`` or ``zoom``.
AUGMENT_DEFAULTS: dict[str, Any] = {"rotation": 15.0, "flip": True, "zoom": 0.1, "translate": 0.1}


# ----------------------------------------------------------------------------------------- argument types
def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` (or ``1x28x28``) -> ``(1, 28, 28)``; for ``--input-shape``."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--input-shape: expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input-shape: expected three positive integers C,H,W, got {text!r}")
    return shape


def parse_image_size(text: str) -> tuple[int, int]:
    """``"28"`` -> ``(28, 28)``; ``"32,48"`` or ``"32x48"`` -> ``(32, 48)`` (height, width)."""
    parts = [p for p in text.lower().replace("x", ",").replace(" ", "").split(",") if p]
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--image-size: expected SIZE or H,W such as 28 or 32,48, got {text!r}") from None
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"--image-size: expected one or two positive integers, got {text!r}")
    return size  # type: ignore[return-value]


def parse_augment(text: str | None) -> dict[str, Any]:
    """Keyword arguments for :class:`cnnkit.data.Augment` from ``--augment``.

    ``text`` is a preset (``none``, ``light``, ``standard``, ``strong``) or a comma-separated list of
    ``rotation[=DEGREES]``, ``flip``, ``zoom[=FRACTION]``, ``translate[=FRACTION]``; for example
    ``rotation=10,flip``. An empty result means no augmentation.
    """
    if text is None:
        return {}
    spec = text.strip().lower()
    if spec in AUGMENT_PRESETS:
        return dict(AUGMENT_PRESETS[spec])
    out: dict[str, Any] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in AUGMENT_DEFAULTS:
            raise ConfigError(
                f"--augment: unknown item {key!r}; use a preset ({', '.join(AUGMENT_PRESETS)}) or "
                "a comma-separated list of rotation[=DEG], flip, zoom[=F], translate[=F]"
            )
        if key == "flip":
            if value not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigError(f"--augment: flip takes no value or true/false, got {value!r}")
            out["flip"] = value in ("", "1", "true", "yes", "on")
            continue
        if not value:
            out[key] = AUGMENT_DEFAULTS[key]
            continue
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--augment: {key} needs a number, got {value!r}") from None
        limits = {
            "rotation": (number >= 0, "a non-negative angle in degrees"),
            "zoom": (0 <= number < 1, "a fraction in [0, 1)"),
            "translate": (number >= 0, "a fraction of the image size below 1, or whole pixels"),
        }
        ok, need = limits[key]
        if not ok:
            raise ConfigError(f"--augment: {key} must be {need}, got {value}")
        out[key] = number
    return out


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser raising ConfigError as an argparse ``type`` (argparse then prints its message)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


# ----------------------------------------------------------------------------------------- files
def require_path(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``Path(path)`` or raise a clear error when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    return p


def guard_outputs(paths: Iterable[Path], force: bool) -> None:
    """Refuse to overwrite existing files unless ``force``; the message lists them."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"output file(s) already exist: {', '.join(existing)}; "
            "pass --force to overwrite them or --out DIR to write elsewhere"
        )


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    from ..utils.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """Turn NumPy scalars and arrays (and paths) into plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def collect_image_files(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (recursively, sorted) into image paths; missing inputs are reported.

    Returns ``(files, problems)`` where ``problems`` is a list of ``(path, reason)``.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if q.is_file() and not q.name.startswith(".") and q.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append((str(p), "folder contains no image files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append((str(p), "no such file or folder"))
    return files, problems


# ----------------------------------------------------------------------------------------- tables
def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one ``l``/``r`` per column (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for k, row in enumerate(cells):
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def warn(cmd: str, message: str) -> None:
    """Print ``cnnkit <cmd>: warning: ...`` on stderr."""
    print(f"cnnkit {cmd}: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------- models
def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith(".cnnkit") or name.startswith(".")


def require_model_name(name: str) -> None:
    """Raise a clear error unless ``name`` is a zoo model (listing them), or say a file is missing."""
    if _looks_like_path(name) and not Path(name).exists():
        raise DataError(f"model file not found: {name}")
    from ..models import zoo

    known = list(zoo.names())
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; zoo models: {', '.join(known)}")


def get_zoo_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
) -> Any:
    """Build zoo model ``name``; an unknown name lists the zoo, a model too deep for the input says so."""
    from ..errors import ShapeError
    from ..models import zoo

    require_model_name(name)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    try:
        return zoo.get(name, num_classes=num_classes, input_shape=shape, seed=seed)
    except ShapeError as err:
        default = zoo.info(name).input_shape
        size = "x".join(map(str, shape or default))
        raise ConfigError(
            f"model {name} cannot take input {size} (channels x height x width); its default input is "
            f"{'x'.join(map(str, default))} [{err}]"
        ) from None


def PixelNormalizer(config: dict[str, Any]) -> Any:
    """Pixels -> float32 network input: the :class:`cnnkit.data.Normalize` of a ``get_config`` dict.

    ``unit``: ``x / m``; ``symmetric``: ``x / (m/2) - 1``; ``standardize``: ``(x / m - mean_c) / std_c``
    (notes section 12 tip 1). The model file's metadata is checked here, so a bad one fails on loading
    with a message that says so. Importing :mod:`cnnkit.data.transforms` imports nothing else of
    :mod:`cnnkit.data` (its ``__init__`` is lazy), so ``cnnkit predict`` stays lean.
    """
    from ..data.transforms import Normalize

    mode = str(config.get("mode", "unit"))
    if mode not in ("unit", "symmetric", "standardize"):
        raise ConfigError(f"unknown normalisation mode {mode!r} in the model file's metadata")
    mean, std = config.get("mean"), config.get("std")
    if mode == "standardize" and (not mean or not std or len(mean) != len(std)):
        raise ConfigError(f"standardize needs one mean and std per channel, got {config!r:.200}")
    if mode != "standardize":
        mean = std = None
    try:
        return Normalize(mode, mean, std, float(config.get("max_value", 255.0)))
    except ConfigError as err:
        raise ConfigError(f"the model file's normalisation metadata is invalid: {err}") from None


def decode_image_file(path: str | os.PathLike[str], size: tuple[int, int], color: str) -> Any:
    """One image file as uint8 ``(C, H, W)``: :func:`cnnkit.data.folder.decode_image`.

    Pillow decodes (JPEGs at a reduced scale when much larger, ``draft``), converts to ``L`` or ``RGB``
    (palette images with transparency through RGBA), then resizes bilinearly to ``size = (H, W)``.
    """
    from ..data.folder import decode_image

    return decode_image(path, size, "rgb" if color == "rgb" else "grey")


@dataclass
class Preprocess:
    """How an image file becomes model input; saved by ``cnnkit train`` as metadata ``"preprocess"``.

    Decode with Pillow, convert to ``color`` (``"grey"``/``"rgb"``), resize bilinearly to ``image_size``
    ``(H, W)`` (as :func:`cnnkit.data.decode_image` does when training on a folder), then ``normalize``
    (as :class:`cnnkit.data.Normalize`; notes section 12, tip 1).
    """

    image_size: tuple[int, int]
    color: str
    normalize: Any  # a cnnkit.data.Normalize

    def to_metadata(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "color": self.color,
            "normalize": self.normalize.get_config(),
        }

    @classmethod
    def from_model(cls, model: Any) -> Preprocess:
        """From a loaded model's metadata; without it, the input shape and ``x / 255``."""
        meta = (getattr(model, "metadata", None) or {}).get("preprocess")
        if isinstance(meta, dict) and "image_size" in meta:
            try:
                h, w = (int(v) for v in meta["image_size"])
                color = str(meta.get("color", "rgb"))
                norm = PixelNormalizer(dict(meta.get("normalize") or {"mode": "unit"}))
            except (TypeError, ValueError, KeyError) as err:
                raise ConfigError(f"the model file's preprocessing metadata is invalid: {err}") from None
            return cls((h, w), "grey" if color in ("grey", "gray", "l") else "rgb", norm)
        shape = getattr(model, "input_shape", None)
        if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
            raise ConfigError(
                f"the model takes input {shape}, not images (1 or 3 channels), and its file has no "
                "preprocessing metadata (it was not written by `cnnkit train`)"
            )
        unit = PixelNormalizer({"mode": "unit"})
        return cls((int(shape[1]), int(shape[2])), "grey" if shape[0] == 1 else "rgb", unit)

    def load(self, path: str | os.PathLike[str]) -> Any:
        """One image file as uint8 ``(C, H, W)``; :class:`DataError` when it cannot be read."""
        try:
            return decode_image_file(path, self.image_size, self.color)
        except Exception as err:  # any Pillow failure means an unreadable file
            raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def load_model_file(path: str | os.PathLike[str]) -> Any:
    """Load a ``.cnnkit`` model file (residual blocks registered too), in inference mode."""
    from .. import models  # noqa: F401  (registers the residual block classes)
    from ..io.model_file import load_model

    p = require_path(path, "model file")
    if p.is_dir():
        raise DataError(f"model file expected, got a folder: {p}")
    model = load_model(p)
    model.eval()
    return model


def class_names_of(model: Any) -> list[str]:
    """The model's class names, or ``"0"``, ``"1"``, ... when it has none."""
    names = getattr(model, "class_names", None)
    if names:
        return [str(n) for n in names]
    return [str(i) for i in range(int(model.output_shape[-1]))]


def predict_probabilities(model: Any, x: Any, batch_size: int = 256) -> Any:
    """Softmax probabilities ``(N, classes)`` in inference mode, batch by batch (notes section 6.2)."""
    import numpy as np

    from ..ops.activations import softmax

    chunks = []
    for i in range(0, len(x), batch_size):
        logits = model.forward(np.ascontiguousarray(x[i : i + batch_size], dtype=model.dtype), False)
        chunks.append(softmax(logits, axis=1))
    if not chunks:
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    return np.concatenate(chunks, axis=0)


def predict_files(
    model: Any,
    pre: Preprocess,
    class_names: Sequence[str],
    files: Sequence[Path],
    *,
    top_k: int = 3,
    batch_size: int = 64,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Top-k predictions for image files; unreadable files go to the second list as ``(path, reason)``."""
    import numpy as np

    results: list[dict[str, Any]] = []
    bad: list[tuple[str, str]] = []
    for start in range(0, len(files), batch_size):
        images, ok = [], []
        for path in files[start : start + batch_size]:
            try:
                images.append(pre.load(path))
                ok.append(path)
            except DataError as err:
                bad.append((str(path), str(err).removeprefix(f"{path}: ")))
        if not images:
            continue
        probs = predict_probabilities(model, pre.normalize(np.stack(images)), batch_size)
        k = min(top_k, probs.shape[1])
        for path, row in zip(ok, probs, strict=True):
            order = np.argsort(-row, kind="stable")[:k]
            top = [{"class": class_names[i], "index": int(i), "probability": float(row[i])} for i in order]
            results.append({"file": str(path), "top": top})
    return results, bad


def make_optimizer(name: str, lr: float) -> Any:
    """``sgd`` (momentum 0.9), ``adam`` or ``adamw`` at learning rate ``lr``."""
    from ..optim import get_optimizer

    if name == "sgd":
        return get_optimizer("sgd", lr=lr, momentum=0.9)
    return get_optimizer(name, lr=lr)


def save_curves(history: Any, path: Path) -> Path | None:
    """``plot_curves`` to ``path``; None when matplotlib is not installed."""
    try:
        from ..viz import plot_curves
    except ImportError:
        return None
    try:
        return Path(plot_curves(history, path))
    except ImportError:  # MissingDependencyError is an ImportError
        return None


# ----------------------------------------------------------------------------------------- data
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

    ``test`` is None for folders (their held-out part is ``validation``).
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
) -> LoadedData:
    """Load ``--data``: ``fashion-mnist``, ``shapes`` or a folder with one sub-folder per class.

    Image size and colour default to the data's own (Fashion-MNIST 28x28 grey), else the zoo model's
    default input (folders, shapes). ``limit`` keeps a seeded random subset of the training images;
    ``validation_split`` holds out a stratified fraction of them. With ``evaluation`` only the images to
    evaluate on are loaded: Fashion-MNIST's and shapes' test split, or every image of a folder (as
    ``train``, with no split).
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
    data = _load_folder(
        root, size, color, 0.0 if evaluation else validation_split, seed, strict, limit, on_bad_file
    )
    data.evaluation = evaluation
    return data


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


def _load_folder(
    root: Path,
    size: tuple[int, int],
    color: str,
    validation_split: float,
    seed: int,
    strict: bool,
    limit: int | None,
    on_bad_file: Any,
) -> LoadedData:
    import numpy as np

    from ..data import image_folder

    bad: list[tuple[str, str]] = []

    def record(path: str, reason: str) -> None:
        bad.append((path, reason))
        if on_bad_file is not None:
            on_bad_file(path, reason)

    split = image_folder(root, size, color, validation_split, seed, strict=strict, on_bad_file=record)
    train: Any = split.train
    if limit and limit < len(train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:limit])
        train = Subset(train, keep)
    return LoadedData(
        root.name or str(root),
        str(root),
        list(split.train.class_names),
        tuple(size),
        color,
        train,
        validation=split.validation,
        bad=bad,
    )


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


# ----------------------------------------------------------------------------------------- BLAS threads
def parse_threads(text: str) -> int | str:
    """argparse type for ``--threads``: ``auto`` or an integer >= 1."""
    if text.strip().lower() == "auto":
        return "auto"
    return positive_int(text)


def add_threads_argument(parser: Any) -> None:
    """``--threads auto|N``, shared by train, evaluate and bench."""
    parser.add_argument(
        "--threads",
        type=arg_type(parse_threads),
        default="auto",
        metavar="auto|N",
        help="BLAS threads and cnnkit's own kernel threads; auto (default) uses the cores other processes "
        "leave idle (measured over 0.25 s). Needs threadpoolctl; without it NumPy's default is kept",
    )


def auto_threads(cores: int, load: float) -> int:
    """Idle cores, rounded, at least 1: ``clip(round(cores - load), 1, cores)``, for ``load`` cores kept
    busy by other processes (:func:`busy_cores`, or the load average where that is not available).

    A multi-threaded BLAS on cores that other processes keep busy waits for its own threads: measured
    10x slower than one thread on a 2-core machine with a load average of 5.
    """
    return max(1, min(cores, int(cores - load + 0.5)))


@contextlib.contextmanager
def blas_threads(threads: int | str | None, cmd: str) -> Iterator[int | None]:
    """Limit BLAS threads (threadpoolctl) and cnnkit's own kernel threads (:mod:`cnnkit.ops._parallel`)
    to ``threads`` or the :func:`auto_threads` choice for the block.

    Yields the limit set, or None when nothing was changed (threadpoolctl missing, no load average).
    """
    from ..ops import _parallel

    limit = _thread_limit(threads, cmd)
    if limit is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    _parallel.set_threads(limit)
    try:
        with threadpool_limits(limits=limit, user_api="blas"):
            yield limit
    finally:
        _parallel.set_threads(None)


def _thread_limit(threads: int | str | None, cmd: str) -> int | None:
    if threads is None:
        return None
    if importlib.util.find_spec("threadpoolctl") is None:
        if threads != "auto":
            warn(cmd, "--threads needs threadpoolctl (pip install threadpoolctl); using NumPy's default")
        return None
    if threads == "auto":
        load = busy_cores()
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (OSError, AttributeError):  # no load average on this platform
                return None
        return auto_threads(os.cpu_count() or 1, load)
    return int(threads)


def _proc_stat_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot, summed over CPUs (Linux ``/proc/stat``:
    user, nice, system, irq, softirq and steal; not idle or iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def busy_cores(
    window: float = 0.25,
    read_busy: Callable[[], float] = _proc_stat_busy_seconds,
    own_seconds: Callable[[], float] = lambda: sum(os.times()[:2]),
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> float | None:
    """How many cores other processes keep busy now: their CPU time over ``window`` seconds of wall time.

    Better than the load average for ``--threads auto``: that average decays over a minute, so
    processes that just finished (a previous training run, a benchmark) still count and the main job
    ran on one thread of two (80.6 s against 73.7 s). None where ``/proc/stat`` is not readable.
    """
    import time

    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    try:
        t0, busy0, own0 = clock(), read_busy(), own_seconds()
        sleep(window)
        t1, busy1, own1 = clock(), read_busy(), own_seconds()
    except (OSError, ValueError):
        return None
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9))
