"""ONNX export and import (floor 5): ``cnnkit.onnx.export(model, path)`` and ``cnnkit.onnx.load(path)``.

The ``onnx`` package is optional (``pip install 'cnnkit[onnx]'``) and imported inside the functions, so
``import cnnkit.onnx`` works without it; calling a function then raises
:class:`~cnnkit.io.onnx_file.OnnxUnavailableError` with that install line. Graphs use opset
:data:`OPSET` (13: see :mod:`cnnkit.io.onnx_file` for why).
"""

from ..io.onnx_file import OPSET, OnnxUnavailableError, state_dict_from_onnx
from .export import export, register_converter, to_onnx
from .load import load

__all__ = [
    "OPSET",
    "OnnxUnavailableError",
    "export",
    "load",
    "register_converter",
    "state_dict_from_onnx",
    "to_onnx",
]
