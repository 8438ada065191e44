"""What the page shows about a model: every layer's output for one image, and the arithmetic of one output.

:func:`trace` runs a model layer by layer on one input and keeps each layer's output (a copy), walking
containers generically through :meth:`~cnnkit.layers.base.Layer.children`:

- a container whose children, run one after another, give the container's own output (a ``Sequential``,
  a fused Conv2D + ReLU + MaxPool2D layer) is traced as that chain, so every inner layer's output is
  shown, the ReLU before a max pooling included (the model itself runs such runs fused; the chain is
  checked against the container's own output). A fused layer is a view: its inner layers keep the
  names they have in the container (``0``, ``1``, ``2``), as ``cnnkit explain network`` lists them;
- any other container (a residual block: its shortcut runs beside the main branch) runs its own
  ``forward`` while its children's ``forward`` are intercepted and traced, so their outputs are what
  the block really computed.

:func:`explain_conv` and :func:`explain_pool` take the numbers of one output from those real tensors: the
window of the layer's input under the kernel (a row of :func:`cnnkit.ops.conv.im2col`, as
:mod:`cnnkit.explain.conv` does for the notes' §3.3 example), the kernel, their element-wise products,
the sum, the bias and the ReLU after it; for pooling the window and the value that won (notes §4.2).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CnnkitError, ConfigError
from ..layers.base import Layer


@dataclass
class Record:
    """One layer's output for the traced image (batch axis dropped)."""

    name: str  # dotted, as ``named_layers`` and ``cnnkit explain network`` name it
    kind: str  # class name
    layer: Layer
    output: np.ndarray  # (C, H, W) or (features,), a copy
    input: np.ndarray | None  # kept for the layers that can be explained (conv, pooling, ReLU)
    source: str | None  # the record whose output is this layer's input, when known
    container: bool


_EXPLAINED = ("Conv2D", "MaxPool2D", "AvgPool2D", "MinPool2D", "ReLU")


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if not np.all(np.isfinite(b)):  # a broken model: compare exactly (NaN equal to NaN)
        return bool(np.array_equal(a, b, equal_nan=True))
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-4 * max(scale, 1.0)))


class Tracer:
    """Traces one image at a time through a private copy of the model (the copy's layers are patched
    while a trace runs, so it never touches the model that answers predictions)."""

    def __init__(self, model: Layer) -> None:
        self.model = copy.deepcopy(model)
        self.model.eval()
        self._lock = threading.Lock()

    def trace(self, x: np.ndarray) -> list[Record]:
        """Records of every layer, in the order they ran, for one input ``x`` of shape ``(1, C, H, W)``."""
        x = np.ascontiguousarray(x, dtype=self.model.dtype)
        records: list[Record] = []
        with self._lock:
            _trace(self.model, x, "", records, "input", top=True)
        return records


def _record(
    records: list[Record], name: str, layer: Layer, x: np.ndarray, out: np.ndarray, source: Any
) -> None:
    kind = type(layer).__name__
    keep_input = kind in _EXPLAINED and not layer.children()
    records.append(
        Record(
            name=name,
            kind=kind,
            layer=layer,
            output=np.array(out[0], copy=True),
            input=np.array(x[0], copy=True) if keep_input else None,
            source=source,
            container=bool(layer.children()),
        )
    )


def _is_view(layer: Layer) -> bool:
    """A fused layer (:mod:`cnnkit.layers.fused`): a running view of declared layers, whose children keep
    the keys they have in the container. Its inner layers are shown under those names, itself not at all
    (its output is its last inner layer's)."""
    from ..layers.fused import FusedLayer

    return isinstance(layer, FusedLayer)


def _trace(
    layer: Layer,
    x: np.ndarray,
    name: str,
    records: list[Record],
    source: str | None,
    top: bool = False,
    view: bool = False,
) -> np.ndarray:
    children = layer.children()
    if not children:
        out = layer.forward(x, False)
        _record(records, name, layer, x, out, source)
        return out
    # the children's names: "<name>.<key>", or "<key>" at the top, or the container's own prefix for a view
    prefix = name if view else (f"{name}." if name and not top else "")
    reference = layer.forward(x, False)  # the container's own answer (possibly fused)
    chain: list[Record] = []
    try:
        y, prev = x, source
        for key, child in children.items():
            inner = _is_view(child)
            y = _trace(child, y, prefix if inner else prefix + key, chain, prev, view=inner)
            prev = chain[-1].name
        chained = _close(y, reference)
    except (CnnkitError, ValueError):  # the children are not a chain (a shortcut, a branch)
        chained = False
    if chained:
        records.extend(chain)
    else:
        records.extend(_trace_intercepted(layer, x, prefix, children))
    if not top and not view:
        _record(records, name, layer, x, reference, source)
    return reference


def _trace_intercepted(layer: Layer, x: np.ndarray, prefix: str, children: dict[str, Layer]) -> list[Record]:
    """Run ``layer.forward`` with each child's ``forward`` replaced by a traced call."""
    inner: list[Record] = []

    def traced(key: str, child: Layer) -> Any:
        view = _is_view(child)

        def forward(xc: np.ndarray, training: bool) -> np.ndarray:
            del child.forward  # the real method again while the child runs (and for its own children)
            try:
                return _trace(child, xc, prefix if view else prefix + key, inner, None, view=view)
            finally:
                child.forward = forward  # type: ignore[method-assign]

        return forward

    for key, child in children.items():
        child.forward = traced(key, child)  # type: ignore[method-assign]
    try:
        layer.forward(x, False)
    finally:
        for child in children.values():
            child.__dict__.pop("forward", None)
    return inner


# ----------------------------------------------------------------------------------------- explanations
def find(records: list[Record], name: str) -> Record:
    """The record of layer ``name``; a ConfigError listing the names when there is none."""
    for rec in records:
        if rec.name == name:
            return rec
    raise ConfigError(f"no layer {name!r}; layers: {', '.join(r.name for r in records)}")


def _position(rec: Record, channel: int, row: int, col: int) -> None:
    if rec.output.ndim != 3:
        raise ConfigError(f"layer {rec.name} ({rec.kind}) has no feature maps (output {rec.output.shape})")
    c, h, w = rec.output.shape
    for label, value, limit in (("channel", channel, c), ("row", row, h), ("col", col, w)):
        if not 0 <= value < limit:
            raise ConfigError(f"layer {rec.name}: {label} must be in 0..{limit - 1}, got {value}")


def _follower(records: list[Record], rec: Record, kind: str) -> Record | None:
    for other in records:
        if other.source == rec.name and other.kind == kind:
            return other
    return None


def explain(records: list[Record], name: str, channel: int, row: int, col: int) -> dict[str, Any]:
    """The arithmetic of output ``[channel, row, col]`` of layer ``name``, as JSON-able numbers."""
    rec = find(records, name)
    _position(rec, channel, row, col)
    if rec.container:
        raise ConfigError(f"layer {rec.name} ({rec.kind}) is a container; click one of its inner layers")
    if rec.kind == "Conv2D":
        return explain_conv(records, rec, channel, row, col)
    if rec.kind in ("MaxPool2D", "AvgPool2D", "MinPool2D"):
        return explain_pool(rec, channel, row, col)
    if rec.kind == "ReLU" and rec.input is not None:
        x = float(rec.input[channel, row, col])
        return {
            "kind": "relu",
            "layer": rec.name,
            "position": [channel, row, col],
            "input": x,
            "value": float(rec.output[channel, row, col]),
            "source": rec.source,
        }
    raise ConfigError(
        f"layer {rec.name} ({rec.kind}): explanations are given for convolution, pooling and ReLU layers"
    )


def explain_conv(records: list[Record], rec: Record, f: int, i: int, j: int) -> dict[str, Any]:
    """Notes §3.3 for output ``[f, i, j]`` of a Conv2D: ``sum(window * kernel) + bias``, then the ReLU."""
    from ..ops.conv import im2col

    layer: Any = rec.layer
    assert rec.input is not None
    weight = layer.params["weight"]
    bias = layer.params.get("bias")
    filters, cg, kh, kw = weight.shape
    group = f // (filters // layer.groups)
    x = rec.input[group * cg : (group + 1) * cg]
    ow = rec.output.shape[2]
    # one row per output position, the window's values ordered (channel, kh, kw): as explain.conv does
    cols = im2col(x[None], (kh, kw), stride=layer.stride, padding=layer._pad4, dilation=layer.dilation)
    window = cols[i * ow + j].reshape(cg, kh, kw)
    kernel = weight[f]
    products = window.astype(np.float64) * kernel.astype(np.float64)
    total = float(products.sum())
    b = float(bias[f]) if bias is not None else 0.0
    value = float(rec.output[f, i, j])
    top, _, left, _ = layer._pad4
    out: dict[str, Any] = {
        "kind": "conv",
        "layer": rec.name,
        "position": [f, i, j],
        "input_layer": rec.source,
        "input_channels": list(range(group * cg, (group + 1) * cg)),
        "window_origin": [i * layer.stride[0] - top, j * layer.stride[1] - left],
        "stride": list(layer.stride),
        "dilation": list(layer.dilation),
        "padding": list(layer._pad4),
        "window": window.tolist(),
        "kernel": kernel.tolist(),
        "products": products.tolist(),
        "channel_sums": products.sum(axis=(1, 2)).tolist(),
        "sum": total,
        "bias": b,
        "has_bias": bias is not None,
        "computed": total + b,
        "value": value,
    }
    relu = _follower(records, rec, "ReLU")
    if relu is not None:
        out["relu"] = {"layer": relu.name, "value": float(relu.output[f, i, j])}
    return out


_FILL = {"MaxPool2D": -np.inf, "MinPool2D": np.inf, "AvgPool2D": 0.0}


def explain_pool(rec: Record, c: int, i: int, j: int) -> dict[str, Any]:
    """Notes §4.2 for output ``[c, i, j]`` of a pooling layer: the window and the value that won."""
    from ..ops.conv import im2col

    layer: Any = rec.layer
    assert rec.input is not None
    kh, kw = layer.pool_size
    ph, pw = layer.padding
    x = rec.input[c][None, None]
    if ph or pw:  # padded as the op pads: never the max (min); counted in the average's divisor
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=_FILL[rec.kind])
    ow = rec.output.shape[2]
    cols = im2col(x, (kh, kw), stride=layer.stride, padding=0, dilation=layer.dilation)
    window = cols[i * ow + j].reshape(kh, kw)
    kind = {"MaxPool2D": "max", "MinPool2D": "min", "AvgPool2D": "avg"}[rec.kind]
    winner = None
    if kind != "avg":
        flat = int(np.argmax(window) if kind == "max" else np.argmin(window))
        winner = [flat // kw, flat % kw]
    finite = np.where(np.isfinite(window), window, None)
    return {
        "kind": "pool",
        "pool": kind,
        "layer": rec.name,
        "position": [c, i, j],
        "input_layer": rec.source,
        "window_origin": [i * layer.stride[0] - ph, j * layer.stride[1] - pw],
        "stride": list(layer.stride),
        "window": finite.tolist(),
        "winner": winner,
        "value": float(rec.output[c, i, j]),
    }


# ----------------------------------------------------------------------------------------- JSON views
def maps_json(rec_output: np.ndarray, offset: int = 0, limit: int = 64) -> dict[str, Any]:
    """A layer's output as JSON: feature maps ``(C, H, W)`` (``limit`` from ``offset``) or a vector."""
    out = np.asarray(rec_output, dtype=np.float32)
    if out.ndim == 3:
        c = out.shape[0]
        sel = out[offset : offset + limit]
        return {
            "shape": list(out.shape),
            "offset": offset,
            "maps": [m.tolist() for m in sel],
            "ranges": [[float(m.min()), float(m.max())] for m in sel],
            "channels": c,
        }
    flat = out.reshape(-1)
    return {
        "shape": list(out.shape),
        "vector": flat.tolist(),
        "range": [float(flat.min()), float(flat.max())],
    }


def first_conv(model: Layer) -> tuple[str, Layer] | None:
    """The first Conv2D layer (depth first) with its dotted name, or None."""
    for name, layer in model.named_layers():
        if type(layer).__name__ == "Conv2D":
            return name, layer
    return None
