"""argparse types and presets shared by the ``cnnkit`` subcommands (standard library only)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

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


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``nan``, ``inf`` and ``0`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


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
