"""The loss head: forward to logits and backward from dL/dlogits, and measuring a model on data.

**Loss on logits.** The loss is softmax cross-entropy computed from the logits by the fused, numerically
stable :func:`cnnkit.ops.losses.cross_entropy_forward` (notes §7.1). The notes' networks end with a
"Softmax activation"; when a model is a chain of layers (:class:`cnnkit.layers.base.LayerChain`, as
``Sequential``) whose last layer is a ``Softmax`` over the class axis, training and evaluation run every
layer but that one and apply the fused loss to its input: the same mathematics (``-log softmax(z)_y``),
without the log of a rounded probability, and the gradient is simply ``(softmax(z) - onehot(y)) / N``.
``predict`` returns the model's own output in that case, and ``softmax(logits)`` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from ..layers.base import Layer, LayerChain
from ..ops.activations import softmax
from ..ops.losses import cross_entropy_forward
from .data_adapters import DataAdapter
from .inputs import check_batch

__all__ = ["LossHead", "inference_mode", "measure", "top_k_hits"]


class LossHead:
    """Forward to logits and backward from dL/dlogits, skipping a final Softmax layer (module doc)."""

    def __init__(self, model: Layer) -> None:
        self.model = model
        self._ends_with_softmax = False
        chain = getattr(model, "layers", None) if isinstance(model, LayerChain) else None
        if isinstance(chain, dict) and chain:
            last = list(chain.values())[-1]
            self._ends_with_softmax = last.registry_name == "Softmax" and getattr(last, "axis", 1) in (1, -1)

    @property
    def ends_with_softmax(self) -> bool:
        return self._ends_with_softmax

    @property
    def body(self) -> list[Layer] | None:
        """The layers as they run (``children()``: fused runs included), without the final Softmax; None
        when the model does not end in one. Read on every call: fusion may be switched after the head
        was made."""
        if not self._ends_with_softmax:
            return None
        return list(self.model.children().values())[:-1]

    def logits(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = x.astype(self.model.dtype, copy=False)
        body = self.body
        if body is None:
            return self.model.forward(x, training)
        for layer in body:
            x = layer.forward(x, training)
        return x

    def backward(self, dlogits: np.ndarray) -> None:
        body = self.body
        if body is None:
            self.model.backward(dlogits)
            return
        for layer in reversed(body):
            dlogits = layer.backward(dlogits)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if self.body is not None:
            return self.model.forward(x.astype(self.model.dtype, copy=False), False)
        return softmax(self.logits(x, False), axis=1)


@contextlib.contextmanager
def inference_mode(model: Layer) -> Iterator[None]:
    """``model.eval()`` for the block, then every layer's previous mode back."""
    layers = [model, *(layer for _, layer in model.named_layers())]
    modes = [layer.training for layer in layers]
    model.eval()
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes, strict=True):
            layer.training = mode


def top_k_hits(logits: np.ndarray, y: np.ndarray, k: int) -> int:
    """How many rows of ``logits`` have their label ``y`` among the ``k`` highest scores."""
    if k == 1:
        return int(np.count_nonzero(logits.argmax(axis=1) == y))
    top = np.argpartition(logits, -k, axis=1)[:, -k:]
    return int(np.count_nonzero((top == y[:, None]).any(axis=1)))


def measure(
    model: Layer,
    head: LossHead,
    source: DataAdapter,
    classes: int,
    top_k: Sequence[int] = (1,),
    progress: Any = None,
    op: str = "evaluate",
    where: str = "x",
    interrupted: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Mean loss and top-k accuracies of ``model`` on ``source`` in inference mode, and ``samples``."""
    loss_sum, seen = 0.0, 0
    hits = dict.fromkeys(top_k, 0)
    with inference_mode(model), contextlib.closing(source.batches(0)) as batches:
        for xb, yb in batches:
            if not source.checked:
                xb, yb = check_batch(xb, yb, model, classes, op, where)
            logits = head.logits(xb, False)
            loss, _ = cross_entropy_forward(logits, yb)
            n = len(yb)
            loss_sum += loss * n
            seen += n
            for k in top_k:
                hits[k] += top_k_hits(logits, yb, k)
            if progress is not None:
                progress.update(1)
            if interrupted is not None and interrupted():
                raise KeyboardInterrupt
    if seen == 0:
        raise DataError(f"{op}: {where} yielded no samples")
    out = {"loss": loss_sum / seen, "accuracy": hits.get(1, 0) / seen}
    out.update({f"top{k}_accuracy": hits[k] / seen for k in top_k if k != 1})
    if 1 not in hits:
        del out["accuracy"]
    out["samples"] = seen
    return out
