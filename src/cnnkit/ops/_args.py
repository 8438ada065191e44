"""Argument normalisation and validation shared by the ops.

Kept in one place so every op reports bad input the same way: the op's name, what was expected and what
was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError

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
