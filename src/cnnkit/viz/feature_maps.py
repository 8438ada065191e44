"""The feature maps of one image after each convolution and pooling layer (what the network "sees").

One row per layer: the input image first, then the output of every convolution, pooling layer and
residual block, in order, each labelled with the layer's name, type and output shape (the notes' H x W x C).
Each map is drawn on its own colour scale (viridis: dark = low, yellow = high), since only its pattern is
of interest; at most ``max_maps`` channels per layer are drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers.base import Layer
from ..utils.checks import check_int
from ._mpl import new_figure, save_png

#: Label prefix of the map axes: ``"map:<layer name>"`` (``"map:input"`` for the input row).
PANEL = "map:"


def _is_recorded(layer: Layer) -> bool:
    """Convolutions, pooling layers and residual blocks get a row."""
    from ..models.residual import ResidualBlock

    if isinstance(layer, ResidualBlock):
        return True
    if layer.children():
        return False
    if getattr(layer.params.get("weight"), "ndim", 0) == 4:
        return True
    return "Pool" in type(layer).__name__


def _prepare(model: Layer, image: Any) -> np.ndarray:
    """``image`` as a ``(1, C, H, W)`` batch in the model's dtype."""
    if not model.built or model.input_shape is None:
        raise ConfigError(f"plot_feature_maps: model {model.name!r} is not built (no input shape)")
    shape = tuple(model.input_shape)
    x = np.asarray(image)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 255.0
    if x.ndim == 2 and len(shape) == 3 and shape[0] == 1:
        x = x[None]
    if (
        x.ndim == 3
        and len(shape) == 3
        and x.shape != shape
        and x.shape[-1] == shape[0]
        and x.shape[:2] == shape[1:]
    ):
        x = x.transpose(2, 0, 1)  # H x W x C -> C x H x W
    if x.ndim == len(shape):
        x = x[None]
    if x.ndim != len(shape) + 1 or x.shape[0] != 1 or tuple(x.shape[1:]) != shape:
        raise ShapeError(
            f"plot_feature_maps: image must have the model's input shape {shape} (or {(1, *shape)}), "
            f"got {np.asarray(image).shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ShapeError(f"plot_feature_maps: image must be numeric, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=model.dtype)


def feature_maps(model: Layer, image: Any) -> list[tuple[str, Layer, np.ndarray]]:
    """Run ``image`` through ``model`` (inference mode) and return ``(name, layer, output)`` of every
    convolution, pooling layer and residual block, in order; ``output`` is ``(C, H, W)``.

    Nested Sequential containers are walked into; residual blocks count as one layer. Outputs of a single
    pixel (global average pooling) are left out: there is no map to draw.
    """
    from ..layers.fused import FusedLayer
    from ..models.sequential import Sequential

    x = _prepare(model, image)
    found: list[tuple[str, Layer, np.ndarray]] = []

    def walk(container: Layer, prefix: str, x: np.ndarray) -> np.ndarray:
        for key, child in container.children().items():
            name = prefix + key
            if isinstance(child, Sequential):
                x = walk(child, name + ".", x)
                continue
            if isinstance(child, FusedLayer):  # conv, ReLU, pooling fused: each one's map, declared names
                x = walk(child, prefix, x)
                continue
            x = child(x, training=False)
            if _is_recorded(child) and x.ndim == 4 and x.shape[2] * x.shape[3] > 1:
                found.append((name, child, np.asarray(x[0], dtype=np.float64)))
        return x

    if model.children():
        walk(model, "", x)
    else:
        out = model(x, training=False)
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            found.append((model.name, model, np.asarray(out[0], dtype=np.float64)))
    if not found:
        raise ConfigError(f"plot_feature_maps: model {model.name!r} has no convolution or pooling layer")
    return found


def _hwc(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def feature_maps_figure(model: Layer, image: Any, max_maps: int = 16) -> Any:
    """The Figure of :func:`plot_feature_maps`; map axes are labelled ``"map:<layer name>"``."""
    check_int(max_maps, "max_maps", "plot_feature_maps", 1)
    x = _prepare(model, image)[0].astype(np.float64)
    rows = feature_maps(model, x)
    ncols = min(max_maps, max(out.shape[0] for _, _, out in rows))
    panel = 0.95
    label_w = 1.9
    width = label_w + ncols * panel + 0.3
    height = (len(rows) + 1) * panel + 0.9
    fig = new_figure(max(width, 5.0), height)
    left = label_w / max(width, 5.0)
    grid = fig.add_gridspec(
        len(rows) + 1,
        ncols,
        left=left,
        right=0.98,
        bottom=0.02,
        top=1 - 0.8 / height,
        wspace=0.08,
        hspace=0.12,
    )
    # input row: colour for 3 channels, else one grey panel per channel
    c = x.shape[0]
    if c == 3:
        img = x.transpose(1, 2, 0)
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax = fig.add_subplot(grid[0, 0], label=PANEL + "input")
        ax.imshow(img, interpolation="nearest")
        _tidy(ax)
        first = ax
    else:
        first = None
        for k in range(min(c, ncols)):
            ax = fig.add_subplot(grid[0, k], label=PANEL + "input")
            ax.imshow(x[k], cmap="gray", interpolation="nearest")
            _tidy(ax)
            first = first or ax
    first.set_ylabel(f"input\n{_hwc(x.shape)}", rotation=0, ha="right", va="center", fontsize=9)
    for r, (name, layer, out) in enumerate(rows, start=1):
        shown = min(out.shape[0], ncols)
        for k in range(shown):
            ax = fig.add_subplot(grid[r, k], label=PANEL + name)
            ax.imshow(out[k], cmap="viridis", interpolation="nearest")
            _tidy(ax)
            if k == 0:
                more = f"\n(first {shown} of {out.shape[0]})" if shown < out.shape[0] else ""
                ax.set_ylabel(
                    f"{name}: {type(layer).__name__}\n{_hwc(out.shape)}{more}",
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize=9,
                )
    from ..models.residual import ResidualBlock

    kinds = "convolution (before ReLU) and pooling layer"
    if any(isinstance(layer, ResidualBlock) for _, layer, _ in rows):
        kinds = "convolution (before ReLU), pooling layer and residual block"
    fig.suptitle(
        f"Feature maps of {model.name} for one image: the output of each {kinds}\n"
        "(each map on its own colour scale: dark = low, yellow = high)",
        fontsize=10,
    )
    return fig


def _tidy(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_maps(model: Layer, image: Any, path: str | os.PathLike[str], max_maps: int = 16) -> Path:
    """Save a PNG of the feature maps of ``image`` after each convolution and pooling layer.

    Args:
        model: a built model.
        image: one input, shaped as the model's input ``(C, H, W)`` (``(H, W)`` for one channel,
            ``(H, W, C)`` and a leading batch axis of 1 are accepted too), already normalised the way
            the model was trained; integer pixels are scaled by 1/255.
        path: the PNG file to write (atomically).
        max_maps: channels drawn per layer.
    """
    return save_png(feature_maps_figure(model, image, max_maps), path)
