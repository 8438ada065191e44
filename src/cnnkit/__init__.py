"""cnnkit: convolutional neural networks from first principles on NumPy.

>>> import numpy as np, cnnkit
>>> from cnnkit.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
>>> model = cnnkit.Sequential([Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(10)],
...                           input_shape=(3, 32, 32), seed=0)
>>> model.predict(np.zeros((2, 3, 32, 32), np.float32)).shape
(2, 10)
>>> cnnkit.conv_output_size(6, 3, stride=2)  # notes §3.4: 2.5 rounds down to 2
2

The engine (:mod:`cnnkit.ops`, :mod:`cnnkit.layers`, :mod:`cnnkit.models`, :mod:`cnnkit.io`) is imported
with the package. The training loop, optimizers, data sets, explanations and pictures are imported on
first use (``cnnkit.optim``, ``cnnkit.datasets``, ...), so ``cnnkit predict`` starts quickly.

Importing cnnkit changes nothing in the process (no environment variable, BLAS, malloc or fork
setting). The speed tuning the ``cnnkit`` command uses is an explicit choice: :mod:`cnnkit.runtime`
(``cnnkit.runtime.tune()``, or ``with cnnkit.runtime.tuned(): ...`` for a block).
"""

from __future__ import annotations

import importlib
from typing import Any

# models: importing the floor that defines the containers registers them for load_model
from . import layers, models, ops  # noqa: F401
from ._version import __version__
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
from .gradcheck import gradcheck
from .io.model_file import load_model, save_model
from .io.weights import load_weights
from .models import Sequential
from .ops.conv import conv_output_size
from .utils.random import set_seed

#: Sub-packages imported lazily on first attribute access.
_LAZY = {
    "data": "cnnkit.data",
    "datasets": "cnnkit.data.datasets",
    "optim": "cnnkit.optim",
    "training": "cnnkit.training",
    "explain": "cnnkit.explain",
    "viz": "cnnkit.viz",
    "runtime": "cnnkit.runtime",
    "onnx": "cnnkit.onnx",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")


__all__ = [
    "CnnkitError",
    "ConfigError",
    "DataError",
    "DTypeError",
    "FileFormatError",
    "GradcheckError",
    "Sequential",
    "ShapeError",
    "TrainingError",
    "conv_output_size",
    "gradcheck",
    "layers",
    "load_model",
    "load_weights",
    "models",
    "ops",
    "save_model",
    "set_seed",
    *_LAZY,
]
