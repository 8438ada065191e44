"""Learning-rate schedules, stepped once per epoch, with the formulas of ``torch.optim.lr_scheduler``.

The learning rate eta of the notes' update ``W_new = W_old - eta * dL/dW`` (section 7.3) need not stay
fixed: large steps early make fast progress, small steps late settle into a minimum.

Epochs count from 0, and ``lr_at(epoch, base_lr)`` is the rate used *during* that epoch, which is what a
PyTorch scheduler gives after ``epoch`` calls of ``scheduler.step()``:

- :class:`StepLR`: ``base_lr * gamma ** (epoch // step_size)``;
- :class:`CosineAnnealingLR`: ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``;
- :class:`ReduceLROnPlateau`: multiply the rate by ``factor`` when a monitored metric (the validation loss
  by default) has not improved for more than ``patience`` epochs.

Use them in training through :class:`cnnkit.training.LearningRateScheduler` (``fit`` also accepts a schedule
directly in its ``callbacks`` list and wraps it).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..utils.checks import check_int, check_number

__all__ = ["Schedule", "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _positive_int(value: Any, name: str, owner: str) -> int:
    return check_int(value, name, owner, 1)


def _non_negative(value: Any, name: str, owner: str) -> float:
    checked = check_number(value, name, owner, low=0.0, kind="a finite number")
    assert checked is not None
    return checked


class Schedule:
    """A per-epoch learning-rate rule given in closed form by :meth:`lr_at`."""

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The learning rate for (0-based) ``epoch`` when the optimizer started at ``base_lr``."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepLR(Schedule):
    """Decay by ``gamma`` every ``step_size`` epochs: ``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _positive_int(step_size, "step_size", "StepLR")
        self.gamma = _non_negative(gamma, "gamma", "StepLR")

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(Schedule):
    """Half a cosine from ``base_lr`` down to ``eta_min`` over ``T_max`` epochs (SGDR without restarts).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``; past ``T_max`` the cosine
    continues, so the rate rises again, as in PyTorch.
    """

    def __init__(self, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803 (PyTorch's name)
        self.T_max = _positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = _non_negative(eta_min, "eta_min", "CosineAnnealingLR")

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2

    def get_config(self) -> dict[str, Any]:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class ReduceLROnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (PyTorch's rule).

    After each epoch, :meth:`step` compares the metric with the best so far. In ``mode="min"`` with
    ``threshold_mode="rel"`` (the default) it is an improvement when ``metric < best * (1 - min_delta)``
    (``"abs"``: ``metric < best - min_delta``; ``mode="max"`` mirrors both). After more than ``patience``
    epochs without improvement the rate becomes ``max(lr * factor, min_lr)`` and ``cooldown`` epochs pass
    before bad epochs are counted again. A change smaller than ``eps`` is ignored.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        mode: str = "min",
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        owner = "ReduceLROnPlateau"
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{owner}: monitor must be a metric name such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.factor = _non_negative(factor, "factor", owner)
        if not self.factor < 1.0:
            raise ConfigError(f"{owner}: factor must be < 1 (the rate is multiplied by it), got {factor!r}")
        check_int(patience, "patience", owner, 0)
        check_int(cooldown, "cooldown", owner, 0)
        if mode not in ("min", "max"):
            raise ConfigError(f"{owner}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"{owner}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.patience = patience
        self.cooldown = cooldown
        self.min_delta = _non_negative(min_delta, "min_delta", owner)
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.min_lr = _non_negative(min_lr, "min_lr", owner)
        self.eps = _non_negative(eps, "eps", owner)
        self.reset()

    def reset(self) -> None:
        """Forget the best value and the counters."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than ``min_delta``."""
        if self.mode == "min":
            bound = best * (1 - self.min_delta) if self.threshold_mode == "rel" else best - self.min_delta
            return current < bound
        bound = best * (1 + self.min_delta) if self.threshold_mode == "rel" else best + self.min_delta
        return current > bound

    def step(self, metric: float, lr: float) -> float:
        """Record this epoch's ``metric`` and return the learning rate for the next epoch."""
        current = float(metric)
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            if lr - new_lr > self.eps:
                return new_lr
        return lr

    def lr_at(self, epoch: int, base_lr: float) -> float:
        raise ConfigError(
            "ReduceLROnPlateau: the rate depends on the monitored metric; call step(metric, lr) after each epoch"
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-able counters (the best value may be +-inf, which Python's json writes as Infinity)."""
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])

    def get_config(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "mode": self.mode,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
        }
