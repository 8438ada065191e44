"""Weights from elsewhere: ``cnnkit.load_weights(model, "resnet18.safetensors")``.

Reads a state dict with torchvision's names, as ``safetensors.torch.save_file(model.state_dict(), path)``
writes it (cnnkit's parameter and buffer names are torchvision's), and copies it into a built cnnkit model
in place. Also reads the weights of a ``.cnnkit`` model file and the named initializers of an ``.onnx``
file (a cnnkit export, or ``torch.onnx.export`` without batch-norm folding). float16, bfloat16 and float64
tensors are converted to the model's dtype.

Never unpickles: a PyTorch ``.pt``/``.pth`` file (a pickle, or a zip of pickles) is refused with the
three lines that convert it to safetensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FileFormatError, ShapeError
from ..layers.base import Layer

__all__ = ["LoadReport", "apply_state_dict", "check_weights_file", "load_weights", "read_state_dict"]

#: How to turn a pickled PyTorch checkpoint into a file cnnkit reads (run where you trust the file).
CONVERSION = (
    "import torch, safetensors.torch\n"
    '    state = torch.load("model.pt", map_location="cpu", weights_only=True)\n'
    '    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, "model.safetensors")'
)

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


@dataclass
class LoadReport:
    """What :func:`load_weights` did: names loaded, and the ones it could not load."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # "name: file (2, 3) float32, model (3, 2) float32"
    reinitialised: list[str] = field(default_factory=list)  # left at their fresh values on purpose (new head)

    @property
    def complete(self) -> bool:
        """True when every tensor of the model was loaded and the file had nothing else."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line per kind of problem (or ``all N tensors loaded``)."""
        if self.complete:
            return f"all {len(self.loaded)} tensors loaded"
        lines = [f"loaded {len(self.loaded)} tensors"]
        for what, names in (
            ("missing from the file", self.missing),
            ("unexpected (not in the model)", self.unexpected),
            ("mis-shaped", self.mismatched),
        ):
            if names:
                shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
                lines.append(f"{len(names)} {what}: {shown}")
        return "; ".join(lines)


def _refuse_pickle(path: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(4)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _PICKLE_SUFFIXES or head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise FileFormatError(
            f"{path}: a PyTorch pickle checkpoint; cnnkit never unpickles (a pickle can run code). "
            f"Convert it to safetensors once, where you trust the file:\n    {CONVERSION}"
        )


def check_weights_file(path: str | os.PathLike[str]) -> str:
    """The file exists and is not a pickle (without reading it); returns its name."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileFormatError(f"{name}: no such file" if not os.path.exists(name) else f"{name}: not a file")
    _refuse_pickle(name)
    return name


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``.safetensors``, ``.cnnkit`` or ``.onnx`` file (by suffix)."""
    name = check_weights_file(path)
    if name.lower().endswith(".onnx"):
        from .onnx_file import state_dict_from_onnx

        return state_dict_from_onnx(name)
    from .model_file import OPTIMIZER_PREFIX
    from .safetensors import load_file

    tensors, _ = load_file(name)
    return {key: value for key, value in tensors.items() if not key.startswith(OPTIMIZER_PREFIX)}


def load_weights(model: Layer, path: str | os.PathLike[str], strict: bool = True) -> LoadReport:
    """Copy the tensors in ``path`` into ``model``'s parameters and buffers (in place) by name.

    ``strict=True``: every model tensor must be in the file with its shape and the file must hold
    nothing else; otherwise one :class:`~cnnkit.errors.ShapeError` lists all missing, unexpected and
    mis-shaped names, and nothing is loaded. ``strict=False``: the tensors whose name and shape match are
    loaded, and the returned :class:`LoadReport` lists the rest. Floating tensors of any precision
    (float16, bfloat16, float32, float64) are converted to the model's dtype.
    """
    if not isinstance(model, Layer):
        raise ConfigError(f"load_weights: expected a cnnkit model, got {type(model).__name__}")
    if not model.built:
        raise ConfigError(
            f"load_weights: {model.name} is not built; give it input_shape= (or run it on a batch) first"
        )
    name = os.fspath(path)
    return apply_state_dict(model, read_state_dict(name), name, strict=strict)


def apply_state_dict(
    model: Layer, tensors: dict[str, np.ndarray], source: str, *, strict: bool = True
) -> LoadReport:
    """:func:`load_weights` for tensors already read (``source`` names them in messages)."""
    own = model.state_dict()
    report = LoadReport(missing=sorted(set(own) - set(tensors)), unexpected=sorted(set(tensors) - set(own)))
    for key in own:
        if key not in tensors:
            continue
        value, target = tensors[key], own[key]
        float_ok = np.issubdtype(value.dtype, np.floating) == np.issubdtype(target.dtype, np.floating)
        if value.shape != target.shape or not float_ok:
            report.mismatched.append(
                f"{key}: file {tuple(value.shape)} {value.dtype}, model {tuple(target.shape)} {target.dtype}"
            )
        else:
            report.loaded.append(key)
    if strict and not report.complete:
        raise ShapeError(f"load_weights: {source} does not match {model.name}: {report.describe()}")
    for key in report.loaded:
        own[key][...] = tensors[key].astype(own[key].dtype, copy=False)
    return report
