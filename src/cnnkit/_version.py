"""The version of cnnkit (floor 1: imported by the model files it writes)."""

__version__ = "0.1.0"
