"""The exceptions cnnkit raises.

Every error is a subclass of :class:`CnnkitError`, and also of the built-in exception a Python user would
expect (``ValueError`` for a wrong shape or value, ``TypeError`` for a wrong dtype), so both
``except cnnkit.CnnkitError`` and ``except ValueError`` catch them. Messages name the op, layer or file,
the expected value and the actual one.
"""

from __future__ import annotations


class CnnkitError(Exception):
    """Base class of every error cnnkit raises on purpose."""


class ShapeError(CnnkitError, ValueError):
    """An array has the wrong number of dimensions, size or channel count for an op or layer."""


class ConfigError(CnnkitError, ValueError):
    """An argument (kernel size, stride, rate, batch size, ...) is out of its valid range."""


class DTypeError(CnnkitError, TypeError):
    """An array has a dtype the op cannot take (for example integer pixels where floats are needed)."""


class FileFormatError(CnnkitError, ValueError):
    """A model file or data file is corrupt, truncated, or not what its name says."""


class DataError(CnnkitError, ValueError):
    """Training data is unusable: labels out of range, lengths that differ, empty folders, ..."""


class TrainingError(CnnkitError, RuntimeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class GradcheckError(CnnkitError, AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""
