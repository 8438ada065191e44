"""Files for the ``cnnkit`` subcommands: inputs that must exist, outputs checked before any work starts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

#: Image file suffixes (for messages; ``cnnkit predict`` tries every file it is given).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def require_path(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``Path(path)`` or raise a clear error when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    return p


def guard_outputs(
    paths: Iterable[Path],
    force: bool,
    hint: str = "pass --force to overwrite them or --out DIR to write elsewhere",
) -> None:
    """Refuse to overwrite existing files unless ``force``; the message lists them and ends with ``hint``."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"output file(s) already exist: {', '.join(existing)}; {hint}")


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Make sure files can be written into folder ``path`` *before* any work starts.

    The folder is created (with its parents) when missing, and a probe file is created in it and removed:
    the only test that also catches read-only or virtual file systems (``/sys``, ``/proc``) and a file in
    the way (``some.png/sub``) for every user, root included. Raises :class:`ConfigError` naming ``flag``.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p}: expected a folder to write into, but it is a file")
    try:
        p.mkdir(parents=True, exist_ok=True)
        _probe(p)
    except OSError as err:
        raise ConfigError(f"{flag} {p}: cannot write files there ({_why(err)})") from None
    return p


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Make sure file ``path`` can be written (atomically: a temporary file beside it, then a rename).

    An existing path must be a regular file (never ``/dev/null`` or a folder); its folder must accept a
    new file (:func:`check_output_dir`). Raises :class:`ConfigError` naming ``flag``.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p}: expected a file name, but it is a folder")
    if p.exists() and not p.is_file():
        raise ConfigError(f"{flag} {p}: not a regular file (a device or a pipe); give a file name")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {p}: {parent} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _probe(parent)
    except OSError as err:
        raise ConfigError(f"{flag} {p}: cannot write a file there ({_why(err)})") from None
    return p


def _probe(folder: Path) -> None:
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".cnnkit-probe-", dir=folder)
    os.close(fd)
    os.remove(name)


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


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
    """Expand files and folders (recursively, sorted, hidden files left out); missing inputs are reported.

    Every file is returned, whatever its suffix: one Pillow cannot read is reported by the caller as
    skipped, as ``cnnkit train`` and ``cnnkit evaluate`` do, never dropped silently. Returns
    ``(files, problems)`` where ``problems`` is a list of ``(path, reason)``.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)
            )
            if not found:
                problems.append((str(p), "folder contains no files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append((str(p), "no such file or folder"))
    return files, problems
