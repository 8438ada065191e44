"""Training curves: loss and accuracy per epoch, training and validation, side by side.

Notes §12 tip 6: "Monitor training/validation loss: stop when validation loss increases". The epoch with
the lowest validation loss is marked on the loss panel, so over-fitting (training loss still falling,
validation loss rising) is visible at a glance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._mpl import new_figure, save_png

_ALIASES = {
    "loss": ("loss", "train_loss"),
    "accuracy": ("accuracy", "acc", "train_accuracy", "train_acc"),
    "val_loss": ("val_loss", "validation_loss"),
    "val_accuracy": ("val_accuracy", "val_acc", "validation_accuracy"),
}


def _floats(values: Any, key: str) -> list[float]:
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"plot_curves: {key!r} must be a list of numbers, got {values!r:.100}") from None


def metrics_from(history: Any) -> tuple[list[float], dict[str, list[float]]]:
    """``(epochs, {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]})``.

    Accepts a :class:`cnnkit.training.History`, its ``to_dict()`` form, a ``metrics.json``-style dict with
    a ``"history"`` entry, a plain dict of lists, or a list of per-epoch dicts. Epochs are counted from 1.
    Metrics that are absent are left out of the result.
    """
    epochs: Sequence[Any] | None = None
    table: Any = history
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        epochs = list(getattr(history, "epoch", []) or [])
        table = history.history
        epochs = [e + 1 for e in epochs] if epochs else None  # History counts epochs from 0
    while isinstance(table, Mapping) and isinstance(table.get("history"), (Mapping, list)):
        if "epoch" in table and isinstance(table["epoch"], list) and table["epoch"]:
            epochs = [int(e) + 1 for e in table["epoch"]]  # History.to_dict(): 0-based
        table = table["history"]
    if isinstance(table, list):
        if not all(isinstance(row, Mapping) for row in table):
            raise ConfigError("plot_curves: a list history must hold one dict of metrics per epoch")
        keys = {k for row in table for k in row}
        if "epoch" in keys:
            epochs = [row.get("epoch") for row in table]
        table = {k: [row.get(k) for row in table] for k in keys if k != "epoch"}
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"plot_curves: expected a History, a dict of metric lists or a list of per-epoch dicts, "
            f"got {type(history).__name__}"
        )
    if epochs is None and isinstance(table.get("epoch"), list):
        epochs = table["epoch"]
    out: dict[str, list[float]] = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in table:
                out[name] = _floats(table[alias], alias)
                break
    if "loss" not in out and "accuracy" not in out:
        raise ConfigError(
            f"plot_curves: no 'loss' or 'accuracy' in the history; keys found: {sorted(map(str, table))}"
        )
    lengths = {len(v) for v in out.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(
            f"plot_curves: every metric needs one value per epoch, got lengths {sorted(lengths)}"
        )
    n = lengths.pop()
    xs = _floats(epochs, "epoch") if epochs is not None else [float(k) for k in range(1, n + 1)]
    if len(xs) != n:
        raise ConfigError(f"plot_curves: {len(xs)} epochs but {n} values per metric")
    return xs, out


def curves_figure(history: Any) -> Any:
    """The Figure of :func:`plot_curves`: two axes (loss, accuracy), each with a train and a validation line."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs, metrics = metrics_from(history)
    fig = new_figure(11.0, 4.4)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_acc = fig.add_subplot(1, 2, 2)
    marker = "o" if len(epochs) <= 30 else None
    for ax, key, title, ylabel in (
        (ax_loss, "loss", "Loss (cross-entropy)", "loss"),
        (ax_acc, "accuracy", "Accuracy", "accuracy"),
    ):
        plotted = False
        for prefix, label, style in (("", "training", "-"), ("val_", "validation", "--")):
            values = metrics.get(prefix + key)
            if values is None:
                continue
            ax.plot(epochs, values, style, marker=marker, markersize=4, label=label)
            plotted = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if not plotted:
            ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        if key == "accuracy":
            values = [v for p in ("", "val_") for v in metrics.get(p + key, []) if not math.isnan(v)]
            if values and max(values) <= 1.0:
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    val = metrics.get("val_loss")
    if val and any(not math.isnan(v) for v in val):
        best = min((v, k) for k, v in enumerate(val) if not math.isnan(v))[1]
        ax_loss.scatter(
            [epochs[best]],
            [val[best]],
            s=80,
            facecolors="none",
            edgecolors="black",
            zorder=3,
            label=f"lowest validation loss (epoch {epochs[best]:g})",
        )
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    fig.suptitle(f"Training curves ({len(epochs)} epochs)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_curves(history: Any, path: str | os.PathLike[str]) -> Path:
    """Save a PNG of loss and accuracy per epoch (training and validation) and return its path.

    ``history`` is a :class:`cnnkit.training.History` (what ``model.fit`` returns), its ``to_dict()``
    form, a dict with lists under ``loss``/``accuracy``/``val_loss``/``val_accuracy`` (or a ``metrics.json``
    dict holding such a ``"history"``), or a list of per-epoch dicts.
    """
    return save_png(curves_figure(history), path)
