"""Export a cnnkit model to ONNX: ``cnnkit.onnx.export(model, "model.onnx")``.

The graph takes what :meth:`model.predict` takes, NCHW float32 with a dynamic batch axis, and gives what
it gives: class probabilities (the model's own output when a :class:`~cnnkit.models.Sequential` ends with
a ``Softmax(axis=1)`` layer, else ``softmax(output, axis=1)``, exactly as :func:`cnnkit.training.predict`).
``logits=True`` gives the raw scores instead (the final Softmax layer is left out, or none is added).

How the graph is made: a table of converters, one per layer class (:data:`CONVERTERS`, looked up along
the class's MRO by class name), and a container walker. A layer without a converter that has
``children()`` is walked child by child in order (``Sequential``, fused blocks); residual blocks have
their own converter (main branch, shortcut, ``Add``, ``Relu``); fused blocks are walked too, their
nodes named after the wrapped layers' own keys. Each converter receives the name of its
input tensor and returns the name of its output tensor. Parameters become initializers under their
state-dict names (``features.0.weight``), so an export's weights can be read back by name.

Layer by layer (opset :data:`~cnnkit.io.onnx_file.OPSET`, see there why 13):

- ``Conv2D`` -> ``Conv`` (strides, dilations, groups, pads ``[top, left, bottom, right]``); a
  ``flip_kernel`` convolution (the true convolution of notes §3.2) exports its weights turned by 180°.
- ``Dense`` -> ``Gemm`` with ``transB=1`` (PyTorch's ``Linear`` layout); ``Flatten`` -> ``Flatten``.
- ``ReLU``/``LeakyReLU``/``Softmax`` -> ``Relu``/``LeakyRelu``/``Softmax`` (same axis).
- ``BatchNorm2D``/``BatchNorm1D`` -> ``BatchNormalization`` in inference form (running statistics).
- ``Dropout`` -> ``Dropout`` without ``training_mode``: the identity at inference, its rate kept.
- ``MaxPool2D`` -> ``MaxPool``; ``MinPool2D`` -> ``-MaxPool(-x)``; ``AvgPool2D`` -> ``AveragePool``
  with ``count_include_pad=1`` (notes §4.2.2: padding counts in the divisor), or, when dilated, a
  depthwise ``Conv`` whose weights are all ``1 / (kh * kw)``; ``GlobalAvgPool2D`` ->
  ``GlobalAveragePool``; ``AdaptiveAvgPool2D`` -> ``AveragePool`` when the bins tile the input, else
  ``A_h @ x @ A_w^T`` as two ``MatMul`` with constant averaging matrices.

``include_preprocessing=True`` folds the normalisation that ``cnnkit train`` saves with a model in as
the first nodes, ``(x - m_c) / s_c``, so the graph takes raw pixels scaled to [0, 1] (``pixels / 255``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..io.onnx_file import OPSET, require_onnx
from ..layers.base import Layer

__all__ = ["CONVERTERS", "export", "register_converter", "to_onnx"]

Converter = Callable[["GraphBuilder", Layer, str, str], str]

#: Converters by layer class name: ``fn(graph, layer, input_name, path) -> output_name``.
CONVERTERS: dict[str, Converter] = {}


def register_converter(class_name: str) -> Callable[[Converter], Converter]:
    """Decorator: register ``fn`` as the ONNX converter of the layer class called ``class_name``."""

    def wrap(fn: Converter) -> Converter:
        CONVERTERS[class_name] = fn
        return fn

    return wrap


class GraphBuilder:
    """Collects nodes and initializers; names parameters by the model's state-dict names."""

    def __init__(self, model: Layer) -> None:
        onnx = require_onnx()
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: set[str] = set()
        self._names = {id(array): name for name, array in model.state_dict().items()}
        self.unsupported: list[str] = []

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` (as float32 unless integer) as an initializer; returns its name."""
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        name = self._unique(name)
        self.initializers.append(self.numpy_helper.from_array(array.copy(order="C"), name))
        return name

    def param(self, layer: Layer, key: str, path: str, array: np.ndarray | None = None) -> str:
        """A parameter or buffer of ``layer`` as an initializer named as in the state dict."""
        source = layer.params[key] if key in layer.params else layer.buffers[key]
        name = self._names.get(id(source), f"{path}.{key}" if path else key)
        return self.constant(name, source if array is None else array)

    def node(self, op: str, inputs: list[str], path: str, **attrs: Any) -> str:
        """Add one node; returns the name of its (single) output."""
        name = self._unique(f"{path or 'model'}/{op}")
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def convert(self, layer: Layer, x: str, path: str) -> str:
        """Append ``layer``'s nodes after tensor ``x``; returns the output tensor's name."""
        for cls in type(layer).__mro__:
            fn = CONVERTERS.get(cls.__name__)
            if fn is not None:
                return fn(self, layer, x, path)
        children = layer.children()
        if children:
            return self.walk(children.items(), x, path)
        self.unsupported.append(f"{path or layer.name} ({type(layer).__name__})")
        return x

    def walk(self, children: Any, x: str, path: str) -> str:
        """The container walker: children in order, each fed the previous one's output."""
        for key, child in children:
            x = self.convert(child, x, f"{path}.{key}" if path else str(key))
        return x


# --------------------------------------------------------------------------------------------- converters
@register_converter("Conv2D")
def _conv(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    weight = layer.params["weight"]
    if getattr(layer, "flip_kernel", False):
        weight = weight[:, :, ::-1, ::-1]
    inputs = [x, g.param(layer, "weight", path, weight)]
    if "bias" in layer.params:
        inputs.append(g.param(layer, "bias", path))
    top, bottom, left, right = layer._pad4
    return g.node(
        "Conv",
        inputs,
        path,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        group=layer.groups,
        pads=[top, left, bottom, right],
    )


@register_converter("Dense")
def _dense(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    inputs = [x, g.param(layer, "weight", path)]
    if "bias" in layer.params:
        inputs.append(g.param(layer, "bias", path))
    return g.node("Gemm", inputs, path, transB=1)


@register_converter("Flatten")
def _flatten(g: GraphBuilder, layer: Layer, x: str, path: str) -> str:
    return g.node("Flatten", [x], path, axis=1)


@register_converter("ReLU")
def _relu(g: GraphBuilder, layer: Layer, x: str, path: str) -> str:
    return g.node("Relu", [x], path)


@register_converter("LeakyReLU")
def _leaky_relu(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    return g.node("LeakyRelu", [x], path, alpha=float(layer.negative_slope))


@register_converter("Softmax")
def _softmax(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    return g.node("Softmax", [x], path, axis=int(layer.axis))


@register_converter("Dropout")
def _dropout(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    ratio = g.constant(f"{path}.ratio", np.array(layer.rate, np.float32))
    return g.node("Dropout", [x, ratio], path)


def _batch_norm(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    inputs = [x] + [g.param(layer, key, path) for key in ("weight", "bias", "running_mean", "running_var")]
    return g.node("BatchNormalization", inputs, path, epsilon=float(layer.eps))


register_converter("BatchNorm2D")(_batch_norm)
register_converter("BatchNorm1D")(_batch_norm)


def _pool_attrs(layer: Any) -> dict[str, Any]:
    ph, pw = layer.padding
    return {
        "kernel_shape": list(layer.pool_size),
        "strides": list(layer.stride),
        "pads": [ph, pw, ph, pw],
    }


@register_converter("MaxPool2D")
def _max_pool(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    return g.node("MaxPool", [x], path, dilations=list(layer.dilation), **_pool_attrs(layer))


@register_converter("MinPool2D")
def _min_pool(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    neg = g.node("Neg", [x], path)
    pooled = g.node("MaxPool", [neg], path, dilations=list(layer.dilation), **_pool_attrs(layer))
    return g.node("Neg", [pooled], path)


@register_converter("AvgPool2D")
def _avg_pool(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    if tuple(layer.dilation) == (1, 1):
        return g.node("AveragePool", [x], path, count_include_pad=1, **_pool_attrs(layer))
    # AveragePool has no dilations before opset 19: a depthwise convolution with weights 1 / (kh * kw)
    channels = layer.input_shape[0]
    kh, kw = layer.pool_size
    weight = g.constant(f"{path}.mean_kernel", np.full((channels, 1, kh, kw), 1.0 / (kh * kw), np.float32))
    return g.node(
        "Conv", [x, weight], path, group=channels, dilations=list(layer.dilation), **_pool_attrs(layer)
    )


@register_converter("GlobalAvgPool2D")
def _global_avg_pool(g: GraphBuilder, layer: Layer, x: str, path: str) -> str:
    return g.node("GlobalAveragePool", [x], path)


@register_converter("AdaptiveAvgPool2D")
def _adaptive_avg_pool(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    from ..ops.pool import _adaptive_matrix

    _, h, w = layer.input_shape
    oh, ow = layer.output_size
    if (oh, ow) == (h, w):
        return g.node("Identity", [x], path)
    if h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return g.node("AveragePool", [x], path, kernel_shape=k, strides=k)
    a_h = g.constant(f"{path}.rows", _adaptive_matrix(h, oh, np.dtype(np.float32)))
    a_w = g.constant(f"{path}.cols", _adaptive_matrix(w, ow, np.dtype(np.float32)).T)
    return g.node("MatMul", [g.node("MatMul", [a_h, x], path), a_w], path)


@register_converter("ResidualBlock")
def _residual(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    """``relu(F(x) + shortcut(x))`` (models/residual.py): the main branch with its inner ReLUs."""
    out = x
    for key, child, relu_after in layer._main:
        out = g.convert(child, out, f"{path}.{key}" if path else key)
        if relu_after:
            out = g.node("Relu", [out], f"{path}.{key}")
    short = x
    if layer.downsample is not None:
        short = g.convert(layer.downsample, x, f"{path}.downsample" if path else "downsample")
    return g.node("Relu", [g.node("Add", [out, short], path)], path)


@register_converter("FusedLayer")
def _fused(g: GraphBuilder, layer: Layer, x: str, path: str) -> str:
    """A fused block (layers/fused.py) is its wrapped layers in order; they keep their keys in the
    container (``0``, ``1``, ``2``), so their nodes are named as when fusion is off."""
    return g.walk(layer.children().items(), x, path.rpartition(".")[0])


@register_converter("Residual")
def _residual_sum(g: GraphBuilder, layer: Any, x: str, path: str) -> str:
    """``main(x) + shortcut(x)`` (models/residual_sum.py)."""
    out = g.convert(layer.main, x, f"{path}.main" if path else "main")
    short = x
    if layer.shortcut is not None:
        short = g.convert(layer.shortcut, x, f"{path}.shortcut" if path else "shortcut")
    return g.node("Add", [out, short], path)


# --------------------------------------------------------------------------------------------- the model
def _normalisation(model: Layer) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(m, s)`` with ``network input = (x - m) / s`` for pixels ``x`` in [0, 1], from the
    preprocessing ``cnnkit train`` saves with a model (read by :class:`cnnkit.data.preprocess.Preprocess`,
    its one reader), or None when the model has none. The one place export reads it.

    ``unit`` (``p / max``): ``m = 0, s = 1``; ``symmetric`` (``p / (max / 2) - 1``): ``m = s = 0.5``;
    ``standardize`` (``(p / max - mean_c) / std_c``): ``m = mean_c, s = std_c``.
    """
    from ..data.preprocess import METADATA_KEY, Preprocess

    if (getattr(model, "metadata", None) or {}).get(METADATA_KEY) is None:
        return None
    norm = Preprocess.from_model(model).normalize
    channels = int(model.input_shape[0])
    if norm.mode == "unit":
        m, s = [0.0] * channels, [1.0] * channels
    elif norm.mode == "symmetric":
        m, s = [0.5] * channels, [0.5] * channels
    else:
        m, s = list(norm.mean or []), list(norm.std or [])
    if len(m) != channels or len(s) != channels:
        raise ConfigError(
            f"export: the saved normalisation has {len(m)} channel(s), the model's input {channels}"
        )
    return np.asarray(m, np.float32), np.asarray(s, np.float32)


def _ends_with_softmax(model: Layer) -> bool:
    """The test :func:`cnnkit.training.predict` makes (``training/head.py``): a layer chain
    (:class:`~cnnkit.layers.base.LayerChain`, as ``Sequential``) whose last layer is Softmax(axis 1)."""
    from ..layers.base import LayerChain

    chain = getattr(model, "layers", None) if isinstance(model, LayerChain) else None
    if not isinstance(chain, dict) or not chain:
        return False
    last = list(chain.values())[-1]
    return last.registry_name == "Softmax" and getattr(last, "axis", 1) in (1, -1)


def to_onnx(model: Layer, *, logits: bool = False, include_preprocessing: bool = False) -> Any:
    """The ``onnx.ModelProto`` of a built model (see the module docstring); checked by ``onnx.checker``."""
    onnx = require_onnx()
    from .. import __version__

    if not isinstance(model, Layer):
        raise ConfigError(f"export: expected a cnnkit model, got {type(model).__name__}")
    if not model.built or model.input_shape is None:
        raise ConfigError(
            f"export: {model.name} is not built; give it input_shape= or run it on a batch first"
        )
    out_shape = tuple(model.output_shape or ())
    if len(out_shape) != 1 or out_shape[0] < 2:
        raise ShapeError(
            f"export: the model must output one score per class, per-sample shape (classes,) with at least "
            f"2 classes, as predict needs; got {out_shape}"
        )
    g = GraphBuilder(model)
    added_softmax = False
    x = "input"
    g._used.add(x)
    norm = _normalisation(model) if include_preprocessing else None
    if include_preprocessing and norm is None:
        raise ConfigError(
            f"export: {model.name} has no saved preprocessing (metadata 'preprocess', written by cnnkit "
            "train), so there is nothing to include; export without include_preprocessing"
        )
    if norm is not None:
        shape = (-1, 1, 1) if len(model.input_shape) == 3 else (-1,)
        mean, std = norm[0].reshape(shape), norm[1].reshape(shape)
        x = g.node("Sub", [x, g.constant("preprocess.mean", mean)], "preprocess")
        x = g.node("Div", [x, g.constant("preprocess.std", std)], "preprocess")
    if _ends_with_softmax(model):
        y = g.walk(list(model.layers.items())[:-1], x, "") if logits else g.convert(model, x, "")
    else:
        y = g.convert(model, x, "")
        if not logits:
            y = g.node("Softmax", [y], "probabilities", axis=1)
            added_softmax = True
    if g.unsupported:
        raise ConfigError(
            f"export: no ONNX converter for {len(g.unsupported)} layer(s): {', '.join(g.unsupported)}; "
            "register one with cnnkit.onnx.export.register_converter"
        )
    out_name = "logits" if logits else "probabilities"
    g.nodes.append(g.helper.make_node("Identity", [y], [out_name], name=out_name))
    graph = g.helper.make_graph(
        g.nodes,
        model.name,
        [g.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *model.input_shape])],
        [g.helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, ["batch", out_shape[0]])],
        initializer=g.initializers,
    )
    proto = g.helper.make_model(
        graph,
        opset_imports=[g.helper.make_opsetid("", OPSET)],
        producer_name="cnnkit",
        producer_version=__version__,
    )
    proto.ir_version = 7  # the IR of opset 13, so older runtimes read it too
    meta = {
        "cnnkit_version": __version__,
        "output": out_name,
        "input": "pixels in [0, 1] (pixels / 255), NCHW" if norm is not None else "normalised images, NCHW",
    }
    if added_softmax:  # predict's softmax, not a layer of the model: cnnkit.onnx.load leaves it out
        meta["cnnkit_added_softmax"] = "true"
    names = getattr(model, "class_names", None)
    if names:
        meta["class_names"] = json.dumps([str(n) for n in names])
    preprocess = (getattr(model, "metadata", None) or {}).get("preprocess")
    if isinstance(preprocess, dict):
        meta["preprocess"] = json.dumps(preprocess, default=float)
    g.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def export(
    model: Layer,
    path: str | os.PathLike[str],
    *,
    logits: bool = False,
    include_preprocessing: bool = False,
) -> None:
    """Write ``model`` as an ONNX file at ``path`` (atomically); see :func:`to_onnx`.

    >>> import cnnkit, cnnkit.onnx  # doctest: +SKIP
    >>> cnnkit.onnx.export(cnnkit.models.get("lenet5", seed=0), "lenet5.onnx")  # doctest: +SKIP
    """
    from ..utils.atomic import write_bytes_atomic

    proto = to_onnx(model, logits=logits, include_preprocessing=include_preprocessing)
    write_bytes_atomic(path, proto.SerializeToString())
