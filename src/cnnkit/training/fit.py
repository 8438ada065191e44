"""The training loop: ``fit``, ``evaluate`` and ``predict`` (notes section 7).

Each training step is the notes' recipe: a forward pass in training mode, the cross-entropy loss of
section 7.1 on the class scores, backpropagation (section 7.2) through the layers in reverse, optionally
clipping the gradient's global norm, and the optimizer's update (section 7.3, or a refinement of it).

**Loss on logits.** The loss is softmax cross-entropy computed from the logits by the fused, numerically
stable :func:`cnnkit.ops.losses.cross_entropy_forward`. The notes' networks end with a "Softmax
activation"; when a :class:`~cnnkit.models.Sequential` model's last layer is a ``Softmax`` layer, training
and evaluation run the forward pass through every layer but that one and apply the fused loss to its
input. That is the same mathematics (``-log softmax(z)_y``), without ever taking the log of a rounded
probability, and its gradient is simply ``(softmax(z) - onehot(y)) / N``. ``predict`` returns the model's
own output in that case, and ``softmax(logits)`` otherwise.

**Reproducibility.** The order of the training samples in epoch ``e`` is a permutation drawn from a
generator seeded with ``(seed, e)`` (``seed=None`` draws a seed from the global generator, so
``cnnkit.set_seed`` makes it reproducible too). Dropout draws from the layers' own generators. With seeded
layers and the same ``seed``, two runs give the same weights and metrics bit for bit.

**Checkpoints and resume.** ``checkpoint_path=`` saves, after every epoch, the model, the optimizer state
and a training state (epochs done, the history, the shuffling seed, callback state; the layers' generator
states travel in the model file). ``resume_from=`` loads all of it and continues with the next epoch, so
that 4 epochs in one run and 2 + 2 with a resume give identical weights. ``epochs`` is the total, as in
Keras: ``fit(..., epochs=4, resume_from=p)`` after 2 saved epochs runs epochs 3 and 4.

**Failures.** A non-finite loss, or non-finite gradients, stop training with
:class:`~cnnkit.errors.TrainingError` naming the epoch and batch. The check happens before the update, so
the weights left in the model are the *last good* ones: those after the last step whose loss and gradients
were finite (buffers such as batch-norm running statistics are put back to their values before the failing
forward pass). Ctrl-C stops training cleanly at the end of the current step (press it twice to stop at
once): the weights after the last completed step are kept, callbacks' ``on_train_end`` run, and the
returned history has ``interrupted = True``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DTypeError, ShapeError, TrainingError
from ..layers.base import Layer
from ..models.sequential import Sequential
from ..ops._args import check_int
from ..ops.activations import softmax
from ..ops.losses import cross_entropy_backward, cross_entropy_forward
from ..optim.clipping import clip_grad_norm, global_grad_norm
from ..optim.optimizers import Adam, Optimizer, get_optimizer, optimizer_from_state
from ..optim.schedules import Schedule
from ..utils.memory import keep_freed_memory
from ..utils.random import global_rng
from .callbacks import Callback, CallbackList, LearningRateScheduler
from .history import History
from .progress import EpochProgress

__all__ = ["fit", "evaluate", "predict", "Trainer"]

Batch = tuple[np.ndarray, np.ndarray]


# ============================================================================================ checks
def _check_model(model: Any, op: str) -> Layer:
    if not isinstance(model, Layer):
        raise ConfigError(
            f"{op}: expected a cnnkit model (a Layer such as Sequential), got {type(model).__name__}"
        )
    return model


def _is_loader(obj: Any) -> bool:
    return (
        not isinstance(obj, (np.ndarray, list, tuple, dict, str, bytes))
        and hasattr(obj, "__iter__")
        and hasattr(obj, "__len__")
    )


def _as_images(x: Any, op: str, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ConfigError(
            f"{op}: {name} must be a numpy array of images or a DataLoader, got {type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise DTypeError(
            f"{op}: {name} must hold floats (float32 or float64), got {x.dtype}; scale pixels first, "
            f"e.g. {name} = {name}.astype(np.float32) / 255 (notes section 12: always normalise inputs)"
        )
    if x.ndim < 2:
        raise ShapeError(f"{op}: {name} needs a batch axis, (N, C, H, W) for images, got shape {x.shape}")
    return x


def _as_labels(y: Any, n: int, op: str, name: str) -> np.ndarray:
    if y is None:
        raise DataError(f"{op}: labels are missing: pass y (an (N,) array of class indices) with the images")
    y = np.asarray(y)
    if y.ndim != 1:
        hint = "; for one-hot rows use y.argmax(axis=1)" if y.ndim == 2 else ""
        raise ShapeError(f"{op}: {name} must be 1-D class indices of shape ({n},), got shape {y.shape}{hint}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DTypeError(
            f"{op}: {name} must hold integer class indices, got {y.dtype}; use {name}.astype(np.int64)"
        )
    if len(y) != n:
        raise DataError(f"{op}: the images and {name} differ in length: {n} images, {len(y)} labels")
    return y.astype(np.int64, copy=False)


def _check_label_range(y: np.ndarray, classes: int, op: str, name: str) -> None:
    if y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        bad = int(np.count_nonzero((y < 0) | (y >= classes)))
        raise DataError(
            f"{op}: {name} must be class indices in 0..{classes - 1} for a model with {classes} outputs, "
            f"got values from {low} to {high} ({bad} out of range)"
        )


def _shape_error(op: str, name: str, expected: tuple[int, ...], got: tuple[int, ...]) -> ShapeError:
    exp = ", ".join(map(str, expected))
    hint = ""
    if len(got) == len(expected) - 1 and tuple(got) == tuple(expected[1:]):
        hint = f"; add the channel axis with {name}[:, None]"
    elif len(got) == len(expected) and sorted(got) == sorted(expected) and len(got) == 3:
        hint = "; cnnkit uses channels-first NCHW, try .transpose(0, 3, 1, 2)"
    return ShapeError(
        f"{op}: the model expects samples of shape ({exp}), i.e. {name} of shape (N, {exp}), "
        f"got samples of shape {tuple(got)}{hint}"
    )


def _ensure_built(model: Layer, sample_shape: tuple[int, ...], op: str, name: str) -> None:
    if not model.built:
        model.build(tuple(int(s) for s in sample_shape))
    elif tuple(sample_shape) != tuple(model.input_shape):
        raise _shape_error(op, name, tuple(model.input_shape), tuple(sample_shape))


def _num_classes(model: Layer, op: str) -> int:
    out = model.output_shape
    if out is None or len(out) != 1:
        raise ShapeError(
            f"{op}: the model must output one score per class, per-sample shape (classes,), got {out}; "
            "end it with Flatten() and Dense(classes)"
        )
    if out[0] < 2:
        raise ShapeError(f"{op}: a classifier needs at least 2 outputs, the model has {out[0]}")
    return int(out[0])


# ============================================================================================ data
class _ArraySource:
    """Batches of in-memory arrays; the order of epoch ``e`` is a function of ``(seed, e)``."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray | None, batch_size: int, shuffle: bool, seed: int
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.checked = True

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray | None:
        """The sample order of ``epoch`` (None: in order)."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.order(epoch)
        n, bs = len(self.x), self.batch_size
        for start in range(0, n, bs):
            idx: Any = slice(start, start + bs) if order is None else order[start : start + bs]
            yield self.x[idx], (self.y[idx] if self.y is not None else None)


class _LoaderSource:
    """A DataLoader: ``set_epoch(e)`` before each pass, batches as it yields them (checked one by one)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.checked = False

    @property
    def num_samples(self) -> int | None:
        n = getattr(self.loader, "num_samples", None)
        return int(n) if n is not None else None

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int) -> Iterator[Batch]:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        iterator = iter(self.loader)
        try:
            for item in iterator:
                if isinstance(item, (tuple, list)):
                    yield item[0], (item[1] if len(item) > 1 else None)
                else:
                    yield item, None
        finally:
            close = getattr(iterator, "close", None)  # stop a prefetch thread now, not at garbage collection
            if close is not None:
                close()

    def first(self, epoch: int) -> Batch:
        """The first batch of ``epoch`` (to check shapes before training)."""
        iterator = self.batches(epoch)
        try:
            return next(iterator)
        except StopIteration:
            raise DataError("the DataLoader yielded no batches") from None
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def _check_batch(xb: Any, yb: Any, model: Layer, classes: int | None, op: str, where: str) -> Batch:
    """Per-batch checks for data that could not be checked up front (DataLoaders)."""
    if not isinstance(xb, np.ndarray) or not np.issubdtype(xb.dtype, np.floating):
        kind = xb.dtype if isinstance(xb, np.ndarray) else type(xb).__name__
        raise DTypeError(
            f"{op}: {where} gave images of type {kind}; the network needs float arrays, "
            "e.g. x.astype(np.float32) / 255 (notes section 12: always normalise inputs)"
        )
    if tuple(xb.shape[1:]) != tuple(model.input_shape):
        raise _shape_error(op, "x", tuple(model.input_shape), tuple(xb.shape[1:]))
    if classes is not None:
        if yb is None:
            raise DataError(f"{op}: {where} gave a batch without labels; it must yield (images, labels)")
        yb = np.asarray(yb)
        if yb.ndim != 1 or len(yb) != len(xb) or not np.issubdtype(yb.dtype, np.integer):
            raise DataError(
                f"{op}: {where} gave labels of shape {yb.shape} and dtype {yb.dtype} for {len(xb)} images; "
                f"expected integer class indices of shape ({len(xb)},)"
            )
        _check_label_range(yb, classes, op, f"the labels from {where}")
    return xb, yb


def _unpack_pair(x: Any, y: Any) -> tuple[Any, Any]:
    """``fit(model, (x, y))`` as ``fit(model, x, y)`` (a data set's ``train`` pair)."""
    if y is None and isinstance(x, tuple) and len(x) == 2 and all(isinstance(a, np.ndarray) for a in x):
        return x
    return x, y


def _source(
    x: Any, y: Any, *, batch_size: int, shuffle: bool, seed: int, op: str, name: str, labels: bool = True
) -> _ArraySource | _LoaderSource:
    if _is_loader(x):
        if y is not None:
            raise ConfigError(f"{op}: {name} is a DataLoader, which yields its own labels; do not pass y")
        if len(x) == 0:
            raise DataError(f"{op}: the DataLoader given as {name} is empty (0 batches)")
        return _LoaderSource(x)
    images = _as_images(x, op, name)
    if len(images) == 0 and labels:
        raise DataError(f"{op}: {name} is empty (0 samples)")
    targets = _as_labels(y, len(images), op, "y" if name == "x" else f"{name} labels") if labels else None
    return _ArraySource(images, targets, batch_size, shuffle, seed)


# ============================================================================================ model head
class _Head:
    """Forward to logits and backward from dL/dlogits, skipping a final Softmax layer (see module doc)."""

    def __init__(self, model: Layer) -> None:
        self.model = model
        self.body: list[Layer] | None = None
        if isinstance(model, Sequential) and len(model) > 0:
            last = model[-1]
            if last.registry_name == "Softmax" and getattr(last, "axis", 1) in (1, -1):
                self.body = list(model.layers.values())[:-1]

    @property
    def ends_with_softmax(self) -> bool:
        return self.body is not None

    def logits(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = x.astype(self.model.dtype, copy=False)
        if self.body is None:
            return self.model.forward(x, training)
        for layer in self.body:
            x = layer.forward(x, training)
        return x

    def backward(self, dlogits: np.ndarray) -> None:
        if self.body is None:
            self.model.backward(dlogits)
            return
        for layer in reversed(self.body):
            dlogits = layer.backward(dlogits)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if self.body is not None:
            return self.model.forward(x.astype(self.model.dtype, copy=False), False)
        return softmax(self.logits(x, False), axis=1)


@contextlib.contextmanager
def _inference_mode(model: Layer) -> Iterator[None]:
    """``model.eval()`` for the block, then every layer's previous mode back."""
    layers = [model, *(layer for _, layer in model.named_layers())]
    modes = [layer.training for layer in layers]
    model.eval()
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes, strict=True):
            layer.training = mode


def _top_k_hits(logits: np.ndarray, y: np.ndarray, k: int) -> int:
    if k == 1:
        return int(np.count_nonzero(logits.argmax(axis=1) == y))
    top = np.argpartition(logits, -k, axis=1)[:, -k:]
    return int(np.count_nonzero((top == y[:, None]).any(axis=1)))


def _measure(
    model: Layer,
    head: _Head,
    source: _ArraySource | _LoaderSource,
    classes: int,
    top_k: Sequence[int] = (1,),
    progress: Any = None,
    op: str = "evaluate",
    where: str = "x",
    interrupted: Any = None,
) -> dict[str, float]:
    """Mean loss and top-k accuracies of ``model`` on ``source`` in inference mode."""
    loss_sum, seen = 0.0, 0
    hits = dict.fromkeys(top_k, 0)
    with _inference_mode(model), contextlib.closing(source.batches(0)) as batches:
        for xb, yb in batches:
            if not source.checked:
                xb, yb = _check_batch(xb, yb, model, classes, op, where)
            logits = head.logits(xb, False)
            loss, _ = cross_entropy_forward(logits, yb)
            n = len(yb)
            loss_sum += loss * n
            seen += n
            for k in top_k:
                hits[k] += _top_k_hits(logits, yb, k)
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
    return out


# ============================================================================================ training
class _NonFinite(Exception):
    def __init__(self, what: str, value: float) -> None:
        super().__init__(what)
        self.what, self.value = what, value


class Trainer:
    """The state of one ``fit`` call; callbacks reach it as ``self.trainer``.

    Attributes callbacks may use: ``model``, ``optimizer``, ``history``, ``params``, ``epoch`` (the
    current 0-based epoch), ``stop_training`` (set it to end training after the current batch), and
    :meth:`save_checkpoint`.
    """

    def __init__(
        self,
        model: Layer,
        train: _ArraySource | _LoaderSource,
        val: _ArraySource | _LoaderSource | None,
        *,
        classes: int,
        optimizer: Optimizer,
        callbacks: list[Callback],
        epochs: int,
        seed: int,
        verbose: int,
        clip_norm: float | None,
        checkpoint_path: str | None,
        params: dict[str, Any],
    ) -> None:
        self.model = model
        self.train_source, self.val_source = train, val
        self.classes = classes
        self.optimizer = optimizer
        self.callbacks = CallbackList(callbacks)
        self.epochs = epochs
        self.seed = seed
        self.verbose = verbose
        self.clip_norm = clip_norm
        self.checkpoint_path = checkpoint_path
        self.params = params
        self.history = History(params)
        self.head = _Head(model)
        self.start_epoch = 0
        self.epochs_done = 0
        self.epoch = 0
        self.stop_training = False
        self._sigint = False
        self._callback_states: dict[str, Any] = {}
        self._buffers = [(owner.buffers, key) for _, owner, key in model.named_buffers()]
        self._good_step: str | None = None

    # ------------------------------------------------------------------ checkpoints
    def training_state(self) -> dict[str, Any]:
        """JSON-able state that, with the model and the optimizer state, lets ``fit`` resume."""
        return {
            "format": "cnnkit.fit",
            "version": 1,
            "epoch": self.epochs_done,
            "epochs": self.epochs,
            "seed": self.seed,
            "history": self.history.to_dict(),
            "callbacks": self.callbacks.state_dict(),
            "samples": self.params.get("samples"),
        }

    def save_checkpoint(self, path: str) -> None:
        """Save model, optimizer state and training state to ``path`` (atomically)."""
        from ..io.model_file import save_model

        save_model(
            self.model,
            path,
            optimizer_state=self.optimizer.state_dict(),
            training_state=self.training_state(),
        )

    def resume(self, path: str, optimizer_given: bool) -> None:
        """Load weights, optimizer and training state from a checkpoint written by ``fit``."""
        from ..io.model_file import read_checkpoint

        ckpt = read_checkpoint(path)
        state = ckpt.training_state
        if not isinstance(state, dict) or state.get("format") != "cnnkit.fit" or "epoch" not in state:
            raise ConfigError(
                f"fit: {path} holds no training state (it is a plain model file); to start from its weights, "
                "load it with cnnkit.io.load_model and call fit without resume_from"
            )
        if ckpt.optimizer_state is None:
            raise ConfigError(f"fit: {path} holds no optimizer state, so training cannot resume from it")
        source = ckpt.model
        if tuple(source.input_shape) != tuple(self.model.input_shape):
            raise ShapeError(
                f"fit: cannot resume from {path}: it was trained on samples of shape {tuple(source.input_shape)}, "
                f"this model takes {tuple(self.model.input_shape)}"
            )
        try:
            self.model.load_state_dict(source.state_dict())
        except ShapeError as err:
            raise ShapeError(f"fit: cannot resume from {path}: {err}") from None
        targets = {"": self.model, **dict(self.model.named_layers())}
        for name, layer in [("", source), *source.named_layers()]:
            rng = layer.rng_state()
            if rng is not None and name in targets:
                targets[name].set_rng_state(rng)
        if optimizer_given:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        else:
            self.optimizer = optimizer_from_state(ckpt.optimizer_state)
        if getattr(self.model, "class_names", None) is None and getattr(source, "class_names", None):
            self.model.class_names = list(source.class_names)
        self.history = History.from_dict(state["history"])
        self.history.params = self.params
        self.history.interrupted = False
        self.history.stopped_epoch = None
        self.seed = int(state["seed"])
        if isinstance(self.train_source, _ArraySource):
            self.train_source.seed = self.seed
        self.params["seed"] = self.seed
        self.start_epoch = self.epochs_done = int(state["epoch"])
        self.params["initial_epoch"] = self.start_epoch
        self._callback_states = dict(state.get("callbacks") or {})

    # ------------------------------------------------------------------ the loop
    def train(self) -> History:
        """Run the epochs; returns the history."""
        self.params["optimizer"] = {"class": type(self.optimizer).__name__, **self.optimizer.get_config()}
        self.history.params = self.params
        self.callbacks.set_trainer(self)
        self.callbacks.call("on_train_begin", {})
        if self._callback_states:
            self.callbacks.load_state_dict(self._callback_states)
        if self.start_epoch >= self.epochs and self.verbose:
            print(
                f"fit: {self.start_epoch} epochs are already done (epochs={self.epochs}); nothing to train",
                file=sys.stderr,
            )
        progress: EpochProgress | None = None
        try:
            with self._deferred_sigint():
                for epoch in range(self.start_epoch, self.epochs):
                    self.epoch = epoch
                    progress = EpochProgress(self.verbose, epoch, self.epochs, len(self.train_source))
                    logs = self._run_epoch(epoch, progress)
                    progress = None
                    if logs is not None and self.checkpoint_path is not None:
                        self.save_checkpoint(self.checkpoint_path)
                    if self.stop_training:
                        self.history.stopped_epoch = epoch
                        break
        except KeyboardInterrupt:
            if progress is not None:
                progress.close(None)
            self.history.interrupted = True
            print(
                f"\nfit: interrupted during epoch {self.epoch + 1}/{self.epochs}; keeping {self._last_good()}; "
                f"{len(self.history)} completed epochs in the history",
                file=sys.stderr,
            )
        except BaseException:
            if progress is not None:
                progress.close(None)
            raise
        self.callbacks.call("on_train_end", self.history.last())
        return self.history

    @contextlib.contextmanager
    def _deferred_sigint(self) -> Iterator[None]:
        """Turn the first Ctrl-C into a request honoured between steps (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._sigint:
                raise KeyboardInterrupt
            self._sigint = True
            print("\nfit: Ctrl-C: stopping after this step (press again to stop at once)", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _run_epoch(self, epoch: int, progress: EpochProgress) -> dict[str, float] | None:
        self.callbacks.call("on_epoch_begin", epoch, {})
        lr = self.optimizer.lr
        start = time.perf_counter()
        self._loss_sum, self._correct, self._seen = 0.0, 0, 0
        with contextlib.closing(self.train_source.batches(epoch)) as batches:
            for batch, (xb, yb) in enumerate(batches):
                self._train_batch(epoch, batch, xb, yb, progress)
                if self._sigint:
                    raise KeyboardInterrupt
                if self.stop_training:
                    break
        seen = self._seen
        if seen == 0:
            progress.close(None)
            return None
        train_time = time.perf_counter() - start
        logs = {"loss": self._loss_sum / seen, "accuracy": self._correct / seen}
        if self.val_source is not None:
            val = self._validate()
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        logs["lr"] = lr
        logs["time"] = time.perf_counter() - start
        logs["images_per_sec"] = seen / max(train_time, 1e-12)
        self.history.append(epoch, logs)
        self.epochs_done = epoch + 1
        progress.close(logs)
        self.callbacks.call("on_epoch_end", epoch, logs)
        return logs

    def _validate(self) -> dict[str, float]:
        """Mean loss and accuracy on the validation data (distributed training overrides it)."""
        return _measure(
            self.model,
            self.head,
            self.val_source,
            self.classes,
            op="fit",
            where="validation_data",
            interrupted=lambda: self._sigint,
        )

    def _last_good(self) -> str:
        if self._good_step is None:
            return "the weights it started with (no step had completed)"
        return f"the weights after the last completed step ({self._good_step})"

    def _train_batch(
        self, epoch: int, batch: int, xb: np.ndarray, yb: np.ndarray, progress: EpochProgress
    ) -> None:
        """One training step with its checks, metrics, progress and callbacks."""
        self.callbacks.call("on_batch_begin", batch, {})
        if not self.train_source.checked:
            xb, yb = _check_batch(xb, yb, self.model, self.classes, "fit", "the DataLoader")
        try:
            loss, hits = self._step(xb, yb)
        except _NonFinite as bad:
            raise TrainingError(
                f"fit: the {bad.what} became {bad.value} at epoch {epoch + 1}/{self.epochs}, "
                f"batch {batch + 1}/{len(self.train_source)}; training stopped and the model keeps "
                f"{self._last_good()}. Try a lower learning rate (now {self.optimizer.lr:g}), "
                "clip_norm=1.0, or check the inputs for NaN or huge values"
            ) from None
        n = len(yb)
        self._seen += n
        self._loss_sum += loss * n
        self._correct += hits
        self._good_step = f"epoch {epoch + 1}, batch {batch + 1}"
        progress.update(self._seen, self._loss_sum / self._seen, self._correct / self._seen)
        self.callbacks.call("on_batch_end", batch, {"loss": loss, "accuracy": hits / n, "size": n})

    def _step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
        saved = [store[key].copy() for store, key in self._buffers]
        try:
            logits = self.head.logits(xb, True)
            loss, cache = cross_entropy_forward(logits, yb)
            if not math.isfinite(loss):
                raise _NonFinite("loss", loss)
            self.head.backward(cross_entropy_backward(1.0, cache))
            if self.clip_norm is not None:
                norm = clip_grad_norm(self.model, self.clip_norm)
            else:
                norm = global_grad_norm(self.model)
            if not math.isfinite(norm):
                raise _NonFinite("gradient norm", norm)
        except _NonFinite:
            for (store, key), value in zip(self._buffers, saved, strict=True):
                store[key][...] = value
            raise
        self.optimizer.step(self.model)
        return loss, _top_k_hits(logits, yb, 1)


# ============================================================================================ public API
def _split_validation(x: Any, y: Any, validation_split: float, validation_data: Any) -> tuple[Any, Any, Any]:
    """Keras semantics: the last ``validation_split`` fraction of (x, y), taken before any shuffling."""
    if not validation_split:
        return x, y, validation_data
    if validation_data is not None:
        raise ConfigError("fit: give either validation_data or validation_split, not both")
    if _is_loader(x):
        raise ConfigError(
            "fit: validation_split needs arrays; with a DataLoader pass validation_data=<another DataLoader>"
        )
    x = _as_images(x, "fit", "x")
    y = _as_labels(y, len(x), "fit", "y")
    n = len(x)
    split_at = int(n * (1.0 - validation_split))
    if split_at < 1 or split_at >= n:
        raise DataError(
            f"fit: validation_split={validation_split} of {n} samples leaves {split_at} for training and "
            f"{n - split_at} for validation; both need at least 1"
        )
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])


def _normalise_callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (Callback, Schedule)):
        callbacks = [callbacks]
    if not isinstance(callbacks, Iterable):
        raise ConfigError(
            f"fit: callbacks must be a list of Callback objects, got {type(callbacks).__name__}"
        )
    out: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Schedule):
            cb = LearningRateScheduler(cb)
        if not isinstance(cb, Callback):
            raise ConfigError(
                f"fit: every callback must be a cnnkit.training.Callback (or a schedule), got {type(cb).__name__}"
            )
        out.append(cb)
    return out


def _validation_source(
    validation_data: Any, batch_size: int, model: Layer, classes: int
) -> _ArraySource | _LoaderSource | None:
    if validation_data is None:
        return None
    if _is_loader(validation_data):
        return _source(
            validation_data,
            None,
            batch_size=batch_size,
            shuffle=False,
            seed=0,
            op="fit",
            name="validation_data",
        )
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ConfigError(
            "fit: validation_data must be a pair (x_val, y_val) or a DataLoader, "
            f"got {type(validation_data).__name__}"
            + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else "")
        )
    xv, yv = validation_data
    source = _source(xv, yv, batch_size=batch_size, shuffle=False, seed=0, op="fit", name="validation_data")
    assert isinstance(source, _ArraySource)
    if tuple(source.x.shape[1:]) != tuple(model.input_shape):
        raise _shape_error("fit", "validation_data x", tuple(model.input_shape), tuple(source.x.shape[1:]))
    _check_label_range(source.y, classes, "fit", "validation labels")
    return source


def fit(
    model: Layer,
    x: Any,
    y: Any = None,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: Any = None,
    validation_split: float = 0.0,
    optimizer: Optimizer | str | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    shuffle: bool = True,
    verbose: int = 1,
    resume_from: str | None = None,
    checkpoint_path: str | None = None,
    clip_norm: float | None = None,
    class_names: Sequence[str] | None = None,
    distributed: str | bool | None = None,
) -> History:
    """Train ``model`` to classify ``x`` as ``y`` with softmax cross-entropy; returns a :class:`History`.

    Parameters
    ----------
    x, y:
        Images ``(N, C, H, W)`` as floats (uint8 pixels are refused: scale them with
        ``x.astype(np.float32) / 255``) and integer class labels ``(N,)``, or the pair ``(x, y)`` as ``x``;
        or ``x`` a DataLoader yielding ``(images, labels)`` batches, with ``y`` None. A loader's own
        ``batch_size``, ``shuffle`` and seed apply (``fit`` calls ``loader.set_epoch(e)`` before epoch
        ``e``, so give the loader the same seed when resuming).
    epochs:
        The total number of epochs (with ``resume_from``, the epochs already done count).
    validation_data, validation_split:
        ``(x_val, y_val)`` or a DataLoader, or the fraction of ``(x, y)`` to hold out: the *last* samples,
        before shuffling (Keras). Adds ``val_loss`` and ``val_accuracy`` to the metrics.
    optimizer:
        An :class:`cnnkit.optim.Optimizer` or a name (``"sgd"``, ``"adam"``, ``"adamw"``); default
        ``Adam(lr=1e-3)`` (or, when resuming, the optimizer saved in the checkpoint).
    callbacks:
        :class:`Callback` objects; a :mod:`cnnkit.optim` schedule is wrapped in a LearningRateScheduler.
    seed:
        Seeds the shuffling (epoch ``e`` uses the generator seeded with ``(seed, e)``). Weight
        initialisation follows the model's own ``seed`` (or ``cnnkit.set_seed``).
    verbose:
        0 silent, 1 a progress bar per epoch, 2 one line per epoch (all on stderr).
    resume_from, checkpoint_path:
        Continue from a checkpoint written by ``fit``/``ModelCheckpoint``; save one after every epoch.
    clip_norm:
        Clip the global L2 norm of the gradients to this value before each update.
    class_names:
        Label names (one per output), stored in ``model.class_names`` and saved with the model.
    distributed:
        ``"mpi"``: train on every process of the MPI job (:mod:`cnnkit.training.distributed`;
        ``batch_size`` is the global batch, split among them). ``None`` (default): ``"mpi"`` when the
        process was started by ``mpiexec`` with more than one process, else one process. ``False``:
        one process, even under ``mpiexec`` (each rank trains on its own).

    The metrics per epoch are ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (with validation),
    ``lr``, ``time`` (seconds) and ``images_per_sec``. Every argument and the data are checked before the
    first step: wrong shapes, lengths, label ranges or settings raise ShapeError / DataError / ConfigError /
    DTypeError naming the expected and the actual value.
    """
    op = "fit"
    keep_freed_memory()  # process-wide: freed step temporaries are reused, not re-faulted
    model = _check_model(model, op)
    epochs = check_int(epochs, "epochs", op, 1)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ConfigError(f"{op}: verbose must be 0, 1 or 2, got {verbose!r}")
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float))
        or not (0.0 <= validation_split < 1.0)
    ):
        raise ConfigError(f"{op}: validation_split must be a fraction in [0, 1), got {validation_split!r}")
    if clip_norm is not None and (
        isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float)) or not clip_norm > 0
    ):
        raise ConfigError(f"{op}: clip_norm must be a number > 0 or None, got {clip_norm!r}")
    if seed is None:
        seed = int(global_rng().integers(0, 2**32))
    else:
        seed = check_int(seed, "seed", op, 0)
    optimizer_given = optimizer is not None
    if optimizer is None:
        opt: Optimizer = Adam(lr=1e-3)
    elif isinstance(optimizer, (Optimizer, str)):
        opt = get_optimizer(optimizer)
    else:
        raise ConfigError(
            f"{op}: optimizer must be a cnnkit.optim optimizer or a name, got {type(optimizer).__name__}"
        )
    cbs = _normalise_callbacks(callbacks)

    # ---- data and model
    x, y = _unpack_pair(x, y)
    x, y, validation_data = _split_validation(x, y, validation_split, validation_data)
    train = _source(x, y, batch_size=batch_size, shuffle=bool(shuffle), seed=seed, op=op, name="x")
    if isinstance(train, _ArraySource):
        _ensure_built(model, train.x.shape[1:], op, "x")
        classes = _num_classes(model, op)
        _check_label_range(train.y, classes, op, "y")
    else:
        xb, yb = train.first(0)
        if not isinstance(xb, np.ndarray):
            raise DTypeError(f"{op}: the DataLoader must yield numpy arrays, got {type(xb).__name__}")
        _ensure_built(model, xb.shape[1:], op, "x")
        classes = _num_classes(model, op)
        _check_batch(xb, yb, model, classes, op, "the DataLoader")
    val = _validation_source(validation_data, batch_size, model, classes)
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != classes:
            raise ConfigError(
                f"{op}: class_names has {len(names)} names, but the model has {classes} outputs"
            )
        model.class_names = names

    metrics = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if val is not None else [])
    params = {
        "epochs": epochs,
        "initial_epoch": 0,
        "batch_size": batch_size if isinstance(train, _ArraySource) else getattr(x, "batch_size", None),
        "steps": len(train),
        "samples": train.num_samples,
        "validation_samples": None if val is None else val.num_samples,
        "shuffle": bool(shuffle),
        "seed": seed,
        "clip_norm": clip_norm,
        "verbose": verbose,
        "metrics": [*metrics, "lr", "time", "images_per_sec"],
    }
    comm = _communicator(distributed, op)
    if comm is not None:
        global_batch = params["batch_size"]
        if isinstance(global_batch, int) and global_batch < comm.size:
            raise ConfigError(
                f"{op}: the global batch size {global_batch} is smaller than the {comm.size} processes; "
                f"use a batch of at least {comm.size} (batch_size is split among the processes)"
            )
        from .distributed_trainer import DistributedTrainer

        trainer_class: type[Trainer] = DistributedTrainer
        extra: dict[str, Any] = {"comm": comm}
    else:
        trainer_class, extra = Trainer, {}
    trainer = trainer_class(
        model,
        train,
        val,
        classes=classes,
        optimizer=opt,
        callbacks=cbs,
        epochs=epochs,
        seed=seed,
        verbose=verbose,
        clip_norm=clip_norm,
        checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
        params=params,
        **extra,
    )
    if comm is not None:
        from .distributed_trainer import run_distributed

        return run_distributed(trainer, comm, resume_from, optimizer_given, train, val)
    if resume_from is not None:
        trainer.resume(str(resume_from), optimizer_given)
    with _no_input_grad(model):
        return trainer.train()


def _communicator(distributed: Any, op: str) -> Any:
    """The MPI communicator to train on, or None for one process (see ``fit``'s ``distributed``)."""
    from .distributed import launched_world_size

    if distributed is False:
        return None
    if distributed is None:
        launched = launched_world_size()
        if launched is None or launched == 1:
            return None
    elif distributed not in ("mpi", True):
        raise ConfigError(f"{op}: distributed must be 'mpi', None (automatic) or False, got {distributed!r}")
    from .distributed import Communicator

    comm = Communicator()
    return comm if comm.size > 1 else None


@contextlib.contextmanager
def _no_input_grad(model: Layer) -> Iterator[None]:
    """Skip dL/dx of the model's first layer while training: nothing reads the gradient of the images.

    The first convolution's input gradient is a third of its backward pass. The model's own setting is
    put back afterwards, so gradcheck and users calling ``model.backward`` still get dx.
    """
    if not hasattr(model, "needs_input_grad"):
        yield
        return
    previous = model.needs_input_grad
    model.needs_input_grad = False
    try:
        yield
    finally:
        model.needs_input_grad = previous


def evaluate(
    model: Layer,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 256,
    top_k: Sequence[int] = (1,),
    verbose: int = 0,
) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` on ``(x, y)`` (or a DataLoader).

    Runs in inference mode (dropout off, batch norm on its running statistics); every layer's previous
    mode is put back afterwards. ``top_k=(1, 5)`` adds ``top5_accuracy``: the fraction of samples whose
    label is among the ``k`` highest scores (every ``k > 1`` gets a ``top{k}_accuracy`` key).
    """
    op = "evaluate"
    model = _check_model(model, op)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    if isinstance(top_k, int):
        top_k = (top_k,)
    ks = tuple(check_int(k, "top_k", op, 1) for k in top_k)
    x, y = _unpack_pair(x, y)
    source = _source(x, y, batch_size=batch_size, shuffle=False, seed=0, op=op, name="x")
    if isinstance(source, _ArraySource):
        _ensure_built(model, source.x.shape[1:], op, "x")
    elif not model.built:
        raise ConfigError(f"{op}: the model is not built; build it (input_shape=...) or train it first")
    classes = _num_classes(model, op)
    if isinstance(source, _ArraySource):
        _check_label_range(source.y, classes, op, "y")
    for k in ks:
        if k > classes:
            raise ConfigError(f"{op}: top_k={k} is more than the model's {classes} classes")
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(source), desc="Evaluate", unit="batch", file=sys.stderr, dynamic_ncols=True)
    try:
        return _measure(model, _Head(model), source, classes, tuple(dict.fromkeys((1, *ks))), bar, op, "x")
    finally:
        if bar is not None:
            bar.close()


def predict(model: Layer, x: Any, batch_size: int = 256, *, verbose: int = 0) -> np.ndarray:
    """Class probabilities ``(N, classes)`` (rows sum to 1) for the images ``x`` (or a DataLoader).

    The softmax of the logits (notes section 6.2), or the model's own output if it ends with a Softmax
    layer; computed in inference mode, in the model's dtype.
    """
    op = "predict"
    model = _check_model(model, op)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    source = _source(x, None, batch_size=batch_size, shuffle=False, seed=0, op=op, name="x", labels=False)
    if isinstance(source, _ArraySource):
        if (
            model.built
            and source.x.ndim == len(model.input_shape)
            and source.x.shape == tuple(model.input_shape)
        ):
            raise ShapeError(
                f"{op}: x has the shape of one sample {source.x.shape}; pass a batch, e.g. x[None] for one image"
            )
        _ensure_built(model, source.x.shape[1:], op, "x")
    elif not model.built:
        raise ConfigError(f"{op}: the model is not built; build it (input_shape=...) or train it first")
    classes = _num_classes(model, op)
    head = _Head(model)
    outputs = []
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(source), desc="Predict", unit="batch", file=sys.stderr, dynamic_ncols=True)
    try:
        with _inference_mode(model), contextlib.closing(source.batches(0)) as batches:
            for xb, _ in batches:
                if not source.checked:
                    xb, _ = _check_batch(xb, None, model, None, op, "the DataLoader")
                outputs.append(head.probabilities(xb))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not outputs:
        return np.zeros((0, classes), dtype=model.dtype)
    return np.concatenate(outputs, axis=0)
