"""Stateful layers: parameters, lazy build from the input shape, forward and backward (floor 2)."""

from .base import Layer

# --- conv (layers/conv.py) ---
# --- end conv ---
# --- pool, activations, dense, flatten, dropout, norm ---
# --- end pool etc ---
