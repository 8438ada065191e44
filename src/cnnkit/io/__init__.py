"""Safe model files (floor 5): the safetensors layout, and cnnkit models and checkpoints stored in it.

No pickle anywhere: tensors are raw little-endian bytes, everything else is JSON.
"""

from .model_file import Checkpoint, ModelFileExistsError, load_model, read_checkpoint, save_model
from .safetensors import load_file, read_header, save_file
from .weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "Checkpoint",
    "LoadReport",
    "ModelFileExistsError",
    "load_file",
    "load_model",
    "load_weights",
    "read_checkpoint",
    "read_header",
    "read_state_dict",
    "save_file",
    "save_model",
]
