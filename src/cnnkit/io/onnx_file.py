"""ONNX files read safely (floor 4): the protobuf, its opset, and its tensors checked before allocating.

Used by :mod:`cnnkit.onnx` (which builds models from the graph) and by :func:`cnnkit.load_weights`
(which reads an ONNX file's named initializers). The ``onnx`` package is optional
(``pip install 'cnnkit[onnx]'``) and imported inside the functions.

Checks: the file must parse as an ``onnx.ModelProto`` (a truncated file does not) and hold a graph; the
default-domain opset must be one cnnkit reads (:data:`MIN_OPSET`..:data:`MAX_OPSET`); every tensor's
stated shape must match its bytes; external data must lie inside the model's folder and inside its file.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import CnnkitError, FileFormatError

__all__ = [
    "MAX_OPSET",
    "MIN_OPSET",
    "OPSET",
    "OnnxUnavailableError",
    "read_proto",
    "read_tensor",
    "require_onnx",
    "state_dict_from_onnx",
]

#: The ONNX opset every export targets, and the one import requires at most. 13 is the lowest that
#: carries every cnnkit layer with cnnkit's meaning: from opset 13 on, ``Softmax`` normalises along one
#: axis (before it, it flattened everything after ``axis`` into one 2-D coercion, so ``Softmax(axis=1)``
#: of a feature map would mix channels and positions). Every other op cnnkit uses exists with its
#: needed attributes earlier: ``Conv`` (groups, dilations, asymmetric pads) and ``Gemm`` since 1 to 11,
#: ``MaxPool`` with ``dilations`` since 10, ``AveragePool`` with ``count_include_pad`` since 7,
#: ``BatchNormalization`` in inference form since 9, ``LeakyRelu``, ``Neg``, ``MatMul``, ``Flatten``.
#: ``AveragePool`` gained ``dilations`` only in opset 19, so dilated average pooling is written as a
#: depthwise ``Conv`` instead, which keeps 13 enough.
OPSET = 13

#: Default-domain opsets whose semantics for the ops cnnkit imports are known (checked per op where
#: they changed: ``Softmax`` before 13 only on 2-D inputs, ``Dropout``'s ratio attribute before 12).
MIN_OPSET, MAX_OPSET = 9, 21


class OnnxUnavailableError(CnnkitError, ImportError):
    """The ``onnx`` package is not installed."""


def require_onnx() -> Any:
    """``import onnx``, or a clear error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailableError(
            "cnnkit.onnx needs the onnx package, which is not installed: pip install 'cnnkit[onnx]'"
        ) from None
    return onnx


#: Largest file read whole (protobuf's own limit); bigger models keep their weights as external data.
MAX_FILE_BYTES = 2**31 - 1

# ONNX TensorProto data types cnnkit reads: numpy dtype of the stored values
_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64, 16: "bfloat16"}


def _fail(path: str, message: str) -> FileFormatError:
    return FileFormatError(f"{path}: {message}")


# ============================================================================================== reading
def read_proto(path: str) -> Any:
    """The checked ``onnx.ModelProto`` of the file at ``path`` (external data not yet read)."""
    onnx = require_onnx()
    if not os.path.isfile(path):
        raise _fail(path, "no such file" if not os.path.exists(path) else "is not a file")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise _fail(path, f"is {size:,} bytes, more than ONNX's 2 GiB limit for one file")
    if size == 0:
        raise _fail(path, "is empty; expected an ONNX model")
    with open(path, "rb") as handle:
        data = handle.read()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError and friends: any failure means a bad file
        raise _fail(
            path, f"is not a valid ONNX file, or it is truncated ({type(err).__name__}: {err})"
        ) from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise _fail(path, "holds no graph (an empty or truncated ONNX file)")
    opsets = {op.domain: op.version for op in proto.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None:
        raise _fail(path, "declares no default-domain opset (opset_import)")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise _fail(path, f"uses opset {version}; cnnkit reads opsets {MIN_OPSET} to {MAX_OPSET}")
    return proto


def read_tensor(tensor: Any, path: str) -> np.ndarray:
    """An initializer (or Constant value) as a NumPy array, sizes checked before allocating."""
    name = tensor.name or "(unnamed)"
    kind = _DTYPES.get(tensor.data_type)
    if kind is None:
        raise _fail(
            path, f"tensor {name!r} has ONNX data type {tensor.data_type}, which cnnkit does not read"
        )
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise _fail(path, f"tensor {name!r} has negative dimensions {dims}")
    count = math.prod(dims)
    itemsize = 2 if kind == "bfloat16" else np.dtype(kind).itemsize
    nbytes = count * itemsize
    if tensor.data_location == 1:  # EXTERNAL
        raw = _external(tensor, path, nbytes)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != nbytes:
            raise _fail(
                path,
                f"tensor {name!r} of shape {dims} needs {nbytes:,} bytes but holds {len(raw):,}; "
                "the file is corrupt or truncated",
            )
    else:
        values = {1: tensor.float_data, 6: tensor.int32_data, 7: tensor.int64_data, 11: tensor.double_data}
        if tensor.data_type in (10, 16):
            held = tensor.int32_data
            if len(held) != count:
                raise _fail(
                    path, f"tensor {name!r} of shape {dims} holds {len(held):,} values, not {count:,}"
                )
            bits = np.asarray(held, dtype=np.uint16)
            return _from_bits(bits, kind).reshape(dims)
        held = values[tensor.data_type]
        if len(held) != count:
            raise _fail(path, f"tensor {name!r} of shape {dims} holds {len(held):,} values, not {count:,}")
        return np.asarray(held, dtype=kind).reshape(dims)
    if kind == "bfloat16":
        return _from_bits(np.frombuffer(raw, dtype="<u2"), kind).reshape(dims)
    return np.frombuffer(raw, dtype=np.dtype(kind).newbyteorder("<")).astype(kind).reshape(dims)


def _from_bits(bits: np.ndarray, kind: Any) -> np.ndarray:
    if kind == "bfloat16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def _external(tensor: Any, path: str, nbytes: int) -> bytes:
    """Bytes of an external-data tensor, from a file inside the model's folder."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    name = tensor.name
    location = info.get("location")
    if not location:
        raise _fail(path, f"tensor {name!r} is stored externally but names no location")
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.isabs(location) or os.path.commonpath([folder, target]) != folder:
        raise _fail(
            path,
            f"tensor {name!r}: external data path {location!r} points outside the model's folder {folder}; "
            "refused",
        )
    if not os.path.isfile(target):
        raise _fail(path, f"tensor {name!r}: external data file {location!r} does not exist")
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", nbytes))
    except ValueError:
        raise _fail(path, f"tensor {name!r}: external data offset/length are not integers: {info}") from None
    size = os.path.getsize(target)
    if offset < 0 or length != nbytes or offset + length > size:
        raise _fail(
            path,
            f"tensor {name!r}: external data [{offset:,}, {offset + length:,}) of {location!r} must hold "
            f"{nbytes:,} bytes inside the file's {size:,}",
        )
    with open(target, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise _fail(path, f"tensor {name!r}: read {len(data):,} of {length:,} bytes from {location!r}")
    return data


def constants(proto: Any, path: str) -> dict[str, np.ndarray]:
    """Initializers, ``Constant`` outputs and ``Identity`` copies of them, by tensor name."""
    out = {t.name: read_tensor(t, path) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = read_tensor(attr.t, path)
                elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                    value = {"value_float": attr.f, "value_floats": list(attr.floats)}.get(attr.name)
                    if value is None:
                        value = attr.i if attr.name == "value_int" else list(attr.ints)
                    out[node.output[0]] = np.asarray(value)
        elif node.op_type == "Identity" and node.input and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def state_dict_from_onnx(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The named initializers of an ONNX file: ``{name: array}``.

    A cnnkit export names them as the model's state dict (``features.0.weight``), and so does
    ``torch.onnx.export`` for parameters it keeps (without batch-norm folding), so this is how
    ``cnnkit train --init-weights model.onnx`` reads weights (:func:`cnnkit.load_weights`).
    """
    name = os.fspath(path)
    proto = read_proto(name)
    return {t.name: read_tensor(t, name) for t in proto.graph.initializer}
