"""Batch normalisation layers (notes §8.3), with PyTorch's parameters, buffers and update rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ShapeError, TrainingError
from ..ops.norm import batch_norm_backward, batch_norm_forward
from ..utils.checks import check_number
from .base import Layer, Shape
from .init import constant


class _BatchNorm:
    """Shared code of BatchNorm1D and BatchNorm2D (not a Layer itself, so not registered)."""

    _per_sample_ndim: int = 3
    _layout: str = "(C, H, W)"
    name: str
    dtype: np.dtype
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    input_shape: Shape | None
    _cache: Any

    def __init__(
        self,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        name: str | None = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(name=name, seed=seed, dtype=dtype)  # type: ignore[call-arg]
        check_number(momentum, "momentum", self.name, low=0.0, high=1.0)
        check_number(eps, "eps", self.name, low=0.0, high=1.0, low_open=True)
        self.momentum = float(momentum)
        self.eps = float(eps)
        #: Sum over processes (SyncBatchNorm semantics, see :mod:`cnnkit.ops.norm`); set by distributed
        #: training for its duration, None otherwise. Not part of the config.
        self.sync: Callable[[np.ndarray], np.ndarray] | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != self._per_sample_ndim:
            other = (
                "BatchNorm2D" if len(input_shape) == 3 else "BatchNorm1D" if len(input_shape) == 1 else None
            )
            hint = f" (use {other} for this input)" if other else ""
            raise ShapeError(
                f"{self.name}: expected a per-sample input of shape {self._layout}{hint}, got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def build(self, input_shape: Shape) -> None:
        super().build(input_shape)  # type: ignore[misc]
        assert self.input_shape is not None
        c = self.input_shape[0]
        self.params["weight"] = constant(c, 1.0, self.dtype)
        self.params["bias"] = constant(c, 0.0, self.dtype)
        self.buffers["running_mean"] = constant(c, 0.0, self.dtype)
        self.buffers["running_var"] = constant(c, 1.0, self.dtype)
        self.buffers["num_batches_tracked"] = np.array(0, dtype=np.int64)
        self.grads = {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        try:
            out, self._cache = batch_norm_forward(
                x,
                self.params["weight"],
                self.params["bias"],
                self.buffers["running_mean"],
                self.buffers["running_var"],
                training,
                self.momentum,
                self.eps,
                allreduce=self.sync,
            )
        except ShapeError as err:
            raise ShapeError(f"{self.name}: {err}") from None
        if training:
            self.buffers["num_batches_tracked"] += 1
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise TrainingError(f"{self.name}: backward called before forward")
        dx, dgamma, dbeta = batch_norm_backward(dy, self._cache)
        self.grads["weight"] = dgamma
        self.grads["bias"] = dbeta
        return dx

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        config.update(momentum=self.momentum, eps=self.eps)
        return config


class BatchNorm2D(_BatchNorm, Layer):
    """Batch normalisation of images (notes §8.3), per channel over the batch and spatial axes.

    Training normalises with the batch mean and (biased) variance and updates the running statistics in
    place, ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance), as PyTorch.
    Inference uses the running statistics. Parameters ``weight`` (gamma, ones) and ``bias`` (beta,
    zeros); buffers ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (an
    int64 count of training batches): torchvision's state-dict names.

    >>> import numpy as np
    >>> bn = BatchNorm2D()
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(8, 4, 5, 5)).astype(np.float32)
    >>> y = bn(x, training=True)
    >>> bool(np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)), int(bn.buffers["num_batches_tracked"])
    (True, 1)
    >>> bn.buffers["running_mean"].shape
    (4,)
    """

    _per_sample_ndim = 3
    _layout = "(C, H, W)"


class BatchNorm1D(_BatchNorm, Layer):
    """Batch normalisation of feature vectors ``(features,)``, per feature over the batch.

    Same parameters, buffers and update rule as :class:`BatchNorm2D`.

    >>> import numpy as np
    >>> bn = BatchNorm1D()
    >>> y = bn(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32), training=True)
    >>> np.round(y, 3)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    """

    _per_sample_ndim = 1
    _layout = "(features,)"
