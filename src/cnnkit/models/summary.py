"""The summary table: every layer's output shape, parameters and multiply-adds, then the totals.

It is the table the notes work through by hand in section 5 (and again in section 9): for each layer the
size of what comes out, from the output-size formula of section 3.4, ``(W - F + 2P) / S + 1``, and
pooling's halving of section 4.

Layout. cnnkit stores images channels first (NCHW), so the table's shape column is the per-sample shape
``(C, H, W)`` without the batch axis, e.g. ``(32, 32, 32)``; vectors are ``(features,)``. The notes write
the same shapes as ``H x W x C`` (``32 x 32 x 32``, ``16 x 16 x 32``, ...), and the "notes" column shows
them that way so a reader can put the table next to section 5 line by line.

Counts:

- **params** are the trainable arrays of a layer (weights and biases); a conv layer has
  ``F * C * KH * KW (+ F)`` of them, a dense layer ``out * in (+ out)``. Parameters of a layer whose
  ``trainable`` is False are counted as *non-trainable*; the total is trainable + non-trainable.
  ``model.count_params()`` equals the trainable total.
- **buffers** are saved but not trained (batch-norm ``running_mean``, ``running_var``,
  ``num_batches_tracked``); as in torchvision's counts they are not parameters.
- **mult-adds** per sample are what each layer's ``macs()`` reports: a conv layer does
  ``OH * OW * F * C * KH * KW`` of them, a dense layer ``in * out``.
- **weights memory** is the bytes of all parameters and buffers, the size of the saved weights.

Nested containers (``features``, ``layer1.0``) are expanded depth first with dotted names, the names of
the state dict; a container's own row shows its output shape, and its parameters are on its children's
rows. With ``max_depth`` the containers at that depth are collapsed into one row with their totals.

Fusion (:mod:`cnnkit.layers.fused`): by default the table lists the layers as declared, the notes'
table line by line, and a line under it names the runs that execute fused. With ``fused=True`` it lists
the layers as they run: each fused layer (``Conv2D -> ReLU -> MaxPool2D`` as ``ConvReLUMaxPool2D``) is
one row, named by the key of its first layer, with the block's output shape and its convolution's
parameters and mult-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..layers.base import Layer, LayerChain, Shape
from ..layers.fused import FusedLayer

__all__ = ["LayerRow", "layer_rows", "summary", "fused_runs", "format_shape", "notes_shape"]


@dataclass(frozen=True)
class LayerRow:
    """One line of the summary table."""

    name: str
    type: str
    depth: int
    output_shape: Shape | None
    params: int
    macs: int
    collapsed: bool
    #: An expanded container: its parameters and mult-adds are on its children's rows.
    container: bool = False


def format_shape(shape: Shape | None) -> str:
    """Channels-first per-sample shape as a tuple: ``(32, 32, 32)``, ``(4096,)``; ``?`` when unknown."""
    if shape is None:
        return "?"
    return str(tuple(int(s) for s in shape))


def notes_shape(shape: Shape | None) -> str:
    """The notes' form of a per-sample shape: ``H x W x C`` for images, the count for vectors.

    ``(32, 16, 16)`` gives ``16x16x32`` (notes 5.3); ``(4096,)`` gives ``4,096`` (notes 5.6).
    """
    if shape is None:
        return "?"
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}x{w}x{c}"
    if len(shape) == 1:
        return f"{shape[0]:,}"
    return "x".join(str(s) for s in shape)


def _own_params(layer: Layer) -> int:
    return int(sum(p.size for p in layer.params.values()))


def _kids(layer: Layer, fused: bool) -> dict[str, Layer]:
    """A layer's rows below it: the layers as they run (``fused``; a fused layer is a leaf) or as declared."""
    if isinstance(layer, FusedLayer):
        return {} if fused else layer.children()
    if isinstance(layer, LayerChain) and not fused:  # a Sequential: its layers as declared
        return layer.layers
    return layer.children()


def layer_rows(model: Layer, max_depth: int | None = None, fused: bool = False) -> list[LayerRow]:
    """The table's rows, depth first; a leaf model gives one row for itself. With ``fused`` the layers
    as they run (a fused layer is one row), else as declared."""
    if max_depth is not None and max_depth < 1:
        raise ConfigError(f"summary: max_depth must be >= 1 or None, got {max_depth}")
    if not _kids(model, fused):
        return [_row(model.name, model, 0, collapsed=False, fused=fused)]
    rows: list[LayerRow] = []

    def walk(layer: Layer, prefix: str, depth: int) -> None:
        for key, child in _kids(layer, fused).items():
            name = prefix + key
            collapse = bool(_kids(child, fused)) and max_depth is not None and depth + 1 >= max_depth
            rows.append(_row(name, child, depth, collapsed=collapse, fused=fused))
            if not collapse:
                walk(child, name + ".", depth + 1)

    walk(model, "", 0)
    return rows


def _row(name: str, layer: Layer, depth: int, collapsed: bool, fused: bool = False) -> LayerRow:
    kids = _kids(layer, fused)
    if collapsed or not kids:
        params = layer.count_params(trainable_only=False)
        macs = layer.macs()
    else:  # an expanded container: its children's rows carry their own numbers
        params = _own_params(layer)
        macs = layer.macs() - sum(child.macs() for child in kids.values())
    expanded = bool(kids) and not collapsed
    return LayerRow(
        name, type(layer).__name__, depth, layer.output_shape, int(params), int(macs), collapsed, expanded
    )


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{' ' + unit if unit else ''}"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


def fused_runs(model: Layer) -> list[str]:
    """``"0+1+2 (ConvReLUMaxPool2D)"`` for every fused layer of a built model (dotted names), in order."""
    found = []
    for prefix, layer in [("", model), *((name + ".", lay) for name, lay in model.named_layers())]:
        if isinstance(layer, LayerChain):
            for child in layer.children().values():
                if isinstance(child, FusedLayer):
                    keys = "+".join(prefix + key for key in child.children())
                    found.append(f"{keys} ({type(child).__name__})")
    return found


def summary(
    model: Layer, max_depth: int | None = None, input_shape: Shape | None = None, fused: bool = False
) -> str:
    """A Keras-like table of ``model``: layer, type, output shape, parameters, multiply-adds; totals.

    ``model`` must be built (created with ``input_shape=`` or run once), or ``input_shape`` (per sample,
    e.g. ``(3, 32, 32)``) is given and the model is built for it. ``max_depth`` collapses containers
    nested deeper than that many levels into one row each (``max_depth=1``: top-level children only).
    ``fused=True`` lists the layers as they run (one row per fused layer) instead of as declared.
    See the module docstring for the layout and what each count means.
    """
    if not isinstance(model, Layer):
        raise ConfigError(f"summary: expected a cnnkit Layer or model, got {type(model).__name__}")
    if not model.built:
        if input_shape is None:
            raise ConfigError(
                f"summary: {model.name} is not built yet; pass input_shape=(C, H, W) or run it on a batch first"
            )
        model.build(tuple(input_shape))
    rows = layer_rows(model, max_depth, fused)
    header = ("Layer (type)", "Output shape (C, H, W)", "Notes H x W x C", "Params", "Mult-adds")
    table = [
        (
            f"{'  ' * r.depth}{r.name} ({r.type}{', collapsed' if r.collapsed else ''})",
            format_shape(r.output_shape),
            notes_shape(r.output_shape),
            "" if r.container and not r.params else f"{r.params:,}",
            "" if r.container and not r.macs else f"{r.macs:,}",
        )
        for r in rows
    ]
    widths = [max(len(header[i]), *(len(line[i]) for line in table)) for i in range(len(header))]
    right = (False, False, False, True, True)

    def fmt(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "   ".join(parts).rstrip()

    width = sum(widths) + 3 * (len(widths) - 1)
    trainable = model.count_params(trainable_only=True)
    total = model.count_params(trainable_only=False)
    buffers = [owner.buffers[key] for _, owner, key in model.named_buffers()]
    n_buffers = int(sum(b.size for b in buffers))
    params = [owner.params[key] for _, owner, key in model.named_parameters()]
    nbytes = int(sum(a.nbytes for a in params) + sum(b.nbytes for b in buffers))
    macs = int(model.macs())
    lines = [
        f'Model: "{model.name}" ({type(model).__name__}), input {format_shape(model.input_shape)} per sample',
        "Shapes are per sample, batch axis left out, channels first: (C, H, W) for images, (features,) for",
        "vectors; the notes write the same shapes as H x W x C.",
        "=" * width,
        fmt(header),
        "=" * width,
        *(fmt(line) for line in table),
        "=" * width,
        f"Total params: {total:,} ({_human(total)})",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Buffers: {n_buffers:,} (batch-norm running statistics: saved, not trained, not parameters)",
        f"Mult-adds per sample: {macs:,} ({_human(macs)})",
        f"Weights memory: {nbytes:,} bytes ({_mib(nbytes)}, {model.dtype.name} parameters and buffers)",
    ]
    runs = fused_runs(model)
    if runs and not fused:
        lines.append(f"Run fused (one pass each; summary(fused=True) lists them so): {', '.join(runs)}")
    lines.append("-" * width)
    return "\n".join(lines)
