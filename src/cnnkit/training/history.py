"""History: what ``fit`` returns, one list per metric with one value per epoch (as Keras)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ..errors import ConfigError
from ..utils.atomic import write_text_atomic
from .callbacks import Callback

__all__ = ["History", "HistoryRecorder"]


class History:
    """Per-epoch metrics of a training run.

    ``history["loss"][i]`` is the mean training loss of epoch ``epoch[i]`` (0-based), and likewise for
    ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` (the rate used during the epoch), ``time``
    (seconds, validation included) and ``images_per_sec`` (training throughput). ``params`` records the
    run's settings; ``interrupted`` is True when Ctrl-C ended training early, and ``stopped_epoch`` is the
    epoch after which a callback (early stopping) ended it.
    """

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict[str, Any] = dict(params or {})
        self.interrupted = False
        self.stopped_epoch: int | None = None

    def append(self, epoch: int, logs: dict[str, Any]) -> None:
        """Record the metrics of ``epoch``; a metric missing in earlier epochs is padded with NaN."""
        for key in self.history:
            if key not in logs:
                self.history[key].append(math.nan)
        for key, value in logs.items():
            column = self.history.setdefault(key, [math.nan] * len(self.epoch))
            column.append(float(value))
        self.epoch.append(int(epoch))

    def __len__(self) -> int:
        return len(self.epoch)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def last(self) -> dict[str, float]:
        """The metrics of the last recorded epoch (empty before the first)."""
        return {key: values[-1] for key, values in self.history.items() if values}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``history``, ``epoch``, ``params``, ``interrupted``, ``stopped_epoch``)."""
        return {
            "history": {key: list(values) for key, values in self.history.items()},
            "epoch": list(self.epoch),
            "params": dict(self.params),
            "interrupted": self.interrupted,
            "stopped_epoch": self.stopped_epoch,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        try:
            out = cls(data.get("params"))
            out.history = {str(k): [float(v) for v in values] for k, values in data["history"].items()}
            out.epoch = [int(e) for e in data["epoch"]]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"History.from_dict: not a history dict ({err})") from None
        out.interrupted = bool(data.get("interrupted", False))
        out.stopped_epoch = data.get("stopped_epoch")
        return out

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The history as JSON text; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last().items())
        flag = ", interrupted" if self.interrupted else ""
        return f"History({len(self)} epochs{flag}; last: {last})"


class HistoryRecorder(Callback):
    """Appends each epoch's metrics to the trainer's :class:`History` (Keras's History callback); ``fit``
    runs it before the user's callbacks, so they see the epoch in ``trainer.history``."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.trainer is not None and logs is not None:
            self.trainer.history.append(epoch, logs)
