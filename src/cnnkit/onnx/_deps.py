"""The optional ``onnx`` dependency, imported on first use so ``import cnnkit.onnx`` works without it."""

from __future__ import annotations

from typing import Any

from ..errors import CnnkitError

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
