"""cnnkit model files and checkpoints: one safetensors file holding architecture, weights and state.

A model file is a safetensors file (see :mod:`cnnkit.io.safetensors`) whose tensors are the model's
``state_dict()`` (parameters and buffers under torchvision names) and whose ``__metadata__`` holds JSON
strings:

=================  ===================================================================================
``format``          ``"cnnkit.model"`` (files without it are refused)
``format_version``  ``"1"``
``architecture``    ``to_config(model)``: ``{"class": ..., "config": {...}}``, nested for containers
``input_shape``     the per-sample input shape the model was built for, e.g. ``[3, 32, 32]``
``class_names``     the label names in label order (only when the model has them)
``cnnkit_version``  the version that wrote the file
``metadata``        the user's JSON: normalisation parameters, metrics, ...
``rng_states``      random-generator states of layers that draw while training (dropout), by layer name
``optimizer``       checkpoints only: the optimizer's JSON config; its arrays are the tensors
                    ``__optimizer__.<key>``
``training_state``  checkpoints only: epoch, history, generator states, ...
=================  ===================================================================================

Loading never unpickles and never imports: the architecture JSON can only name layer classes already
registered by :class:`cnnkit.layers.base.Layer` (every cnnkit layer, and user subclasses, in their own
``"<package>>Name"`` namespace, once their module is imported), which are then called with keyword
arguments from the JSON. Registration happens on the floor that defines the classes: ``import cnnkit``
imports :mod:`cnnkit.models`, whose containers register as they are defined; this module never imports
the models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CnnkitError, ConfigError, FileFormatError
from ..layers.base import Layer, from_config, layer_class, to_config
from ..utils.random import global_rng
from .safetensors import load_file, save_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "ModelFileExistsError",
    "load_model",
    "read_checkpoint",
    "save_model",
]

FORMAT = "cnnkit.model"
FORMAT_VERSION = "1"
OPTIMIZER_PREFIX = "__optimizer__."


class ModelFileExistsError(CnnkitError, FileExistsError):
    """``save_model(..., overwrite=False)`` found a file already at the path."""


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` returns.

    ``optimizer_state`` is ``{"config": {...}, "arrays": {key: array}}`` as ``optimizer.state_dict()``
    gave it (None when the file holds no optimizer); ``training_state`` is the JSON dict given to
    :func:`save_model` (None when absent); ``metadata`` is the user's metadata dict.
    """

    model: Layer
    optimizer_state: dict[str, Any] | None = None
    training_state: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- saving
def _json_default(obj: Any) -> Any:
    """Let NumPy scalars and arrays (metrics, normalisation means) into JSON as Python numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError, RecursionError) as err:
        raise ConfigError(f"save_model: {what} must be JSON-serialisable: {err}") from None


def _rng_states(model: Layer) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for name, layer in [("", model), *model.named_layers()]:
        state = layer.rng_state()
        if state is not None:
            states[name] = state
    return states


def _optimizer_tensors(optimizer_state: Any) -> tuple[str, dict[str, np.ndarray]]:
    if not isinstance(optimizer_state, Mapping) or "config" not in optimizer_state:
        raise ConfigError(
            "save_model: optimizer_state must be optimizer.state_dict(), a dict with 'config' and 'arrays', "
            f"got {type(optimizer_state).__name__}"
            + (f" with keys {sorted(optimizer_state)}" if isinstance(optimizer_state, Mapping) else "")
        )
    arrays = optimizer_state.get("arrays") or {}
    if not isinstance(arrays, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in arrays.items()
    ):
        raise ConfigError("save_model: optimizer_state['arrays'] must be a dict of str -> numpy array")
    if not isinstance(optimizer_state["config"], Mapping):
        raise ConfigError(
            f"save_model: optimizer_state['config'] must be a dict, got {type(optimizer_state['config']).__name__}"
        )
    config = _dumps(dict(optimizer_state["config"]), "optimizer_state['config']")
    return config, {OPTIMIZER_PREFIX + key: value for key, value in arrays.items()}


def save_model(
    model: Layer,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> None:
    """Save a built model (architecture, weights, buffers, class names) to one file, atomically.

    ``metadata`` is free JSON kept with the model (defaults to ``model.metadata`` when the model has one,
    e.g. after :func:`load_model`); NumPy scalars and arrays in it are stored as numbers and lists. Give
    ``optimizer_state`` (``optimizer.state_dict()``) and ``training_state`` (JSON: epoch, history,
    generator states, ...) to write a checkpoint that :func:`read_checkpoint` resumes from. With
    ``overwrite=False`` an existing file raises :class:`ModelFileExistsError`.
    """
    if not isinstance(model, Layer):
        raise ConfigError(f"save_model: expected a cnnkit model or layer, got {type(model).__name__}")
    if not model.built or model.input_shape is None:
        raise ConfigError(
            f"save_model: {model.name} is not built yet; give it input_shape= or run it on a batch first"
        )
    if not overwrite and os.path.exists(path):
        raise ModelFileExistsError(
            f"save_model: {os.fspath(path)} already exists (pass overwrite=True to replace it)"
        )
    from .._version import __version__

    tensors: dict[str, np.ndarray] = dict(model.state_dict())
    clash = [key for key in tensors if key.startswith(OPTIMIZER_PREFIX)]
    if clash:
        raise ConfigError(
            f"save_model: tensor names starting with {OPTIMIZER_PREFIX!r} are reserved: {clash[:5]}"
        )
    if metadata is None:
        metadata = getattr(model, "metadata", None) or {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"save_model: metadata must be a dict, got {type(metadata).__name__}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": _dumps(to_config(model), "the architecture (get_config of every layer)"),
        "input_shape": json.dumps([int(s) for s in model.input_shape]),
        "cnnkit_version": __version__,
        "metadata": _dumps(dict(metadata), "metadata"),
    }
    class_names = getattr(model, "class_names", None)
    if class_names is not None:
        header["class_names"] = _dumps(list(class_names), "class_names")
    rng_states = _rng_states(model)
    if rng_states:
        header["rng_states"] = _dumps(rng_states, "layer rng_state()")
    if optimizer_state is not None:
        header["optimizer"], arrays = _optimizer_tensors(optimizer_state)
        tensors.update(arrays)
    if training_state is not None:
        if not isinstance(training_state, Mapping):
            raise ConfigError(
                f"save_model: training_state must be a dict, got {type(training_state).__name__}"
            )
        header["training_state"] = _dumps(dict(training_state), "training_state")
    save_file(tensors, path, metadata=header)


# ---------------------------------------------------------------------------------------------- loading
def _field(path: str, meta: dict[str, str], key: str, kind: type, required: bool = True) -> Any:
    if key not in meta:
        if required:
            raise FileFormatError(f"{path}: the header's __metadata__ has no {key!r} entry")
        return None
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError) as err:
        raise FileFormatError(f"{path}: __metadata__[{key!r}] is not valid JSON ({err})") from None
    if not isinstance(value, kind):
        raise FileFormatError(
            f"{path}: __metadata__[{key!r}] should be a JSON {kind.__name__}, found {type(value).__name__}"
        )
    return value


def _check_classes(path: str, spec: Any, where: str = "architecture") -> None:
    """Every ``"class"`` named anywhere in the architecture must be a registered layer, before any is built."""
    if isinstance(spec, dict):
        if "class" in spec:
            name = spec["class"]
            if not isinstance(name, str):
                raise FileFormatError(f"{path}: {where} names a layer class {name!r}, expected a string")
            try:
                layer_class(name)
            except ConfigError as err:
                raise FileFormatError(f"{path}: {where}: {err}") from None
            if not isinstance(spec.get("config", {}), dict):
                raise FileFormatError(f"{path}: {where}: the config of {name} should be a JSON object")
        for key, value in spec.items():
            _check_classes(path, value, f"{where}.{key}")
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            _check_classes(path, value, f"{where}[{i}]")


#: Bounds on what a model file may describe, checked before anything is allocated: the largest integer in
#: a layer's config (filters, kernel size, stride, padding, units, ...; seeds are exempt), the largest
#: input dimension, and the most values one sample may have at any layer's output.
MAX_CONFIG_INT = 1 << 24
MAX_INPUT_DIM = 1 << 16
MAX_ACTIVATION = 1 << 28
_UNBOUNDED_KEYS = ("seed",)


def _check_config_values(path: str, spec: Any, where: str = "architecture") -> None:
    """Every number in every layer's config: integers within ``MAX_CONFIG_INT``, floats finite."""
    if isinstance(spec, dict):
        config = spec.get("config") if "class" in spec else None
        if isinstance(config, dict):
            layer = f"{where} ({spec['class']} {config.get('name', '?')!r})"
            for key, value in config.items():
                _check_value(path, layer, key, value)
        for key, value in spec.items():
            _check_config_values(path, value, f"{where}.{key}")
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            _check_config_values(path, value, f"{where}[{i}]")


def _check_value(path: str, layer: str, key: str, value: Any) -> None:
    import math

    if key in _UNBOUNDED_KEYS:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, int) and abs(v) > MAX_CONFIG_INT:
            raise FileFormatError(
                f"{path}: layer {layer}: {key} = {value!r} is out of range (at most {MAX_CONFIG_INT:,} in size)"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise FileFormatError(f"{path}: layer {layer}: {key} = {value!r} is not a finite number")


def _check_layers(path: str, spec: Any, where: str = "architecture") -> None:
    """Construct every layer the architecture names, deepest first, in shape-only mode: a bad config
    value fails here with the layer's own message (its name and the key), and nothing is allocated."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            _check_layers(path, value, f"{where}.{key}")
        if "class" in spec:
            try:
                layer_class(spec["class"]).from_config(dict(spec.get("config", {})))
            except _BUILD_ERRORS as err:
                raise FileFormatError(
                    f"{path}: cannot rebuild the model from its architecture: layer {where} "
                    f"({spec['class']}): {_why(err)}"
                ) from None
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            _check_layers(path, value, f"{where}[{i}]")


_BUILD_ERRORS = (
    CnnkitError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def _why(err: BaseException) -> str:
    return str(err) if isinstance(err, CnnkitError) else f"{type(err).__name__}: {err}"


def _check_shapes(path: str, model: Layer, tensors: Mapping[str, np.ndarray]) -> None:
    """The built (shape-only) model against the file: activations within ``MAX_ACTIVATION``, and every
    parameter and buffer the config implies present in the tensor table with the same shape and dtype."""
    for name, layer in [("", model), *model.named_layers()]:
        shape = layer.output_shape
        if shape is not None and int(np.prod(shape, dtype=np.float64)) > MAX_ACTIVATION:
            raise FileFormatError(
                f"{path}: layer {name or model.name!r} ({type(layer).__name__}) would output {tuple(shape)} "
                f"per sample, more than {MAX_ACTIVATION:,} values: not a model this file can hold"
            )
    owners = {n: (owner, key) for n, owner, key in model.named_parameters()}
    owners.update({n: (owner, key) for n, owner, key in model.named_buffers()})
    missing = sorted(set(owners) - set(tensors))
    unexpected = sorted(set(tensors) - set(owners))
    if missing or unexpected:
        raise FileFormatError(
            f"{path}: the weights do not match the architecture: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    for full, (owner, key) in owners.items():
        implied = owner.params[key] if key in owner.params else owner.buffers[key]
        stored = tensors[full]
        if implied.shape != stored.shape or implied.dtype != stored.dtype:
            config = {k: v for k, v in owner.get_config().items() if k != "name"}
            raise FileFormatError(
                f"{path}: tensor {full!r} should be {implied.dtype} of shape {implied.shape}, found "
                f"{stored.dtype} of shape {stored.shape} (layer {owner.name!r}, {type(owner).__name__} "
                f"{json.dumps(config)[:200]}, implies its {key!r})"
            )


def _rebuild(path: str, meta: dict[str, str], tensors: Mapping[str, np.ndarray] | None = None) -> Layer:
    """The model the header describes, checked against the tensor table before anything is allocated:
    config values (:func:`_check_config_values`), each layer's constructor, then a shape-only build
    (:func:`cnnkit.layers.init.shapes_only`) whose parameter shapes must be the stored tensors' shapes."""
    from ..layers.init import shapes_only

    spec = _field(path, meta, "architecture", dict)
    input_shape = _field(path, meta, "input_shape", list)
    if not input_shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_INPUT_DIM for s in input_shape
    ):
        raise FileFormatError(
            f"{path}: input_shape should be a list of positive integers up to {MAX_INPUT_DIM}, found {input_shape}"
        )
    _check_classes(path, spec)
    # Building initialises weights (overwritten next) from the global generator for unseeded layers;
    # put its state back so loading a model does not change the random numbers a program draws later.
    generator = global_rng().bit_generator
    saved_state = generator.state
    try:
        _check_config_values(path, spec)
        with shapes_only():
            _check_layers(path, spec)
            try:
                probe = from_config(spec)
                if not probe.built:
                    probe.build(tuple(input_shape))
            except _BUILD_ERRORS as err:
                raise FileFormatError(
                    f"{path}: cannot rebuild the model from its architecture: {_why(err)}"
                ) from None
        if probe.input_shape != tuple(input_shape):
            raise FileFormatError(
                f"{path}: the architecture builds for input {probe.input_shape}, but the file says {tuple(input_shape)}"
            )
        if tensors is not None:
            _check_shapes(path, probe, tensors)
        try:
            model = from_config(spec)
            if not model.built:
                model.build(tuple(input_shape))
        except _BUILD_ERRORS as err:
            raise FileFormatError(
                f"{path}: cannot rebuild the model from its architecture: {_why(err)}"
            ) from None
    except RecursionError:
        raise FileFormatError(f"{path}: the architecture is nested too deeply") from None
    finally:
        generator.state = saved_state
    return model


def _load_weights(path: str, model: Layer, tensors: dict[str, np.ndarray]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise FileFormatError(
            f"{path}: the weights do not match the architecture: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    for key, target in own.items():
        value = tensors[key]
        if value.shape != target.shape or value.dtype != target.dtype:
            raise FileFormatError(
                f"{path}: tensor {key!r} should be {target.dtype} of shape {target.shape}, "
                f"found {value.dtype} of shape {value.shape}"
            )
    model.load_state_dict(tensors, strict=True)


def _check_class_names(path: str, model: Layer, names: list | None) -> None:
    """One name (a string) per output of the model, when the file has names."""
    if names is None:
        return
    if not all(isinstance(n, str) for n in names):
        raise FileFormatError(f"{path}: class_names should be strings, found {names!r:.200}")
    out = model.output_shape
    if out is not None and len(out) == 1 and len(names) != out[0]:
        raise FileFormatError(
            f"{path}: class_names has {len(names)} names, but the model has {out[0]} outputs"
        )


def _restore_rng(path: str, model: Layer, states: dict[str, Any]) -> None:
    layers = {"": model, **dict(model.named_layers())}
    for name, state in states.items():
        if name not in layers:
            raise FileFormatError(f"{path}: rng_states names layer {name!r}, which the model does not have")
        try:
            layers[name].set_rng_state(state)
        except (CnnkitError, TypeError, ValueError, KeyError) as err:
            raise FileFormatError(
                f"{path}: cannot restore the random state of layer {name!r}: {err}"
            ) from None


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a model file or checkpoint: the rebuilt model with its weights, and any saved state.

    The model is rebuilt from the architecture JSON, built for the saved input shape, and given its
    weights (strictly: same names, shapes and dtypes), ``class_names`` and ``metadata``.
    """
    name = os.fspath(path)
    tensors, meta = load_file(path)
    return _checkpoint_from(name, tensors, meta)


def _checkpoint_from(name: str, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Checkpoint:
    """:func:`read_checkpoint` after the file is parsed: ``name`` is only used in messages."""
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise FileFormatError(
            f"{name}: not a cnnkit model file (__metadata__ format is {fmt!r}, expected {FORMAT!r}); "
            "use cnnkit.io.load_file to read plain safetensors tensors"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{name}: format_version {meta.get('format_version')!r}, but this cnnkit reads version {FORMAT_VERSION!r}"
        )
    optimizer_arrays = {
        k[len(OPTIMIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)
    }
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    model = _rebuild(name, meta, weights)
    _load_weights(name, model, weights)
    class_names = _field(name, meta, "class_names", list, required=False)
    _check_class_names(name, model, class_names)
    model.class_names = class_names
    user_meta = _field(name, meta, "metadata", dict, required=False) or {}
    model.metadata = user_meta
    _restore_rng(name, model, _field(name, meta, "rng_states", dict, required=False) or {})
    optimizer_config = _field(name, meta, "optimizer", dict, required=False)
    if optimizer_config is None and optimizer_arrays:
        raise FileFormatError(
            f"{name}: has optimizer tensors {sorted(optimizer_arrays)[:5]} but no optimizer config in __metadata__"
        )
    optimizer_state = (
        None if optimizer_config is None else {"config": optimizer_config, "arrays": optimizer_arrays}
    )
    training_state = _field(name, meta, "training_state", dict, required=False)
    return Checkpoint(model, optimizer_state, training_state, user_meta)


def load_model(path: str | os.PathLike[str]) -> Layer:
    """Load a model saved by :func:`save_model` (or ``model.save``); see :func:`read_checkpoint`."""
    return read_checkpoint(path).model
