"""Zoo lookup, model files, optimizers and curves for the ``cnnkit`` subcommands."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith(".cnnkit") or name.startswith(".")


def require_model_name(name: str) -> None:
    """Raise a clear error unless ``name`` is a zoo model (listing them), or say a file is missing."""
    if Path(name).is_dir():
        raise DataError(f"model file expected, got a folder: {name}")
    if _looks_like_path(name) and not Path(name).exists():
        raise DataError(f"model file not found: {name}")
    from ..models import zoo

    known = list(zoo.names())
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; zoo models: {', '.join(known)}")


def get_zoo_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
) -> Any:
    """Build zoo model ``name``; an unknown name lists the zoo, a model too deep for the input says so."""
    from ..errors import ShapeError
    from ..models import zoo

    require_model_name(name)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    try:
        return zoo.get(name, num_classes=num_classes, input_shape=shape, seed=seed)
    except ShapeError as err:
        default = zoo.info(name).input_shape
        size = "x".join(map(str, shape or default))
        raise ConfigError(
            f"model {name} cannot take input {size} (channels x height x width); its default input is "
            f"{'x'.join(map(str, default))} [{err}]"
        ) from None


def load_model_file(path: str | os.PathLike[str]) -> Any:
    """Load a ``.cnnkit`` model file in inference mode: :func:`cnnkit.inference.load_model_for_inference`."""
    from ..inference import load_model_for_inference

    return load_model_for_inference(path)


def make_optimizer(name: str, lr: float) -> Any:
    """``sgd`` (momentum 0.9), ``adam`` or ``adamw`` at learning rate ``lr``."""
    from ..optim import get_optimizer

    if name == "sgd":
        return get_optimizer("sgd", lr=lr, momentum=0.9)
    return get_optimizer(name, lr=lr)


def save_curves(history: Any, path: Path) -> Path | None:
    """``plot_curves`` to ``path``; None when matplotlib is not installed."""
    try:
        from ..viz import plot_curves
    except ImportError:
        return None
    try:
        return Path(plot_curves(history, path))
    except ImportError:  # MissingDependencyError is an ImportError
        return None
