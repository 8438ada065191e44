"""A convolution layer's filters as a grid of small pictures (what the first layer has learned to look for).

Filters with 3 input channels are drawn as colour images, each normalised to [0, 1] on its own (a filter's
weights are small signed numbers; only their pattern matters). Others are drawn in grey on one shared,
symmetric scale with a colour bar, so a strong filter looks strong; for more than one input channel the
grey picture is the mean over the input channels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..layers.base import Layer
from ..utils.checks import check_int
from ._mpl import new_figure, save_png

#: Panel label of a filter's axes (tests and callers count panels by it).
PANEL = "filter"


def conv_layers(model: Layer) -> list[tuple[str, Layer]]:
    """``(dotted name, layer)`` of every layer with a 4-D ``weight`` (the convolutions), in order."""
    found = [
        (name, layer)
        for name, layer in ([(model.name, model)] if not model.children() else model.named_layers())
        if not layer.children() and getattr(layer.params.get("weight"), "ndim", 0) == 4
    ]
    return found


def _pick_layer(model: Layer, layer: str | int | None) -> tuple[str, Layer]:
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"plot_filters: model {model.name!r} has no convolution layer")
    if layer is None:
        return convs[0]
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(convs) <= layer < len(convs):
            raise ConfigError(
                f"plot_filters: layer index {layer} out of range; the model has {len(convs)} convolution layers"
            )
        return convs[layer]
    for name, found in convs:
        if name == layer:
            return name, found
    raise ConfigError(
        f"plot_filters: no convolution layer called {layer!r}; convolution layers: "
        f"{', '.join(name for name, _ in convs)}"
    )


def _normalise(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-12:
        return np.full_like(img, 0.5)
    return (img - lo) / (hi - lo)


def filters_figure(model: Layer, layer: str | int | None = None, max_filters: int = 64) -> Any:
    """The Figure of :func:`plot_filters` (one axes per filter, labelled :data:`PANEL`)."""
    name, conv = _pick_layer(model, layer)
    check_int(max_filters, "max_filters", "plot_filters", 1)
    weight = np.asarray(conv.params["weight"], dtype=np.float64)
    f, c, kh, kw = weight.shape
    n = min(f, max_filters)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    rgb = c == 3
    panel = 1.0
    height = nrows * panel + 1.1
    fig = new_figure(max(4.5, ncols * panel + (0.6 if rgb else 1.4)), height)
    top = 1 - 0.8 / height
    right = 0.97 if rgb else 1 - 1.1 / (ncols * panel + 1.4)
    grid = fig.add_gridspec(
        nrows, ncols, left=0.03, right=right, bottom=0.03, top=top, wspace=0.15, hspace=0.3
    )
    if rgb:
        images = [_normalise(weight[k].transpose(1, 2, 0)) for k in range(n)]
        vmax = None
        how = "RGB, each filter normalised to [0, 1]"
    else:
        images = [weight[k, 0] if c == 1 else weight[k].mean(axis=0) for k in range(n)]
        vmax = float(max(np.abs(img).max() for img in images)) or 1.0
        how = "grey, one shared scale" + ("" if c == 1 else f", mean over the {c} input channels")
    axes = []
    shown = None
    for k in range(n):
        ax = fig.add_subplot(grid[k // ncols, k % ncols], label=PANEL)
        if rgb:
            ax.imshow(images[k], interpolation="nearest")
        else:
            shown = ax.imshow(images[k], cmap="gray", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(k), fontsize=8, pad=2)
        axes.append(ax)
    if shown is not None:
        fig.colorbar(shown, ax=axes, fraction=0.04, pad=0.02, label="weight")
    count = f"{f} filters" if n == f else f"first {n} of {f} filters"
    fig.suptitle(
        f"{model.name}, layer {name} ({type(conv).__name__}): weight {f}x{c}x{kh}x{kw}\n{count}, {how}",
        fontsize=10,
    )
    return fig


def plot_filters(
    model: Layer, path: str | os.PathLike[str], layer: str | int | None = None, max_filters: int = 64
) -> Path:
    """Save a PNG grid of a convolution layer's filters and return its path.

    Args:
        model: a built model (or a single Conv2D layer).
        path: the PNG file to write (atomically; parent folders are created).
        layer: the convolution to draw: its dotted name (``"features.0"``), its index among the model's
            convolutions, or None for the first one.
        max_filters: draw at most this many filters (the title says how many there are).
    """
    return save_png(filters_figure(model, layer, max_filters), path)
