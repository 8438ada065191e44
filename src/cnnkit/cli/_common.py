"""Helpers shared by the ``cnnkit`` subcommands: argument parsing, tables, output guards, preprocessing.

Only the standard library is imported at module level; NumPy, Pillow and the rest of cnnkit are imported
inside the functions that need them, so ``cnnkit --help`` stays fast and ``cnnkit predict`` pulls in no
more than NumPy, Pillow and cnnkit's ops, layers and io.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
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
        if number < 0 or (key != "rotation" and number >= 1):
            limit = "a non-negative angle in degrees" if key == "rotation" else "a fraction in [0, 1)"
            raise ConfigError(f"--augment: {key} must be {limit}, got {value}")
        out[key] = number
    return out


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


positive_int.__name__ = "positive integer"


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
                q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")
                and q.suffix.lower() in IMAGE_SUFFIXES
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


# ----------------------------------------------------------------------------------------- preprocessing
@dataclass
class Preprocess:
    """How raw images become model input; saved in the model file's metadata as ``"preprocess"``.

    ``image_size`` is ``(height, width)``, ``color`` is ``"grey"`` or ``"rgb"``, ``normalize`` the kind
    (``unit``: x/255 in [0, 1]; ``symmetric``: [-1, 1]; ``standardize``: (x/255 - mean)/std per channel,
    notes section 12 tip 1) with ``mean`` and ``std`` the per-channel statistics of the training images in
    [0, 1] units (only used by ``standardize``).
    """

    image_size: tuple[int, int]
    color: str = "grey"
    normalize: str = "standardize"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    @property
    def channels(self) -> int:
        return 1 if self.color == "grey" else 3

    def to_metadata(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "color": self.color,
            "normalize": self.normalize,
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None, input_shape: Sequence[int] | None = None) -> Preprocess:
        """Rebuild from a model file's metadata; without it, guess from the model's input shape."""
        if meta:
            return cls(
                image_size=(int(meta["image_size"][0]), int(meta["image_size"][1])),
                color=str(meta.get("color", "grey")),
                normalize=str(meta.get("normalize", "unit")),
                mean=[float(m) for m in meta.get("mean", [0.0])],
                std=[float(s) for s in meta.get("std", [1.0])],
            )
        if input_shape is None or len(input_shape) != 3:
            raise ConfigError(
                "the model file has no preprocessing metadata and no image input shape; "
                "it was not written by `cnnkit train`"
            )
        c, h, w = (int(s) for s in input_shape)
        return cls(image_size=(h, w), color="grey" if c == 1 else "rgb", normalize="unit")

    def apply(self, x: Any) -> Any:
        """Scale a ``(N, C, H, W)`` batch of 0..255 pixels to model input (float32)."""
        import numpy as np

        return self.apply_unit(np.asarray(x, dtype=np.float32) / np.float32(255.0))

    def apply_unit(self, x: Any) -> Any:
        """Normalise a float batch already in [0, 1]."""
        import numpy as np

        x = np.asarray(x, dtype=np.float32)
        if self.normalize == "unit":
            return x
        if self.normalize == "symmetric":
            return x * np.float32(2.0) - np.float32(1.0)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std


def load_image(path: Path, pre: Preprocess) -> Any:
    """Read one image with Pillow as ``(C, H, W)`` uint8, converted to the model's colour and size.

    Raises :class:`cnnkit.errors.DataError` when Pillow cannot read it.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if pre.color == "grey" else "RGB")
            h, w = pre.image_size
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------- models
def get_zoo_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
) -> Any:
    """Build zoo model ``name``; a name that looks like a file path but is missing says so."""
    looks_like_path = "/" in name or os.sep in name or name.endswith(".cnnkit")
    if looks_like_path and not Path(name).exists():
        raise DataError(f"model file not found: {name}")
    from ..models import zoo

    known = list(zoo.names())
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; zoo models: {', '.join(known)} (or give a .cnnkit file)")
    return zoo.get(
        name,
        num_classes=num_classes,
        input_shape=tuple(input_shape) if input_shape is not None else None,
        seed=seed,
    )


def load_model_for_inference(path: str | os.PathLike[str]) -> tuple[Any, Preprocess, list[str]]:
    """Load a model file in inference mode with its preprocessing and class names.

    Class names default to ``"0"``, ``"1"``, ... when the file has none.
    """
    from ..io.model_file import load_model

    model = load_model(path)
    model.eval()
    meta = getattr(model, "metadata", None) or {}
    pre = Preprocess.from_metadata(meta.get("preprocess"), getattr(model, "input_shape", None))
    n_out = (getattr(model, "output_shape", None) or (0,))[-1]
    names = list(getattr(model, "class_names", None) or []) or [str(i) for i in range(int(n_out))]
    return model, pre, names


def predict_probabilities(model: Any, x: Any, batch_size: int = 256) -> Any:
    """Softmax probabilities ``(N, classes)`` of a model in inference mode, batch by batch (notes §6.2)."""
    import numpy as np

    from ..ops.activations import softmax

    chunks = [softmax(model(x[i : i + batch_size], training=False), axis=1) for i in range(0, len(x), batch_size)]
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

    images, ok, bad = [], [], []
    for path in files:
        try:
            images.append(load_image(path, pre))
            ok.append(path)
        except DataError as err:
            bad.append((str(path), str(err).removeprefix(f"{path}: ")))
    if not images:
        return [], bad
    x = pre.apply(np.stack(images))
    probs = predict_probabilities(model, x, batch_size)
    k = min(top_k, probs.shape[1])
    results = []
    for path, row in zip(ok, probs, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        results.append(
            {
                "file": str(path),
                "top": [{"class": class_names[i], "index": int(i), "probability": float(row[i])} for i in order],
            }
        )
    return results, bad
