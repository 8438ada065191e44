"""Training (floor 6): ``fit``/``evaluate``/``predict``, callbacks, history and progress display.

``model.fit(x, y, epochs=5, validation_split=0.1)`` calls :func:`fit` here; see its docstring for the
training step (notes section 7), checkpoints and resuming. Optimizers and schedules live in
:mod:`cnnkit.optim`.
"""

from .callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
)
from .fit import evaluate, fit, predict
from .history import History
from .progress import ProgressLogger
from .trainer import NonFiniteError, Trainer

__all__ = [
    "fit",
    "evaluate",
    "predict",
    "History",
    "Trainer",
    "NonFiniteError",
    "ProgressLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "LearningRateScheduler",
    "LambdaCallback",
]
