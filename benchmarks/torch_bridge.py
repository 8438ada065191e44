"""Build the PyTorch twin of a cnnkit model, with the same weights (benchmarks and tests only).

cnnkit's parameter names are torchvision's, so the twin is made by walking the cnnkit model, creating
the matching ``torch.nn`` module for each layer from its ``get_config()``, and loading cnnkit's
``state_dict()`` into it unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn


class _Residual(nn.Module):
    """torchvision's BasicBlock / Bottleneck forward, with children named as cnnkit's block."""

    def __init__(self, children: dict[str, nn.Module], bottleneck: bool) -> None:
        super().__init__()
        for key, module in children.items():
            self.add_module(key, module)
        self.bottleneck = bottleneck
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(out)))
        shortcut = self.downsample(x) if hasattr(self, "downsample") else x
        return self.relu(out + shortcut)


def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _padding(value: Any) -> Any:
    if isinstance(value, str):
        return value
    value = _pair(value)
    if isinstance(value, tuple) and len(value) == 4:
        top, bottom, left, right = value
        if top != bottom or left != right:
            raise NotImplementedError(f"asymmetric padding {value} has no nn.Conv2d equivalent")
        return (top, left)
    return value


def to_torch_module(layer: Any) -> nn.Module:
    """The ``torch.nn`` module computing what the cnnkit ``layer`` computes (weights not copied)."""
    kind = type(layer).__name__
    cfg = layer.get_config()
    if kind == "Sequential":  # its declared layers (children() gives fused runs as one layer each)
        return nn.Sequential(OrderedDict((k, to_torch_module(c)) for k, c in layer.layers.items()))
    if kind in ("BasicBlock", "Bottleneck"):
        children = {k: to_torch_module(c) for k, c in layer.children().items()}
        return _Residual(children, bottleneck=kind == "Bottleneck")
    if kind == "Conv2D":
        return nn.Conv2d(
            layer.input_shape[0],
            cfg["filters"],
            _pair(cfg["kernel_size"]),
            stride=_pair(cfg["stride"]),
            padding=_padding(cfg["padding"]),
            dilation=_pair(cfg["dilation"]),
            groups=cfg["groups"],
            bias=cfg["use_bias"],
        )
    if kind == "Dense":
        return nn.Linear(layer.input_shape[0], cfg["units"], bias=cfg["use_bias"])
    if kind == "ReLU":
        return nn.ReLU()
    if kind == "MaxPool2D":
        return nn.MaxPool2d(
            _pair(cfg["pool_size"]), _pair(cfg["stride"]), _pair(cfg["padding"]), _pair(cfg["dilation"])
        )
    if kind == "AvgPool2D":
        return nn.AvgPool2d(_pair(cfg["pool_size"]), _pair(cfg["stride"]), _pair(cfg["padding"]))
    if kind == "GlobalAvgPool2D":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "AdaptiveAvgPool2D":
        return nn.AdaptiveAvgPool2d(_pair(cfg["output_size"]))
    if kind == "Flatten":
        return nn.Flatten()
    if kind == "Dropout":
        return nn.Dropout(cfg["rate"])
    if kind == "BatchNorm2D":
        return nn.BatchNorm2d(
            layer.input_shape[0], eps=cfg.get("eps", 1e-5), momentum=cfg.get("momentum", 0.1)
        )
    if kind == "Softmax":
        return nn.Softmax(dim=1)
    raise NotImplementedError(f"no PyTorch twin for cnnkit layer {kind}")


def to_torch(model: Any) -> nn.Module:
    """The PyTorch twin of a built cnnkit ``model`` with a copy of its weights and buffers."""
    module = to_torch_module(model)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in model.state_dict().items()}
    module.load_state_dict(state, strict=True)
    return module.to(torch.float64 if model.dtype == np.float64 else torch.float32)
