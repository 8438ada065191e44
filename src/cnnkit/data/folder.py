"""Image folders: one sub-folder per class of JPEG/PNG files (the cats-vs-dogs layout of notes §9).

``image_folder(root)`` lists the files and their labels and returns lazily-decoded
:class:`ImageFolder` objects for training and validation: nothing is decoded until a batch is asked
for, so a folder of 100,000 photos streams through a :class:`~cnnkit.data.loader.DataLoader` in
bounded memory. Decoding uses Pillow: ``convert("RGB")`` or ``convert("L")``, then a bilinear resize
to ``image_size`` (Pillow's resize filters are anti-aliased when shrinking; JPEGs are first decoded at a
reduced scale with ``draft`` when much larger than needed). The aspect ratio is not kept.

Unreadable files (corrupt, truncated, not an image at all) are skipped and reported, each once: the
list ``dataset.bad_files`` holds ``(path, reason)`` pairs and a :class:`BadFileWarning` is issued
(or ``on_bad_file(path, reason)`` called instead). With ``strict=True`` they raise
:class:`~cnnkit.errors.DataError` listing the paths. When they are found depends on ``check``:

- ``"header"`` (default): every file is opened once up front, which reads only its header (a few KB;
  about 0.1 ms a file from a warm disk cache, so ~10 s for 100,000 files). Text files, empty files and
  garbage are found here, all reported in one warning, and removed from the data set. Damage further into a file (a truncated JPEG) only shows
  when the pixels are decoded: the loader then skips that image (its batch is one image shorter),
  records it and warns once; it is skipped silently in later epochs.
- ``"full"``: every image is decoded up front (as slow as one epoch) so that every bad file is found
  and reported at once and nothing is found mid-epoch; ``strict=True`` then fails before training.
- ``"none"``: no scan (instant start, for huge folders); everything is found at decode time.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from .core import split_mask

CHECKS = ("header", "full", "none")
_MAX_LISTED = 20


class BadFileWarning(UserWarning):
    """Some files of an image folder could not be read and were skipped."""


BadFileCallback = Callable[[str, str], None]


class _BadFileLog:
    """Thread-safe record of unreadable files shared by the train and validation splits."""

    def __init__(self, root: Path, callback: BadFileCallback | None, strict: bool) -> None:
        self.root = root
        self.callback = callback
        self.strict = strict
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    @property
    def entries(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._entries.items())

    def add(self, found: Sequence[tuple[str, str]]) -> None:
        """Record files found unreadable; report the new ones (once) or raise when strict."""
        with self._lock:
            new = [(p, r) for p, r in found if p not in self._entries]
            self._entries.update(new)
        if not new:
            return
        if self.strict:
            raise DataError(_describe(self.root, new, "unreadable file(s)"))
        if self.callback is not None:
            for path, reason in new:
                self.callback(path, reason)
        else:
            warnings.warn(
                _describe(self.root, new, "unreadable file(s) skipped"), BadFileWarning, stacklevel=3
            )


def _describe(root: Path, items: Sequence[tuple[str, str]], what: str) -> str:
    lines = [f"  {p}: {r}" for p, r in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"  ... and {len(items) - _MAX_LISTED} more (see .bad_files)")
    return f"image_folder {root}: {len(items)} {what}:\n" + "\n".join(lines)


def decode_image(path: str | os.PathLike[str], size: tuple[int, int], color: str = "rgb") -> np.ndarray:
    """Decode one file to uint8 ``(C, H, W)`` (C = 3 for ``"rgb"``, 1 for ``"grey"``) of ``size = (H, W)``.

    The EXIF orientation is applied first (a phone photo stored sideways is turned upright), and images
    deeper than 8 bits are *scaled* to 0..255 by :func:`to_8bit` (Pillow's ``convert("L")`` would clip
    them: every 16-bit value above 255 would become white). Raises whatever Pillow raises for an
    unreadable file (``OSError``, ``SyntaxError``, ...).
    """
    from PIL import ImageOps

    h, w = size
    mode = "RGB" if color == "rgb" else "L"
    with Image.open(path) as img:
        img.draft(mode, (w, h))  # JPEG only: let the decoder shrink by 1/2, 1/4 or 1/8 when it can
        img = ImageOps.exif_transpose(img)
        img = to_8bit(img)
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert(mode)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr.transpose(2, 0, 1).copy() if arr.ndim == 3 else arr[None].copy()


def to_8bit(img: Image.Image) -> Image.Image:
    """A Pillow image of more than 8 bits per pixel as an 8-bit ``"L"`` image, scaled, not clipped.

    - 16-bit (``I;16``, ``I;16B``, ``I;16L``, ...): ``round(v / 257)``, so the 16-bit copy ``257 v`` of
      an 8-bit image gives back exactly ``v``;
    - 32-bit integer (``I``): as 16-bit when every value is in 0..65535 (Pillow opens some 16-bit files
      this way), else ``(v - min) / (max - min)`` stretched to 0..255;
    - float (``F``): ``255 v`` when every value is in [0, 1], else stretched as above (NaN becomes 0).

    Other modes (8-bit grey, RGB, palette, ...) are returned unchanged.
    """
    mode = img.mode
    if not (mode.startswith("I") or mode == "F"):
        return img
    arr = np.asarray(img)
    if mode == "F":
        values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            scaled = values * 255.0
        else:
            scaled = _stretch(values)
    else:
        values = arr.astype(np.float64)
        if mode.startswith("I;16") or (values.size and values.min() >= 0 and values.max() <= 65535):
            scaled = values / 257.0
        else:
            scaled = _stretch(values)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _stretch(values: np.ndarray) -> np.ndarray:
    """``(v - min) / (max - min) * 255``; a constant image becomes 0."""
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _check_header(path: str) -> None:
    with Image.open(path) as img:
        if img.width < 1 or img.height < 1:
            raise OSError(f"image has size {img.size}")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ImageFolder:
    """A lazily-decoded labelled image set: file paths, labels and class names.

    ``len(ds)`` images; ``ds[i]`` is ``(image uint8 (C, H, W), label)``; ``ds.load_batch(indices)``
    decodes several and skips unreadable ones (the batch the loader uses); ``ds.bad_files`` lists
    ``(path, reason)`` for every file found unreadable so far (shared by the train and validation
    parts of one folder).
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: np.ndarray,
        class_names: Sequence[str],
        image_size: tuple[int, int],
        color: str,
        log: _BadFileLog,
    ) -> None:
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.image_size = image_size
        self.color = color
        self._log = log

    @property
    def root(self) -> Path:
        """The folder the images came from."""
        return self._log.root

    @property
    def channels(self) -> int:
        """3 for RGB, 1 for grey."""
        return 3 if self.color == "rgb" else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape ``(C, H, W)`` of decoded images."""
        return (self.channels, *self.image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file found unreadable so far."""
        return self._log.entries

    def class_counts(self) -> np.ndarray:
        """Images per class, ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path = self.files[i]
        if path in self._log:
            raise DataError(f"image_folder: {path} is unreadable ({dict(self._log.entries)[path]})")
        try:
            image = decode_image(path, self.image_size, self.color)
        except Exception as exc:  # any Pillow failure means an unreadable file
            self._log.add([(path, _reason(exc))])
            raise DataError(f"image_folder: {path} is unreadable ({_reason(exc)})") from None
        return image, int(self.labels[i])

    def load_batch(self, indices: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Decode the images at ``indices``: ``(x uint8 (k, C, H, W), y int64 (k,))``.

        Unreadable files are skipped (``k`` is then smaller than ``len(indices)``), recorded and reported
        once; with ``strict=True`` they raise :class:`~cnnkit.errors.DataError`.
        """
        images, labels, bad = [], [], []
        for i in indices:
            path = self.files[int(i)]
            if path in self._log:
                continue
            try:
                images.append(decode_image(path, self.image_size, self.color))
                labels.append(self.labels[int(i)])
            except Exception as exc:  # any Pillow failure means an unreadable file
                bad.append((path, _reason(exc)))
        if bad:
            self._log.add(bad)
        if not images:
            return np.empty((0, *self.shape), dtype=np.uint8), np.empty(0, dtype=np.int64)
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    def select(self, indices: Iterable[int]) -> ImageFolder:
        """The images at ``indices`` (same classes, shared bad-file record), e.g. a held-out split."""
        idx = [int(i) for i in indices]
        return ImageFolder(
            [self.files[i] for i in idx],
            self.labels[np.asarray(idx, dtype=np.int64)] if idx else np.empty(0, dtype=np.int64),
            self.class_names,
            self.image_size,
            self.color,
            self._log,
        )

    def relabel(self, class_names: Sequence[str]) -> ImageFolder:
        """The same images with labels re-indexed into ``class_names`` (a superset of this set's names),
        so a ``test/`` folder whose classes are a subset of ``train/``'s gets the training labels."""
        names = list(class_names)
        index = {name: k for k, name in enumerate(names)}
        missing = [n for n in self.class_names if n not in index]
        if missing:
            raise DataError(
                f"image_folder {self.root}: class folder(s) {missing} are not among the training classes {names}"
            )
        mapping = np.array([index[n] for n in self.class_names], dtype=np.int64)
        return ImageFolder(self.files, mapping[self.labels], names, self.image_size, self.color, self._log)

    def to_arrays(self, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Decode everything into memory (for small folders): ``(x uint8 (N, C, H, W), y int64)``."""
        parts = [
            self.load_batch(range(s, min(len(self), s + batch_size))) for s in range(0, len(self), batch_size)
        ]
        if not parts:
            return np.empty((0, *self.shape), dtype=np.uint8), np.empty(0, dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __repr__(self) -> str:
        return (
            f"ImageFolder({str(self.root)!r}, {len(self)} images, classes={self.class_names}, "
            f"shape={self.shape}, bad_files={len(self.bad_files)})"
        )


class FolderSplit(NamedTuple):
    """``(train, validation)``; ``validation`` is None when ``validation_split == 0``."""

    train: ImageFolder
    validation: ImageFolder | None


def _list_classes(root: Path) -> tuple[list[str], list[list[str]]]:
    if not root.exists():
        raise DataError(f"image_folder: {root} does not exist")
    if not root.is_dir():
        raise DataError(f"image_folder: {root} is not a folder")
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if not class_dirs:
        raise DataError(
            f"image_folder: {root} has no class sub-folders (expected root/<class>/<image files>)"
        )
    if len(class_dirs) == 1:
        raise DataError(
            f"image_folder: {root} has a single class folder {class_dirs[0].name!r}; "
            "a classifier needs at least 2 classes (one sub-folder each)"
        )
    files = [_list_files(d) for d in class_dirs]
    empty = [str(d) for d, f in zip(class_dirs, files, strict=True) if not f]
    if empty:
        raise DataError(f"image_folder: empty class folder(s), no files in: {', '.join(empty)}")
    return [d.name for d in class_dirs], files


def _list_files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return out


def _scan(files: list[str], check: str, size: tuple[int, int], color: str) -> list[tuple[str, str]]:
    """Return ``(path, reason)`` for the files that fail the ``check``."""
    if check == "none":
        return []

    def probe(path: str) -> str | None:
        try:
            if check == "header":
                _check_header(path)
            else:
                decode_image(path, size, color)
        except Exception as exc:  # any Pillow failure means an unreadable file
            return _reason(exc)
        return None

    if check == "full" and len(files) > 64:  # decoding releases the GIL: use a few threads
        from concurrent.futures import ThreadPoolExecutor  # here: `cnnkit predict` never scans folders

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(probe, files, chunksize=32))
    else:
        reasons = [probe(p) for p in files]
    return [(p, r) for p, r in zip(files, reasons, strict=True) if r is not None]


def image_folder(
    root: str | os.PathLike[str],
    image_size: int | tuple[int, int] = (128, 128),
    color: str = "rgb",
    validation_split: float = 0.2,
    seed: int | None = 0,
    *,
    check: str = "header",
    strict: bool = False,
    on_bad_file: BadFileCallback | None = None,
) -> FolderSplit:
    """Index a folder of class sub-folders and return lazily-decoded ``(train, validation)`` sets.

    Parameters
    ----------
    root: a folder holding one sub-folder per class (class names = folder names, sorted; label ``k``
        is the ``k``-th name). Files in sub-sub-folders count for their class; hidden files are ignored.
    image_size: ``(H, W)`` (or one int) every image is resized to; notes §9 uses 128x128.
    color: ``"rgb"`` (3 channels) or ``"grey"`` (1 channel).
    validation_split: fraction of each class held out for validation (stratified, seeded by ``seed``);
        0 gives ``validation = None``.
    check: ``"header"``, ``"full"`` or ``"none"``: how much to verify up front (module docstring).
    strict: raise :class:`~cnnkit.errors.DataError` listing unreadable files instead of skipping them.
    on_bad_file: called as ``on_bad_file(path, reason)`` once per unreadable file instead of a warning.

    Raises :class:`~cnnkit.errors.DataError` for a missing root, no class folders, a single class, an
    empty class folder, or a class left without readable images.
    """
    root = Path(root)
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"image_folder: image_size must be (H, W) with H, W >= 1, got {image_size!r}")
    size = (int(image_size[0]), int(image_size[1]))
    aliases = {"rgb": "rgb", "grey": "grey", "gray": "grey", "l": "grey"}
    if str(color).lower() not in aliases:
        raise ConfigError(f"image_folder: color must be 'rgb' or 'grey', got {color!r}")
    color = aliases[str(color).lower()]
    if check not in CHECKS:
        raise ConfigError(f"image_folder: check must be one of {CHECKS}, got {check!r}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ConfigError(f"image_folder: validation_split must be in [0, 1), got {validation_split!r}")

    class_names, per_class = _list_classes(root)
    files = [f for group in per_class for f in group]
    labels = np.concatenate([np.full(len(g), k, dtype=np.int64) for k, g in enumerate(per_class)])
    log = _BadFileLog(root, on_bad_file, strict)
    bad = _scan(files, check, size, color)
    if bad:
        log.add(bad)  # raises in strict mode
        bad_set = {p for p, _ in bad}
        keep = np.array([f not in bad_set for f in files], dtype=bool)
        files = [f for f, k in zip(files, keep, strict=True) if k]
        labels = labels[keep]
    counts = np.bincount(labels, minlength=len(class_names))
    if (counts == 0).any():
        empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
        raise DataError(f"image_folder {root}: no readable images in class folder(s) {empty}")

    def part(mask: np.ndarray) -> ImageFolder:
        chosen = [f for f, m in zip(files, mask, strict=True) if m]
        return ImageFolder(chosen, labels[mask], class_names, size, color, log)

    if float(validation_split) == 0.0:
        return FolderSplit(part(np.ones(len(files), dtype=bool)), None)
    val_mask = split_mask(labels, float(validation_split), seed)
    return FolderSplit(part(~val_mask), part(val_mask))
