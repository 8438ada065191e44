"""Callbacks: code that runs at fixed points of ``fit`` (Keras's design).

A callback sees the model (``self.model``), the run's settings (``self.params``: epochs, batch size,
steps per epoch, the metric names, ...) and the trainer (``self.trainer``, with its ``optimizer``,
``history`` and a ``stop_training`` flag that ends training after the current batch). Hooks, in order::

    on_train_begin(logs)                       after the inputs are checked, before the first epoch
      on_epoch_begin(epoch, logs)              epochs count from 0
        on_batch_begin(batch, logs)
        on_batch_end(batch, logs)              logs: loss, accuracy, size of this batch
      on_epoch_end(epoch, logs)                logs: loss, accuracy, val_loss, val_accuracy, lr, time, ...
    on_train_end(logs)                         also after Ctrl-C or an early stop

Callbacks whose state matters for resuming (:class:`EarlyStopping`, :class:`ModelCheckpoint`,
:class:`LearningRateScheduler` with a plateau rule) implement ``state_dict``/``load_state_dict``; ``fit``
stores that state in its checkpoints.

The notes' advice "monitor training/validation loss: stop when validation loss increases" (section 12,
tip 6) is :class:`EarlyStopping` with ``monitor="val_loss"``.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..optim.schedules import ReduceLROnPlateau, Schedule
from ..utils.atomic import write_text_atomic
from ..utils.checks import check_int, check_number

if TYPE_CHECKING:
    from ..layers.base import Layer

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "LearningRateScheduler",
    "LambdaCallback",
]

Logs = dict[str, Any]


class Callback:
    """Base class: every hook does nothing.

    ``chief_only = True`` marks a callback with side effects outside the process (files, output): it
    runs only where the trainer's :attr:`~cnnkit.training.Trainer.is_chief` is True (always, unless a
    distributed trainer says otherwise).
    """

    #: Run only on the chief process (writes files or prints); see the class docstring.
    chief_only: bool = False

    def __init__(self) -> None:
        self.trainer: Any = None  # the cnnkit.training.Trainer running fit (not imported: it imports us)
        self.model: Layer | None = None
        self.params: dict[str, Any] = {}

    def set_trainer(self, trainer: Any) -> None:
        """Called by ``fit`` before ``on_train_begin``."""
        self.trainer = trainer
        self.model = trainer.model
        self.params = trainer.params

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Before the first epoch (checks of settings belong here: they run before any training)."""

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """At the start of (0-based) ``epoch``."""

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Before the training step on ``batch``."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """After the training step on ``batch``; ``logs`` has its ``loss``, ``accuracy`` and ``size``."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """After ``epoch`` and its validation; ``logs`` holds the epoch's metrics."""

    def on_train_end(self, logs: Logs | None = None) -> None:
        """After the last epoch, an early stop or Ctrl-C (not after an error)."""

    def state_dict(self) -> dict[str, Any] | None:
        """JSON-able state saved in checkpoints, or None for a stateless callback."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (called after ``on_train_begin`` when resuming)."""

    # helpers for subclasses
    def _require_metric(self, monitor: str) -> None:
        metrics = self.params.get("metrics")
        if metrics is not None and monitor not in metrics:
            hint = (
                "; pass validation_data= or validation_split= to fit to get validation metrics"
                if monitor.startswith("val_")
                else ""
            )
            raise ConfigError(
                f"{type(self).__name__}: monitor {monitor!r} is not a metric of this run; "
                f"available: {', '.join(metrics)}{hint}"
            )

    def _print(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class CallbackList:
    """Runs a list of callbacks in order; ``internal`` ones (``fit``'s progress display) run first and
    hold no checkpoint state. On a trainer whose ``is_chief`` is False, ``chief_only`` callbacks do not
    run (their checkpoint keys stay the same on every process)."""

    def __init__(self, callbacks: list[Callback], internal: list[Callback] | None = None) -> None:
        self.callbacks = callbacks
        self.internal = list(internal or [])
        self._chief = True

    def __iter__(self):
        return iter(self.callbacks)

    def _active(self) -> list[Callback]:
        every = [*self.internal, *self.callbacks]
        return every if self._chief else [cb for cb in every if not cb.chief_only]

    def set_trainer(self, trainer: Any) -> None:
        """Give every callback the trainer (called by ``fit`` before ``on_train_begin``)."""
        self._chief = bool(getattr(trainer, "is_chief", True))
        for cb in self._active():
            cb.set_trainer(trainer)

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback that runs here."""
        for cb in self._active():
            getattr(cb, hook)(*args)

    def keys(self) -> list[str]:
        """Stable names of the callbacks for checkpoint state: ``"<index>.<ClassName>"``."""
        return [f"{i}.{type(cb).__name__}" for i, cb in enumerate(self.callbacks)]

    def state_dict(self) -> dict[str, Any]:
        out = {}
        for key, cb in zip(self.keys(), self.callbacks, strict=True):
            state = cb.state_dict()
            if state is not None:
                out[key] = state
        return out

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for key, cb in zip(self.keys(), self.callbacks, strict=True):
            if key in states:
                cb.load_state_dict(states[key])


def _resolve_mode(mode: str, monitor: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if ("acc" in monitor or monitor.endswith("images_per_sec")) else "min"
    return mode


def _check_monitor(monitor: Any, owner: str) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError(f"{owner}: monitor must be a metric name such as 'val_loss', got {monitor!r}")
    return monitor


def _monitored_value(logs: Logs | None, monitor: str, owner: str) -> float | None:
    value = (logs or {}).get(monitor)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs (at least one).

    An epoch improves when its value beats the best so far by more than ``min_delta`` (below it for
    ``mode="min"``, above for ``"max"``; ``"auto"`` picks ``max`` for accuracies and ``min`` otherwise).
    With ``restore_best_weights`` the weights (and buffers) of the best epoch are put back when training
    ends, whether it ended by this early stop, because the epochs ran out (unlike Keras 2), or by Ctrl-C.

    The best weights live in memory only: after ``fit(resume_from=...)`` the best epoch counts only if it
    comes after the resume (the best value and the patience counter are restored, the weights cannot be).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        self.monitor = _check_monitor(monitor, "EarlyStopping")
        self.patience = check_int(patience, "patience", "EarlyStopping", 0)
        check_number(min_delta, "min_delta", "EarlyStopping", low=0.0)
        self.min_delta = float(min_delta)
        self.mode = _resolve_mode(mode, self.monitor, "EarlyStopping")
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, np.ndarray] | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.last_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._require_metric(self.monitor)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.last_epoch = epoch
        value = _monitored_value(logs, self.monitor, "EarlyStopping")
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights and self.model is not None:
                self.best_weights = {k: v.copy() for k, v in self.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1) and self.trainer is not None:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.verbose:
                self._print(
                    f"EarlyStopping: {self.monitor} has not improved for {self.wait} epochs "
                    f"(best {self.best:.4f} at epoch {(self.best_epoch or 0) + 1}); stopping"
                )

    def on_train_end(self, logs: Logs | None = None) -> None:
        if not self.restore_best_weights or self.model is None:
            return
        if self.best_weights is None:
            if self.best_epoch is not None and self.verbose:
                self._print(
                    f"EarlyStopping: the best epoch ({self.best_epoch + 1}) came before the resume; "
                    "its weights are not in memory, keeping the current ones"
                )
            return
        if self.best_epoch != self.last_epoch:
            self.model.load_state_dict(self.best_weights)
            if self.verbose:
                self._print(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = state["best_epoch"]
        self.wait = int(state["wait"])


class ModelCheckpoint(Callback):
    """Save a checkpoint (model, optimizer state, training state) at the end of epochs.

    ``path`` may hold ``{epoch}`` (1-based, as Keras: ``"ckpt-{epoch:02d}.cnnkit"``) and any metric name
    (``"{val_loss:.3f}"``). With ``save_best_only`` a file is written only when ``monitor`` improves on
    its best value. The file is a model file that :func:`cnnkit.io.load_model` reads and that ``fit`` can
    continue from with ``resume_from=``. Files are written atomically.
    """

    chief_only = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        verbose: int = 0,
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.monitor = _check_monitor(monitor, "ModelCheckpoint")
        self.save_best_only = bool(save_best_only)
        self.mode = _resolve_mode(mode, self.monitor, "ModelCheckpoint")
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        #: Paths written so far, in order.
        self.saved: list[str] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.save_best_only:
            self._require_metric(self.monitor)

    def format_path(self, epoch: int, logs: Logs | None = None) -> str:
        """The file name for (0-based) ``epoch``."""
        if "{" not in self.path:
            return self.path
        try:
            return self.path.format(epoch=epoch + 1, **(logs or {}))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"ModelCheckpoint: cannot format path {self.path!r}: {err!r}") from None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_best_only:
            value = _monitored_value(logs, self.monitor, "ModelCheckpoint")
            improved = value is not None and (value < self.best if self.mode == "min" else value > self.best)
            if not improved:
                return
            self.best = value
        path = self.format_path(epoch, logs)
        assert self.trainer is not None
        self.trainer.save_checkpoint(path)
        self.saved.append(path)
        if self.verbose:
            self._print(f"ModelCheckpoint: saved {path}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (0-based) then every metric.

    After each epoch the whole file is rewritten atomically (a crash never leaves half a row or loses
    earlier rows). When resuming, the rows of the epochs before the resume (from the history) are kept;
    with ``append=True`` the rows already in the file come first.
    """

    chief_only = True

    def __init__(self, path: str | os.PathLike[str], separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.separator = separator
        self.append = bool(append)
        self.rows: list[dict[str, Any]] = []
        self._previous: list[dict[str, str]] = []
        self._previous_columns: list[str] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._previous, self._previous_columns = [], []
        if self.append and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle, delimiter=self.separator)
                self._previous = list(reader)
                self._previous_columns = list(reader.fieldnames or [])
        self.rows = []
        history = self.trainer.history if self.trainer is not None else None
        if history is not None:
            for i, epoch in enumerate(history.epoch):
                self.rows.append({"epoch": epoch, **{k: v[i] for k, v in history.history.items()}})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.rows.append({"epoch": epoch, **(logs or {})})
        self.write()

    def write(self) -> None:
        """Rewrite the file from the rows (atomically)."""
        columns = list(self._previous_columns)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, delimiter=self.separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._previous)
        for row in self.rows:
            writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
        write_text_atomic(self.path, buffer.getvalue())


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate each epoch from a schedule.

    ``schedule`` is a :class:`cnnkit.optim.Schedule` (``StepLR``, ``CosineAnnealingLR``: the rate for
    epoch ``e`` is ``schedule.lr_at(e, optimizer.initial_lr)``, set before the epoch), a
    :class:`cnnkit.optim.ReduceLROnPlateau` (stepped after each epoch with its monitored metric), or a
    function ``epoch -> lr`` (or ``(epoch, current_lr) -> lr``, as Keras).
    """

    def __init__(self, schedule: Schedule | Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not isinstance(schedule, Schedule) and not callable(schedule):
            raise ConfigError(
                f"LearningRateScheduler: schedule must be a cnnkit.optim schedule or a function epoch -> lr, "
                f"got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.verbose = verbose
        self._two_args = False
        if not isinstance(schedule, Schedule):
            try:
                params = inspect.signature(schedule).parameters.values()
                positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                self._two_args = len(positional) >= 2
            except (TypeError, ValueError):
                self._two_args = False

    def _set(self, lr: Any, epoch: int) -> None:
        assert self.trainer is not None
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
            raise ConfigError(
                f"LearningRateScheduler: the schedule returned {lr!r} for epoch {epoch}, not a number"
            )
        if not (math.isfinite(float(lr)) and float(lr) >= 0):
            raise ConfigError(f"LearningRateScheduler: the schedule returned lr={lr!r} for epoch {epoch}")
        old = self.trainer.optimizer.lr
        self.trainer.optimizer.lr = float(lr)
        if self.verbose and float(lr) != old:
            self._print(f"LearningRateScheduler: epoch {epoch + 1}: lr {old:.4g} -> {float(lr):.4g}")

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if isinstance(self.schedule, ReduceLROnPlateau):
            self._require_metric(self.schedule.monitor)
            self.schedule.reset()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.trainer is not None
        if isinstance(self.schedule, ReduceLROnPlateau):
            return
        if isinstance(self.schedule, Schedule):
            self._set(self.schedule.lr_at(epoch, self.trainer.optimizer.initial_lr), epoch)
        elif self._two_args:
            self._set(self.schedule(epoch, self.trainer.optimizer.lr), epoch)
        else:
            self._set(self.schedule(epoch), epoch)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if isinstance(self.schedule, ReduceLROnPlateau):
            value = _monitored_value(logs, self.schedule.monitor, "LearningRateScheduler")
            if value is not None:
                assert self.trainer is not None
                self._set(self.schedule.step(value, self.trainer.optimizer.lr), epoch + 1)

    def state_dict(self) -> dict[str, Any] | None:
        if isinstance(self.schedule, ReduceLROnPlateau):
            return self.schedule.state_dict()
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.schedule, ReduceLROnPlateau):
            self.schedule.load_state_dict(state)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    _HOOKS = (
        "on_train_begin",
        "on_epoch_begin",
        "on_batch_begin",
        "on_batch_end",
        "on_epoch_end",
        "on_train_end",
    )

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        unknown = sorted(set(hooks) - set(self._HOOKS))
        if unknown:
            raise ConfigError(f"LambdaCallback: unknown hooks {unknown}; known: {', '.join(self._HOOKS)}")
        for name, func in hooks.items():
            if not callable(func):
                raise ConfigError(f"LambdaCallback: {name} must be callable, got {type(func).__name__}")
            setattr(self, name, func)
