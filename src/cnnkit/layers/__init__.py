"""Stateful layers: parameters, lazy build from the input shape, forward and backward (floor 4)."""

from .base import Layer

# --- conv (layers/conv.py) ---
from .conv import Conv2D

# --- end conv ---
# --- pool, activations, dense, flatten, dropout, norm ---
# isort: split
from .activations import LeakyReLU, ReLU, Softmax
from .dense import Dense
from .dropout import Dropout
from .fused import ConvReLUMaxPool2D, FusedLayer, ReLUMaxPool2D
from .norm import BatchNorm1D, BatchNorm2D
from .pool import AdaptiveAvgPool2D, AvgPool2D, GlobalAvgPool2D, MaxPool2D, MinPool2D
from .reshape import Flatten
# --- end pool etc ---
