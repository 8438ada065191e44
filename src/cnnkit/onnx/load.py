"""Import an ONNX graph as a cnnkit model: ``model = cnnkit.onnx.load("model.onnx")``.

The graph must be made of the ops cnnkit has: ``Conv``, ``Relu``, ``LeakyRelu``, ``MaxPool``,
``AveragePool``, ``GlobalAveragePool``, ``ReduceMean`` over the spatial axes, ``BatchNormalization``,
``Gemm`` or ``MatMul`` (+ ``Add`` of a bias), ``Flatten`` or ``Reshape`` to 2-D, ``Add`` of two branches
(residual connections), ``Softmax``, ``Dropout`` and ``Identity``. Anything else is one
:class:`~cnnkit.errors.ConfigError` that lists every unsupported op and the nodes that use it.

The result is a :class:`~cnnkit.models.Sequential` (children ``"0"``, ``"1"``, ...). A fork whose two
branches meet again in an ``Add`` becomes a :class:`~cnnkit.models.Residual` (``main`` and ``shortcut``,
each a Sequential; an empty branch is the identity), so PyTorch's ResNets load whether or not their batch
norm was folded into the convolutions. Spatial sizes must be fixed; the batch axis may be dynamic.

What :mod:`cnnkit.onnx.export` writes comes back as the layers it came from: ``-MaxPool(-x)`` is
``MinPool2D``, its averaging depthwise ``Conv`` is a dilated ``AvgPool2D``, ``A_h @ x @ A_w^T`` with
bin-averaging matrices is ``AdaptiveAvgPool2D``, folded preprocessing returns to ``model.metadata``, and
the softmax that stands for ``predict`` is left out again.

Files are checked before anything large is allocated (:mod:`cnnkit.io.onnx_file`): the file must parse as
an ``onnx.ModelProto`` (a truncated file does not), the default-domain opset must be one cnnkit reads,
every initializer's stated size must match its bytes, and external data must lie inside the model's folder
and inside its file. Nothing in the file is executed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, FileFormatError, ShapeError
from ..io.onnx_file import constants, read_proto, require_onnx
from ..layers.base import Layer

__all__ = ["SUPPORTED_OPS", "load"]

SUPPORTED_OPS = frozenset(
    {
        "Conv", "Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
        "BatchNormalization", "Gemm", "MatMul", "Add", "Flatten", "Reshape", "Softmax", "Dropout",
        "Identity", "Constant", "Neg",
    }
)  # fmt: skip


def _fail(path: str, message: str) -> FileFormatError:
    return FileFormatError(f"{path}: {message}")


# ============================================================================================== building
def _attrs(node: Any) -> dict[str, Any]:
    onnx = require_onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _f32(value: Any) -> float:
    """A float32 attribute as the shortest decimal that rounds to it (``1e-05``, not ``9.99999974e-06``)."""
    return float(str(np.float32(value)))


def _where(node: Any) -> str:
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


@dataclass
class _Builder:
    path: str
    nodes: list[Any]
    consts: dict[str, np.ndarray]
    opset: int
    consumers: dict[str, list[Any]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for name in node.input:
                if name and name not in self.consts:
                    self.consumers.setdefault(name, []).append(node)

    def fail(self, node: Any, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {_where(node)}: {message}")

    def const(self, node: Any, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or node.input[index] not in self.consts:
            raise self.fail(node, f"{what} (input {index}) must be a constant initializer")
        return self.consts[node.input[index]]

    def data_inputs(self, node: Any) -> list[str]:
        return [name for name in node.input if name and name not in self.consts]

    def is_merge(self, node: Any) -> bool:
        return node.op_type == "Add" and len(self.data_inputs(node)) == 2

    def sequence(self, tensor: str, shape: tuple[int, ...], stop: set[str]) -> tuple[list[Layer], str, Any]:
        """Layers from ``tensor`` on, until the graph output, or a merging ``Add`` (returned third)."""
        layers: list[Layer] = []
        while True:
            users = [n for n in self.consumers.get(tensor, []) if id(n) not in self.done]
            if tensor in stop or not users:
                return layers, tensor, None
            if len(users) == 1:
                node = users[0]
                if self.is_merge(node):
                    return layers, tensor, node
                new, tensor = self.convert(node, shape)
                for layer in new:
                    shape = self._build(layer, shape, node)
                layers.extend(new)
                continue
            if len(users) != 2:
                raise self.fail(
                    users[0], f"tensor {tensor!r} feeds {len(users)} nodes; cnnkit models fork in two"
                )
            branches = []
            for user in users:
                if self.is_merge(user):
                    branches.append(([], tensor, user))
                else:
                    new, out = self.convert(user, shape)
                    sub_shape = shape
                    for layer in new:
                        sub_shape = self._build(layer, sub_shape, user)
                    rest, end, merge = self.sequence(out, sub_shape, stop)
                    branches.append((new + rest, end, merge))
            merges = {id(b[2]) for b in branches}
            if None in (b[2] for b in branches) or len(merges) != 1:
                raise self.fail(users[0], f"the two branches from {tensor!r} do not meet in one Add")
            add = branches[0][2]
            self.done.add(id(add))
            branches.sort(key=lambda b: -len(b[0]))  # the longer branch is the main one
            layers.append(self._residual(branches[0][0], branches[1][0], shape, add))
            shape = layers[-1].output_shape
            tensor = add.output[0]

    def _residual(self, main: list[Layer], short: list[Layer], shape: tuple[int, ...], add: Any) -> Layer:
        from ..models import Residual, Sequential

        if not main:
            raise self.fail(add, "adds a tensor to itself; not a residual connection")
        block = Residual(
            Sequential(main, name="main", seed=0),
            Sequential(short, name="shortcut", seed=0) if short else None,
            seed=0,
        )
        self._build(block, shape, add)
        return block

    def _build(self, layer: Layer, shape: tuple[int, ...], node: Any) -> tuple[int, ...]:
        if not layer.built:
            try:
                layer.build(shape)
            except ShapeError as err:
                raise self.fail(node, f"does not fit its input (per sample {shape}): {err}") from None
        return tuple(layer.output_shape)

    # ------------------------------------------------------------------------------------ one node
    def convert(self, node: Any, shape: tuple[int, ...]) -> tuple[list[Layer], str]:
        from .. import layers as L

        self.done.add(id(node))
        op, a = node.op_type, _attrs(node)
        out = node.output[0]
        if op in ("Identity",) or (op == "Dropout" and not self._dropout_rate(node, a)):
            return [], out
        if op == "Conv":
            return [self._conv(node, a, shape)], out
        if op == "Neg":
            return self._min_pool(node, shape)
        if op == "Relu":
            return [L.ReLU()], out
        if op == "LeakyRelu":
            return [L.LeakyReLU(_f32(a.get("alpha", 0.01)))], out
        if op in ("MaxPool", "AveragePool"):
            return [self._pool(node, a, shape)], out
        if op == "GlobalAveragePool":
            return [L.GlobalAvgPool2D()], out
        if op == "ReduceMean":
            return self._reduce_mean(node, a, shape), out
        if op == "BatchNormalization":
            return [self._batch_norm(node, a, shape)], out
        if op == "Gemm":
            return [self._gemm(node, a, shape)], out
        if op == "MatMul":
            return self._matmul(node, shape)
        if op == "Add":
            raise self.fail(node, "adds a constant to a tensor that no MatMul made; not a cnnkit layer")
        if op in ("Flatten", "Reshape"):
            return [self._flatten(node, a, shape)], out
        if op == "Softmax":
            return [self._softmax(node, a, shape)], out
        if op == "Dropout":
            return [L.Dropout(self._dropout_rate(node, a))], out
        raise self.fail(node, "is not supported")  # pragma: no cover - filtered before building

    def _conv(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> Layer:
        from ..layers import AvgPool2D, Conv2D

        weight = self.const(node, 1, "the weight")
        bias = self.const(node, 2, "the bias") if len(node.input) > 2 and node.input[2] else None
        if weight.ndim != 4 or len(shape) != 3:
            raise self.fail(
                node, f"only 2-D convolutions of (C, H, W) inputs, got weight {weight.shape}, input {shape}"
            )
        kernel = tuple(int(k) for k in a.get("kernel_shape", weight.shape[2:]))
        if node.input[1].endswith(".mean_kernel") and bias is None and int(a.get("group", 1)) == shape[0]:
            if weight.shape[1] == 1 and np.all(weight == np.float32(1.0 / (kernel[0] * kernel[1]))):
                return self._pool(node, a, shape, AvgPool2D)  # how cnnkit exports dilated average pooling
        pads = self._pads(
            node, a, kernel, tuple(a.get("dilations", (1, 1))), tuple(a.get("strides", (1, 1))), shape
        )
        top, left, bottom, right = pads
        padding: Any = (top, bottom, left, right)
        if top == bottom and left == right:
            padding = top if top == left else (top, left)
        layer = Conv2D(
            int(weight.shape[0]),
            kernel,
            stride=tuple(int(s) for s in a.get("strides", (1, 1))),
            padding=padding,
            dilation=tuple(int(d) for d in a.get("dilations", (1, 1))),
            groups=int(a.get("group", 1)),
            use_bias=bias is not None,
            seed=0,
        )
        self._build(layer, shape, node)
        self._set(layer, node, weight=weight, bias=bias)
        return layer

    def _pads(
        self, node: Any, a: dict[str, Any], kernel: tuple, dilation: tuple, stride: tuple, shape: tuple
    ) -> list[int]:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", "VALID"):
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])] if auto == "NOTSET" else [0, 0, 0, 0]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for i in range(2):
                size = int(shape[1 + i])
                out = -(-size // int(stride[i]))
                total = max(
                    0, (out - 1) * int(stride[i]) + (int(kernel[i]) - 1) * int(dilation[i]) + 1 - size
                )
                small, big = total // 2, total - total // 2
                pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
        else:
            raise self.fail(node, f"auto_pad {auto!r} is not supported")
        if len(pads) != 4:
            raise self.fail(node, f"expected 4 pads (2-D), got {pads}")
        return pads

    def _pool(self, node: Any, a: dict[str, Any], shape: tuple[int, ...], cls: Any = None) -> Layer:
        from ..layers import AvgPool2D, MaxPool2D

        kernel = tuple(int(k) for k in a["kernel_shape"])
        stride = tuple(int(s) for s in a.get("strides", (1, 1)))
        dilation = tuple(int(d) for d in a.get("dilations", (1, 1)))
        pads = self._pads(node, a, kernel, dilation, stride, shape)
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise self.fail(node, f"asymmetric pooling pads {pads} are not supported")
        if len(shape) != 3 or len(kernel) != 2:
            raise self.fail(node, f"only 2-D pooling of (C, H, W) inputs, got input {shape}")
        if node.op_type == "AveragePool" and not a.get("count_include_pad", 0) and any(pads):
            raise self.fail(node, "average pooling with padding that does not count (count_include_pad=0)")
        if cls is None:
            cls = MaxPool2D if node.op_type == "MaxPool" else AvgPool2D
        layer = cls(kernel, stride=stride, padding=(pads[0], pads[1]), dilation=dilation)
        if a.get("ceil_mode", 0):
            floor_layer_shape = self._build(layer, shape, node)
            for i in range(2):  # ceil mode agrees with floor mode when the windows fit exactly
                span = shape[1 + i] + 2 * pads[i] - dilation[i] * (kernel[i] - 1) - 1
                if span % stride[i]:
                    raise self.fail(node, f"ceil_mode=1 changes the output size here {floor_layer_shape}")
        return layer

    def _min_pool(self, node: Any, shape: tuple[int, ...]) -> tuple[list[Layer], str]:
        """``Neg -> MaxPool -> Neg`` (how cnnkit exports min pooling) is a MinPool2D."""
        from ..layers import MinPool2D

        pool = self.consumers.get(node.output[0], [])
        neg = self.consumers.get(pool[0].output[0], []) if len(pool) == 1 else []
        if len(pool) != 1 or pool[0].op_type != "MaxPool" or len(neg) != 1 or neg[0].op_type != "Neg":
            raise self.fail(node, "Neg is supported only as -MaxPool(-x), min pooling")
        self.done.update((id(pool[0]), id(neg[0])))
        return [self._pool(pool[0], _attrs(pool[0]), shape, MinPool2D)], neg[0].output[0]

    def _reduce_mean(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> list[Layer]:
        from ..layers import Flatten, GlobalAvgPool2D

        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "the axes").tolist()
        axes = sorted(int(x) % (len(shape) + 1) for x in (axes or []))
        if len(shape) != 3 or axes != [2, 3]:
            raise self.fail(
                node, f"only the mean over the spatial axes [2, 3] of NCHW is supported, got {axes}"
            )
        return [GlobalAvgPool2D()] + ([] if a.get("keepdims", 1) else [Flatten()])

    def _batch_norm(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> Layer:
        from ..layers import BatchNorm1D, BatchNorm2D

        if a.get("training_mode", 0) or len(node.output) > 1 and any(node.output[1:]):
            raise self.fail(node, "batch norm in training mode; export the model in eval mode")
        values = [self.const(node, i, what) for i, what in enumerate(("scale", "bias", "mean", "var"), 1)]
        cls = BatchNorm2D if len(shape) == 3 else BatchNorm1D
        layer = cls(eps=_f32(a.get("epsilon", 1e-5)), momentum=round(1.0 - float(a.get("momentum", 0.9)), 7))
        self._build(layer, shape, node)
        names = ("weight", "bias", "running_mean", "running_var")
        self._set(layer, node, **dict(zip(names, values, strict=True)))
        return layer

    def _dense(self, node: Any, weight: np.ndarray, bias: np.ndarray | None, shape: tuple[int, ...]) -> Layer:
        from ..layers import Dense

        if len(shape) != 1 or weight.ndim != 2 or weight.shape[1] != shape[0]:
            raise self.fail(
                node,
                f"a dense layer needs a (features,) input matching its weight; input {shape}, weight (out, in) {weight.shape}",
            )
        if bias is not None:
            bias = np.broadcast_to(
                bias.reshape(-1) if bias.size == weight.shape[0] else bias, (weight.shape[0],)
            )
        layer = Dense(int(weight.shape[0]), use_bias=bias is not None, seed=0)
        self._build(layer, shape, node)
        self._set(layer, node, weight=weight, bias=bias)
        return layer

    def _gemm(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> Layer:
        if a.get("transA", 0):
            raise self.fail(node, "transA=1 is not supported")
        weight = self.const(node, 1, "B")
        weight = weight if a.get("transB", 0) else weight.T
        weight = weight * float(a.get("alpha", 1.0))
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self.const(node, 2, "C").astype(np.float64) * float(a.get("beta", 1.0))
            if bias.size not in (1, weight.shape[0]):
                raise self.fail(node, f"bias C of shape {bias.shape} is not per output")
        return self._dense(node, weight, bias, shape)

    def _adaptive(self, node: Any, shape: tuple[int, ...]) -> tuple[list[Layer], str]:
        """``A_h @ x @ A_w^T`` with bin-averaging matrices (how cnnkit exports adaptive pooling)."""
        from ..layers import AdaptiveAvgPool2D
        from ..ops.pool import _adaptive_matrix

        rows = self.consts[node.input[0]]
        users = self.consumers.get(node.output[0], [])
        right = users[0] if len(users) == 1 and users[0].op_type == "MatMul" else None
        cols = self.consts.get(right.input[1]) if right is not None and len(right.input) > 1 else None
        if len(shape) == 3 and rows.ndim == 2 and cols is not None and cols.ndim == 2:
            (oh, h), (w, ow) = rows.shape, cols.shape
            f32 = np.dtype(np.float32)
            if (h, w) == shape[1:] and np.allclose(rows, _adaptive_matrix(h, oh, f32), rtol=0, atol=1e-7):
                if np.allclose(cols, _adaptive_matrix(w, ow, f32).T, rtol=0, atol=1e-7):
                    self.done.add(id(right))
                    return [AdaptiveAvgPool2D((oh, ow))], right.output[0]
        raise self.fail(node, "a constant times a tensor is supported only as adaptive average pooling")

    def _matmul(self, node: Any, shape: tuple[int, ...]) -> tuple[list[Layer], str]:
        if node.input[0] in self.consts:
            return self._adaptive(node, shape)
        weight = self.const(node, 1, "the right-hand matrix")
        out = node.output[0]
        bias = None
        users = self.consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Add":
            add = users[0]
            others = [name for name in add.input if name != out]
            if len(others) == 1 and others[0] in self.consts:
                bias = self.consts[others[0]]
                self.done.add(id(add))
                out = add.output[0]
        return [self._dense(node, weight.T, bias, shape)], out

    def _flatten(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> Layer:
        from ..layers import Flatten

        features = math.prod(shape)
        if node.op_type == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise self.fail(node, f"only Flatten(axis=1) is supported, got axis={a.get('axis')}")
            return Flatten()
        target = [int(v) for v in self.const(node, 1, "the target shape").reshape(-1)]
        if len(target) != 2 or target[1] not in (-1, features) or target[0] not in (-1, 0):
            raise self.fail(node, f"only a reshape to (N, {features}) is supported, got {target}")
        return Flatten()

    def _softmax(self, node: Any, a: dict[str, Any], shape: tuple[int, ...]) -> Layer:
        from ..layers import Softmax

        default = -1 if self.opset >= 13 else 1
        axis = int(a.get("axis", default)) % (len(shape) + 1)
        if self.opset < 13 and len(shape) != 1:
            raise self.fail(
                node, f"Softmax before opset 13 on an input of rank {len(shape) + 1} (coerced to 2-D)"
            )
        return Softmax(axis)

    def _dropout_rate(self, node: Any, a: dict[str, Any]) -> float:
        if "ratio" in a:
            return float(
                str(np.float32(a["ratio"]))
            )  # the float32 value's shortest decimal, 0.3 not 0.30000001
        if len(node.input) > 1 and node.input[1]:
            return _f32(self.const(node, 1, "the ratio").reshape(()))
        return 0.5

    def _set(self, layer: Layer, node: Any, **arrays: np.ndarray | None) -> None:
        for key, value in arrays.items():
            if value is None:
                continue
            store = layer.params if key in layer.params else layer.buffers
            target = store[key]
            value = np.asarray(value)
            if value.size != target.size:
                raise self.fail(node, f"{key} has shape {value.shape}, the layer needs {target.shape}")
            target[...] = value.reshape(target.shape).astype(target.dtype)


def _folded_preprocessing(proto: Any, props: dict[str, str]) -> list[Any]:
    """The ``Sub``/``Div`` nodes ``cnnkit export --include-preprocessing`` put first, when it says so."""
    if "preprocess" not in props:
        return []
    nodes = [n for n in proto.graph.node if n.name in ("preprocess/Sub", "preprocess/Div")]
    if [n.op_type for n in nodes] != ["Sub", "Div"] or nodes[1].input[0] != nodes[0].output[0]:
        return []
    return nodes


def _unsupported(proto: Any, skip: list[Any]) -> Iterator[str]:
    by_op: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if any(node is other for other in skip):
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            by_op.setdefault(op, []).append(node.name or "(unnamed)")
    for op, nodes in sorted(by_op.items()):
        yield f"{op} ({', '.join(nodes[:5])}{', ...' if len(nodes) > 5 else ''})"


def _input_shape(path: str, proto: Any, consts: dict[str, np.ndarray]) -> tuple[str, tuple[int, ...]]:
    inputs = [v for v in proto.graph.input if v.name not in consts]
    if len(inputs) != 1:
        raise _fail(
            path, f"the graph has {len(inputs)} inputs ({[v.name for v in inputs]}); cnnkit models take one"
        )
    value = inputs[0]
    dims = value.type.tensor_type.shape.dim
    shape = []
    for i, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise _fail(
                path, f"input {value.name!r} needs a fixed size on axis {i}, got {dim.dim_param or '?'}"
            )
        shape.append(int(dim.dim_value))
    if len(shape) not in (1, 3):
        raise _fail(path, f"input {value.name!r} must be (N, C, H, W) or (N, features), got rank {len(dims)}")
    return value.name, tuple(shape)


def load(path: str | os.PathLike[str]) -> Layer:
    """Build a cnnkit :class:`~cnnkit.models.Sequential` from the ONNX file at ``path``.

    ``class_names`` come from the ``class_names`` metadata property when there is one (a cnnkit export
    writes it). Raises :class:`FileFormatError` for a file that is not a readable ONNX model and
    :class:`ConfigError` for a graph cnnkit cannot express (every unsupported op listed at once).
    """
    from ..models import Sequential

    name = os.fspath(path)
    proto = read_proto(name)
    props = {p.key: p.value for p in proto.metadata_props}
    preprocess = _folded_preprocessing(proto, props)
    bad = list(_unsupported(proto, preprocess))
    if bad:
        raise ConfigError(f"{name}: ONNX ops cnnkit does not have: {'; '.join(bad)}")
    consts = constants(proto, name)
    input_name, shape = _input_shape(name, proto, consts)
    if preprocess and preprocess[0].input[0] == input_name:
        input_name = preprocess[1].output[0]  # the model proper starts after the normalisation
    outputs = [v.name for v in proto.graph.output]
    if len(outputs) != 1:
        raise _fail(name, f"the graph has {len(outputs)} outputs; cnnkit models give one")
    nodes = [
        n
        for n in proto.graph.node
        if n.op_type != "Constant" and n.output[0] not in consts and not any(n is p for p in preprocess)
    ]
    opsets = {op.domain: op.version for op in proto.opset_import}
    builder = _Builder(name, nodes, consts, int(opsets.get("", opsets.get("ai.onnx", 0))))
    layers, end, merge = builder.sequence(input_name, shape, {outputs[0]})
    if merge is not None or end != outputs[0]:
        where = _where(merge) if merge is not None else f"tensor {end!r}"
        raise ConfigError(
            f"{name}: the graph does not reach its output {outputs[0]!r} as one chain (stopped at {where})"
        )
    if props.get("cnnkit_added_softmax") == "true" and layers and layers[-1].registry_name == "Softmax":
        layers.pop()  # predict applies it; the exported model had no such layer
    if not layers:
        raise ConfigError(f"{name}: the graph has no layers")
    model = Sequential(layers, input_shape=shape, name=proto.graph.name or "onnx_model", seed=0)
    model.eval()
    if preprocess:
        try:
            model.metadata = {"preprocess": json.loads(props["preprocess"])}
        except ValueError:
            raise _fail(name, "its 'preprocess' metadata property is not JSON") from None
    if "class_names" in props:
        try:
            names = json.loads(props["class_names"])
        except ValueError:
            names = None
        if isinstance(names, list) and len(names) == model.output_shape[0]:
            model.class_names = [str(n) for n in names]
    return model
