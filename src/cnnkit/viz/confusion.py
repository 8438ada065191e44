"""A confusion matrix as an annotated heat map: rows are the true classes, columns the predicted ones.

Entry ``[i, j]`` counts the images of class ``i`` that the model called ``j``; the diagonal holds the
correct answers. With ``normalize=True`` each row is divided by its total, so the diagonal is each class's
recall and a row reads "of the images of this class, this fraction was called ...".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ._mpl import new_figure, save_png

#: Above this many classes the cells are not annotated with numbers (they would not fit).
MAX_ANNOTATED = 25


def _check(matrix: Any, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"plot_confusion: matrix must be a square array of counts, got {matrix!r:.100}"
        ) from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ShapeError(f"plot_confusion: matrix must be square (classes x classes), got shape {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ConfigError("plot_confusion: matrix entries must be finite and >= 0")
    k = m.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ShapeError(f"plot_confusion: {k} classes in the matrix but {len(names)} class names")
    return m, names


def confusion_figure(matrix: Any, class_names: Sequence[str] | None = None, normalize: bool = False) -> Any:
    """The Figure of :func:`plot_confusion` (first axes: the heat map; second: its colour bar)."""
    m, names = _check(matrix, class_names)
    k = m.shape[0]
    total = float(m.sum())
    accuracy = float(np.trace(m)) / total if total else float("nan")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        shown = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        vmax = 1.0
    else:
        shown = m
        vmax = max(float(m.max()), 1.0)
    size = min(max(5.5, 0.55 * k + 3.0), 30.0)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class" if normalize else "number of images")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    fontsize = 9 if k <= 15 else 7
    crowded = max(len(n) for n in names) * k > 40  # long labels would overlap: slant them
    ax.set_xticklabels(
        names, rotation=45 if crowded else 0, ha="right" if crowded else "center", fontsize=fontsize
    )
    ax.set_yticklabels(names, fontsize=fontsize)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    if k <= MAX_ANNOTATED:
        integer = not normalize and np.allclose(m, np.round(m))
        for i in range(k):
            for j in range(k):
                value = shown[i, j]
                text = f"{int(round(value))}" if integer else f"{value:.2f}"
                colour = "white" if value > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    title = "Confusion matrix" + (" (each row divided by its total)" if normalize else "")
    if total:
        title += f"\naccuracy {100 * accuracy:.1f}% ({int(round(np.trace(m)))} of {int(round(total))} on the diagonal)"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_confusion(
    matrix: Any,
    class_names: Sequence[str] | None,
    path: str | os.PathLike[str],
    normalize: bool = False,
) -> Path:
    """Save a PNG heat map of a confusion matrix and return its path.

    Args:
        matrix: ``(K, K)`` counts, ``matrix[true, predicted]``.
        class_names: ``K`` labels for the axes (None: ``0 .. K-1``).
        path: the PNG file to write (atomically).
        normalize: divide each row by its total (the diagonal becomes each class's recall).
    """
    return save_png(confusion_figure(matrix, class_names, normalize), path)
