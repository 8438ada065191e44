"""Argument checks for every floor: one public place, so every op, layer, optimizer and loop reports bad
input the same way (the op's name, what was expected and what was given) with a cnnkit error class.

``cnnkit.ops._args`` re-exports the ops' original helpers from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError

__all__ = [
    "Padding4",
    "Pair",
    "check_array",
    "check_choice",
    "check_int",
    "check_number",
    "is_int",
    "is_number",
    "pair",
]

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer (``True``/``False`` are not sizes)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(value: object, name: str, op: str, minimum: int = 1) -> int:
    """``value`` as an int, or a :class:`ConfigError` when it is not an int >= ``minimum``."""
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise ConfigError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def pair(value: int | Sequence[int], name: str, op: str, *, minimum: int = 1) -> Pair:
    """Return ``(v, v)`` for an int, or the pair itself; each entry must be an int >= ``minimum``."""
    if is_int(value):
        out = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if not all(is_int(v) for v in value):
            raise ConfigError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        out = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ConfigError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return out


def check_array(x: object, op: str, name: str = "x", ndim: int | None = None) -> np.ndarray:
    """Check that ``x`` is a floating-point ndarray with ``ndim`` dimensions and return it."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(
            f"{op}: {name} must have a floating-point dtype (float32 or float64), got {x.dtype}; "
            "convert images with x.astype(np.float32) / 255"
        )
    if ndim is not None and x.ndim != ndim:
        layout = {4: " (N, C, H, W)", 2: " (N, features)"}.get(ndim, "")
        raise ShapeError(
            f"{op}: {name} must have {ndim} dimensions{layout}, got {x.ndim} with shape {x.shape}"
        )
    return x


def is_number(value: object) -> bool:
    """True for a real Python or NumPy number that is not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_number(
    value: object,
    name: str,
    op: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    kind: str = "a number",
) -> float | None:
    """``value`` as a finite float in the given range, or a :class:`ConfigError` naming ``op``, ``name``,
    the range and the value. ``low_open``/``high_open`` exclude the bound; ``optional`` lets None through;
    ``kind`` names what is expected (``"a fraction"``).
    """
    if value is None and optional:
        return None
    ok = is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        if low is not None and (v <= low if low_open else v < low):
            ok = False
        if high is not None and (v >= high if high_open else v > high):
            ok = False
    if not ok:
        raise ConfigError(
            f"{op}: {name} must be {_describe(kind, low, high, low_open, high_open, optional)}, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _describe(
    kind: str, low: float | None, high: float | None, low_open: bool, high_open: bool, optional: bool
) -> str:
    if low is not None and high is not None:
        text = f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"{kind} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"{kind} {'<' if high_open else '<='} {high:g}"
    else:
        text = f"{kind} (finite)"
    return text + (" or None" if optional else "")


def check_choice(value: Any, name: str, op: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` listing them."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        ok = False
    else:
        try:
            ok = value in choices
        except TypeError:
            ok = False
    if not ok:
        raise ConfigError(f"{op}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
