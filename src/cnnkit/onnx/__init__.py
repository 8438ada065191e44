"""ONNX export and import (floor 5): ``cnnkit.onnx.export(model, path)`` and ``cnnkit.onnx.load(path)``.

The ``onnx`` package is optional (``pip install 'cnnkit[onnx]'``) and imported inside the functions, so
``import cnnkit.onnx`` works without it; calling a function then raises
:class:`~cnnkit.onnx._deps.OnnxUnavailableError` with that install line. Graphs use opset
:data:`OPSET` (13: see :mod:`cnnkit.onnx._deps` for why).
"""

from ._deps import OPSET, OnnxUnavailableError
from .export import export, register_converter, to_onnx
from .load import load, state_dict_from_onnx

__all__ = ["OPSET", "OnnxUnavailableError", "export", "load", "register_converter", "state_dict_from_onnx", "to_onnx"]
