"""Matplotlib plumbing shared by the plots: a lazy import, a headless figure, an atomic PNG write.

matplotlib is an optional dependency (``pip install cnnkit[viz]``); it is imported only when a plot is
made. Figures are :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas directly, without
pyplot: nothing global is touched (the user's backend stays as it is), nothing is ever shown, and the
figures are freed as soon as they are unreferenced.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..errors import CnnkitError

#: Resolution of every saved PNG (pixels per inch); a figure of ``(w, h)`` inches is ``(w*DPI, h*DPI)`` px.
DPI = 100


class MissingDependencyError(CnnkitError, ImportError):
    """An optional dependency (matplotlib for :mod:`cnnkit.viz`) is not installed."""


def new_figure(width: float, height: float) -> Any:
    """A blank Agg-backed Figure of ``width`` x ``height`` inches at :data:`DPI`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is installed in the test environment
        raise MissingDependencyError(
            f"cnnkit.viz needs matplotlib, which is not installed ({err}); install it with: "
            "pip install cnnkit[viz]"
        ) from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` to PNG in memory, then write it to ``path`` atomically; returns the path."""
    from ..utils.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    path = Path(path)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def pixel_size(fig: Any) -> tuple[int, int]:
    """``(width, height)`` in pixels of the PNG :func:`save_png` writes for ``fig``."""
    w, h = fig.get_size_inches()
    return int(round(w * DPI)), int(round(h * DPI))
