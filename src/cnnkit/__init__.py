"""cnnkit: convolutional neural networks from first principles on NumPy."""

from .errors import (
    CnnkitError,
    ConfigError,
    DataError,
    DTypeError,
    FileFormatError,
    GradcheckError,
    ShapeError,
    TrainingError,
)
from .utils.random import set_seed

__version__ = "0.1.0"

__all__ = [
    "CnnkitError",
    "ConfigError",
    "DataError",
    "DTypeError",
    "FileFormatError",
    "GradcheckError",
    "ShapeError",
    "TrainingError",
    "set_seed",
]
