"""The :class:`Trainer`: the state of one ``fit`` call and the training step (notes section 7).

Each training step is the notes' recipe: a forward pass in training mode, the cross-entropy loss of
§7.1 on the class scores, backpropagation (§7.2) through the layers in reverse, optionally clipping the
gradient's global norm, and the optimizer's update (§7.3, or a refinement of it).

**Extending it** (distributed training, other losses): subclass and pass ``fit(...,
trainer_class=MyTrainer)``. The pieces, each one overridable method:

- :meth:`Trainer.train_step` ``(xb, yb) -> (loss_sum, correct)``: one batch, all of it. By default
  :meth:`compute_gradients` then :meth:`apply_gradients`; a data-parallel trainer averages the
  gradients across processes in between (``compute_gradients(xb, yb, loss_scale=1 / world)``, an
  allreduce-sum of every ``owner.grads[key]`` of :meth:`parameters`, then ``apply_gradients()``).
- :meth:`Trainer.epoch_batches` ``(epoch)``: the batches one process trains on in that epoch.
- :meth:`Trainer.evaluate` ``(data) -> {"loss", "accuracy", "samples"}``: validation after each epoch.
- :attr:`Trainer.is_chief` (True here): only the chief shows progress, writes checkpoints and runs
  ``chief_only`` callbacks (:class:`~cnnkit.training.ModelCheckpoint`, :class:`~cnnkit.training.CSVLogger`).

**Checkpoints and resume.** ``checkpoint_path`` saves, after every epoch, the model, the optimizer
state and a training state (epochs done, the history, the shuffling seed, callback state; the layers'
generator states travel in the model file). :meth:`resume` loads all of it, so that 4 epochs in one run
and 2 + 2 with a resume give identical weights.

**Failures.** A non-finite loss or gradient norm raises :class:`~cnnkit.errors.TrainingError` naming the
epoch and batch, before the update: the model keeps the *last good* weights (buffers such as batch-norm
running statistics are put back to their values before the failing forward pass).

**Signals.** The first Ctrl-C (SIGINT) or SIGTERM stops training cleanly at the end of the current step
(a second one stops at once): the weights after the last completed step are kept, the callbacks'
``on_train_end`` run, and the returned history has ``interrupted = True``. The handlers are installed
only in the main thread, only where the default handler is in place, and put back afterwards.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError, TrainingError
from ..layers.base import Layer
from ..ops.losses import cross_entropy_backward, cross_entropy_forward
from ..optim.clipping import clip_grad_norm, global_grad_norm
from ..optim.optimizers import Optimizer, optimizer_from_state
from .callbacks import Callback, CallbackList
from .data_adapters import ArrayAdapter, DataAdapter
from .head import LossHead, measure, top_k_hits
from .history import History, HistoryRecorder
from .inputs import Batch, check_batch
from .progress import ProgressLogger

__all__ = ["NonFiniteError", "Trainer"]

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C"}
if hasattr(signal, "SIGTERM"):
    _SIGNAL_NAMES[signal.SIGTERM] = "SIGTERM"


class NonFiniteError(Exception):
    """Raised inside a step when the loss or the gradient norm is not finite (``fit`` turns it into a
    :class:`~cnnkit.errors.TrainingError` naming the epoch and batch)."""

    def __init__(self, what: str, value: float) -> None:
        super().__init__(what)
        self.what, self.value = what, value


class Trainer:
    """The state of one ``fit`` call; callbacks reach it as ``self.trainer``.

    Attributes callbacks may use: ``model``, ``optimizer``, ``history``, ``params``, ``epoch`` (the
    current 0-based epoch), ``stop_training`` (set it to end training after the current batch), and
    :meth:`save_checkpoint`. See the module docstring for the methods a subclass overrides.
    """

    def __init__(
        self,
        model: Layer,
        train: DataAdapter,
        val: DataAdapter | None,
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
        self.progress = ProgressLogger(verbose) if verbose else None
        internal: list[Callback] = [self.progress] if self.progress else []
        internal.append(HistoryRecorder())
        self.callbacks = CallbackList(callbacks, internal=internal)
        self.epochs = epochs
        self.seed = seed
        self.verbose = verbose
        self.clip_norm = clip_norm
        self.checkpoint_path = checkpoint_path
        self.params = params
        self.history = History(params)
        self.head = LossHead(model)
        self.start_epoch = 0
        self.epochs_done = 0
        self.epoch = 0
        self.stop_training = False
        self._stop_signal: str | None = None
        self._callback_states: dict[str, Any] = {}
        self._buffers = [(owner.buffers, key) for _, owner, key in model.named_buffers()]
        self._saved_buffers: list[np.ndarray] | None = None
        self._good_step: str | None = None

    # ------------------------------------------------------------------ extension points
    @property
    def is_chief(self) -> bool:
        """True on the process that shows progress and writes files (always, for this trainer)."""
        return True

    def parameters(self) -> Iterator[tuple[str, Layer, str]]:
        """``(name, owner, key)`` of every trainable parameter: ``owner.params[key]`` is the array,
        ``owner.grads[key]`` its gradient after :meth:`compute_gradients`."""
        for name, owner, key in self.model.named_parameters():
            if owner.trainable:
                yield name, owner, key

    def compute_gradients(self, xb: np.ndarray, yb: np.ndarray, loss_scale: float = 1.0) -> tuple[float, int]:
        """Forward in training mode, softmax cross-entropy, backward: sets every ``grads[key]`` to
        ``loss_scale * dL/dparam`` (``L`` the batch's mean loss). Returns ``(loss_sum, correct)``: the
        batch's summed loss and its number of correct top-1 predictions.

        Raises :class:`NonFiniteError` for a non-finite loss, with the buffers put back.
        """
        self._saved_buffers = [store[key].copy() for store, key in self._buffers]
        try:
            logits = self.head.logits(xb, True)
            loss, cache = cross_entropy_forward(logits, yb)
            if not math.isfinite(loss):
                raise NonFiniteError("loss", loss)
            self.head.backward(cross_entropy_backward(loss_scale, cache))
        except NonFiniteError:
            self._restore_buffers()
            raise
        return loss * len(yb), top_k_hits(logits, yb, 1)

    def apply_gradients(self) -> None:
        """Clip the gradients' global norm (``clip_norm``), check it is finite, and update the weights.

        Raises :class:`NonFiniteError` (weights untouched, buffers put back) for a non-finite norm.
        """
        if self.clip_norm is not None:
            norm = clip_grad_norm(self.model, self.clip_norm)
        else:
            norm = global_grad_norm(self.model)
        if not math.isfinite(norm):
            self._restore_buffers()
            raise NonFiniteError("gradient norm", norm)
        self._saved_buffers = None
        self.optimizer.step(self.model)

    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
        """One training step on a batch: :meth:`compute_gradients`, then :meth:`apply_gradients`.
        Returns ``(loss_sum, correct)`` for the batch."""
        loss_sum, correct = self.compute_gradients(xb, yb)
        self.apply_gradients()
        return loss_sum, correct

    def epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """The ``(images, labels)`` batches of ``epoch`` this process trains on."""
        return self.train_source.batches(epoch)

    def evaluate(self, data: DataAdapter) -> dict[str, float]:
        """Mean ``loss`` and ``accuracy`` of the model on ``data`` in inference mode, with ``samples``,
        the number of samples they are means over (validation after each epoch)."""
        return measure(
            self.model,
            self.head,
            data,
            self.classes,
            op="fit",
            where="validation_data",
            interrupted=lambda: self._stop_signal is not None,
        )

    def _restore_buffers(self) -> None:
        if self._saved_buffers is not None:
            for (store, key), value in zip(self._buffers, self._saved_buffers, strict=True):
                store[key][...] = value
            self._saved_buffers = None

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
        """Save model, optimizer state and training state to ``path`` (atomically; chief only)."""
        if not self.is_chief:
            return
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
        if isinstance(self.train_source, ArrayAdapter):
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
        if self.start_epoch >= self.epochs and self.verbose and self.is_chief:
            print(
                f"fit: {self.start_epoch} epochs are already done (epochs={self.epochs}); nothing to train",
                file=sys.stderr,
            )
        try:
            with self._deferred_stop():
                for epoch in range(self.start_epoch, self.epochs):
                    self.epoch = epoch
                    logs = self._run_epoch(epoch)
                    if logs is not None and self.checkpoint_path is not None:
                        self.save_checkpoint(self.checkpoint_path)
                    if self.stop_training:
                        self.history.stopped_epoch = epoch
                        break
        except KeyboardInterrupt:
            self._close_progress()
            self.history.interrupted = True
            if self.is_chief:
                print(
                    f"\nfit: interrupted during epoch {self.epoch + 1}/{self.epochs}; keeping {self._last_good()}; "
                    f"{len(self.history)} completed epochs in the history",
                    file=sys.stderr,
                )
        except BaseException:
            self._close_progress()
            raise
        self.callbacks.call("on_train_end", self.history.last())
        return self.history

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close(None)

    @contextlib.contextmanager
    def _deferred_stop(self) -> Iterator[None]:
        """Turn the first Ctrl-C or SIGTERM into a request honoured between steps (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        defaults = {signal.SIGINT: signal.default_int_handler}
        if hasattr(signal, "SIGTERM"):
            defaults[signal.SIGTERM] = signal.SIG_DFL
        previous = {sig: signal.getsignal(sig) for sig in defaults}
        ours = [sig for sig, handler in previous.items() if handler is defaults[sig]]

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            name = _SIGNAL_NAMES.get(signum, f"signal {signum}")
            self._stop_signal = name
            if self.is_chief:
                print(
                    f"\nfit: {name}: stopping after this step (send it again to stop at once)",
                    file=sys.stderr,
                )

        for sig in ours:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig in ours:
                signal.signal(sig, previous[sig])

    def _run_epoch(self, epoch: int) -> dict[str, float] | None:
        self.callbacks.call("on_epoch_begin", epoch, {})
        lr = self.optimizer.lr
        start = time.perf_counter()
        self._loss_sum, self._correct, self._seen = 0.0, 0, 0
        with contextlib.closing(self.epoch_batches(epoch)) as batches:
            for batch, (xb, yb) in enumerate(batches):
                self._train_batch(epoch, batch, xb, yb)
                if self._stop_signal is not None:
                    raise KeyboardInterrupt
                if self.stop_training:
                    break
        seen = self._seen
        if seen == 0:
            self._close_progress()
            return None
        train_time = time.perf_counter() - start
        logs = {"loss": self._loss_sum / seen, "accuracy": self._correct / seen}
        if self.val_source is not None:
            val = self.evaluate(self.val_source)
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        logs["lr"] = lr
        logs["time"] = time.perf_counter() - start
        logs["images_per_sec"] = seen / max(train_time, 1e-12)
        self.epochs_done = epoch + 1
        self.callbacks.call("on_epoch_end", epoch, logs)  # HistoryRecorder first: others see this epoch
        return logs

    def _last_good(self) -> str:
        if self._good_step is None:
            return "the weights it started with (no step had completed)"
        return f"the weights after the last completed step ({self._good_step})"

    def _train_batch(self, epoch: int, batch: int, xb: np.ndarray, yb: np.ndarray) -> None:
        """One training step with its checks, metrics and callbacks."""
        self.callbacks.call("on_batch_begin", batch, {})
        if not self.train_source.checked:
            xb, yb = check_batch(xb, yb, self.model, self.classes, "fit", "the DataLoader")
        try:
            loss_sum, hits = self.train_step(xb, yb)
        except NonFiniteError as bad:
            raise TrainingError(
                f"fit: the {bad.what} became {bad.value} at epoch {epoch + 1}/{self.epochs}, "
                f"batch {batch + 1}/{len(self.train_source)}; training stopped and the model keeps "
                f"{self._last_good()}. Try a lower learning rate (now {self.optimizer.lr:g}), "
                "clip_norm=1.0, or check the inputs for NaN or huge values"
            ) from None
        n = len(yb)
        self._seen += n
        self._loss_sum += loss_sum
        self._correct += hits
        self._good_step = f"epoch {epoch + 1}, batch {batch + 1}"
        self.callbacks.call("on_batch_end", batch, {"loss": loss_sum / n, "accuracy": hits / n, "size": n})
