"""Keras-like model methods: fit, evaluate, predict, summary, save.

The mixin only delegates, calling *down* (Keras 3's shape): the training loop lives in
:mod:`cnnkit.training`, the summary table in :mod:`cnnkit.models.summary` and the file format in
:mod:`cnnkit.io`, floors below the models (docs/architecture.md), which never import the model classes.
They are imported when a method is called, so that ``import cnnkit`` stays quick.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ModelMixin:
    """Adds ``fit``/``evaluate``/``predict``/``summary``/``save`` to a container layer."""

    #: Class names in label order, saved with the model (set by ``fit`` or by the user).
    class_names: list[str] | None = None
    #: Free-form JSON-able metadata saved with the model (normalisation, metrics, data source).
    metadata: dict[str, Any] | None = None

    def fit(self, x: Any, y: Any = None, **kwargs: Any) -> Any:
        """Train the model; see :func:`cnnkit.training.fit`. Returns a History."""
        from ..training.fit import fit

        return fit(self, x, y, **kwargs)

    def evaluate(self, x: Any, y: Any = None, **kwargs: Any) -> dict[str, float]:
        """Loss and accuracy on ``(x, y)``; see :func:`cnnkit.training.evaluate`."""
        from ..training.fit import evaluate

        return evaluate(self, x, y, **kwargs)

    def predict(self, x: Any, batch_size: int = 256, **kwargs: Any) -> np.ndarray:
        """Class probabilities, an ``(N, classes)`` array; see :func:`cnnkit.training.predict`."""
        from ..training.fit import predict

        return predict(self, x, batch_size=batch_size, **kwargs)

    def summary(self, print_fn: Any = print, **kwargs: Any) -> str:
        """Print and return a table of layers, output shapes, parameters and multiply-adds.

        Keyword arguments (``max_depth``, ``input_shape``) go to :func:`cnnkit.models.summary.summary`.
        """
        from .summary import summary

        text = summary(self, **kwargs)
        if print_fn is not None:
            print_fn(text)
        return text

    def save(self, path: Any, **kwargs: Any) -> None:
        """Save architecture and weights to one safe file; see :func:`cnnkit.io.save_model`."""
        from ..io.model_file import save_model

        save_model(self, path, **kwargs)
