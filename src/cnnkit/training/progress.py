"""Progress display for ``fit``: a tqdm bar per epoch (``verbose=1``) or one line per epoch (``verbose=2``).

A bar needs a terminal: when stderr is not one (a log file, a pipe, a notebook's captured stream),
``verbose=1`` prints one line per epoch, as ``verbose=2`` and the ``cnnkit`` command do, instead of
filling the log with thousands of ``\r`` updates. :class:`ProgressLogger` is the callback ``fit`` adds
to show it (on the chief process only, see :attr:`cnnkit.training.Trainer.is_chief`).

The bar counts batches and shows tqdm's elapsed time and ETA; its postfix shows the running mean loss and
accuracy and the throughput in images per second, refreshed at most ``POSTFIX_INTERVAL`` times a second so
the display costs nothing next to a training step. Everything goes to stderr, leaving stdout to the user.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .callbacks import Callback

__all__ = ["EpochProgress", "ProgressLogger", "format_logs", "is_terminal"]

#: Seconds between postfix refreshes.
POSTFIX_INTERVAL = 0.1

_NAMES = {"accuracy": "acc", "val_accuracy": "val_acc", "images_per_sec": "img/s"}


def _format_value(key: str, value: float) -> str:
    if key == "images_per_sec":
        return f"{value:.0f}"
    if key == "time":
        return f"{value:.1f}s"
    if key == "lr":
        return f"{value:.3g}"
    return f"{value:.4f}"


def format_logs(logs: dict[str, Any], sep: str = " - ") -> str:
    """``loss 0.1234 - acc 0.9500 - ...`` for an epoch's metrics (time first)."""
    keys = sorted(logs, key=lambda k: (k != "time", k in ("lr", "images_per_sec"), k.startswith("val_")))
    return sep.join(f"{_NAMES.get(k, k)} {_format_value(k, float(logs[k]))}" for k in keys)


def is_terminal(file: Any) -> bool:
    """True when ``file`` is an interactive terminal (where a progress bar belongs)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class EpochProgress:
    """The display of one epoch; ``verbose`` 0 shows nothing, 1 a bar, 2 one line at the end."""

    def __init__(
        self, verbose: int, epoch: int, epochs: int, steps: int | None, file: IO[str] | None = None
    ) -> None:
        self.file = file if file is not None else sys.stderr
        if verbose == 1 and not is_terminal(self.file):
            verbose = 2  # no terminal: one line per epoch, no bar
        self.verbose = verbose
        self.desc = f"Epoch {epoch + 1}/{epochs}"
        self.start = time.perf_counter()
        self._last_postfix = 0.0
        self.bar: Any = None
        if verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=steps,
                desc=self.desc,
                unit="batch",
                file=self.file,
                leave=True,
                dynamic_ncols=True,
                mininterval=POSTFIX_INTERVAL,
            )

    def update(self, seen: int, loss: float, accuracy: float) -> None:
        """One more batch done; ``seen`` images so far, running mean ``loss`` and ``accuracy``."""
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self._last_postfix >= POSTFIX_INTERVAL:
            self._last_postfix = now
            rate = seen / max(now - self.start, 1e-9)
            self.bar.set_postfix_str(
                f"loss {loss:.4f} - acc {accuracy:.4f} - {rate:.0f} img/s", refresh=False
            )

    def close(self, logs: dict[str, Any] | None) -> None:
        """End the epoch, showing its final metrics (``None``: it was cut short)."""
        if self.bar is not None:
            if logs:
                shown = {k: v for k, v in logs.items() if k not in ("time", "lr")}
                self.bar.set_postfix_str(format_logs(shown), refresh=False)
            self.bar.close()
            self.bar = None
        elif self.verbose == 2 and logs:
            print(f"{self.desc} - {format_logs(logs)}", file=self.file, flush=True)


class ProgressLogger(Callback):
    """Shows each epoch's progress (an :class:`EpochProgress`) from the callback hooks; ``fit`` adds it
    first in the list, so the epoch's line is out before other callbacks print."""

    chief_only = True

    def __init__(self, verbose: int, file: IO[str] | None = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.file = file
        self.progress: EpochProgress | None = None
        self._seen, self._loss_sum, self._hits = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        epochs = int(self.params.get("epochs", epoch + 1))
        self.progress = EpochProgress(self.verbose, epoch, epochs, self.params.get("steps"), self.file)
        self._seen, self._loss_sum, self._hits = 0, 0.0, 0.0

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.progress is None or not logs:
            return
        n = int(logs.get("size", 0))
        self._seen += n
        self._loss_sum += float(logs["loss"]) * n
        self._hits += float(logs["accuracy"]) * n
        seen = max(self._seen, 1)
        self.progress.update(self._seen, self._loss_sum / seen, self._hits / seen)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.close(logs)

    def close(self, logs: dict[str, Any] | None = None) -> None:
        """End the epoch's display (``None``: it was cut short)."""
        if self.progress is not None:
            self.progress.close(logs)
            self.progress = None
