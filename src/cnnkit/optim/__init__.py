"""Optimizers, learning-rate schedules and gradient clipping (floor 5).

``opt = SGD(lr=0.1, momentum=0.9)`` then ``opt.step(model)`` after each backward pass; the update rules
match ``torch.optim`` (notes section 7.3 for plain gradient descent).
"""

from .clipping import clip_grad_norm, global_grad_norm
from .optimizers import SGD, Adam, AdamW, Optimizer, get_optimizer, optimizer_from_state
from .schedules import CosineAnnealingLR, ReduceLROnPlateau, Schedule, StepLR

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "get_optimizer",
    "optimizer_from_state",
    "Schedule",
    "StepLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
    "clip_grad_norm",
    "global_grad_norm",
]
