"""The Layer base class: parameters, lazy build from the input shape, forward and backward.

A layer is built the first time it sees an input (or when a container builds it from a declared input
shape), the way Keras does, so a user writes ``Conv2D(32, 3, padding=1)`` as the notes say "32 filters of
size 3x3" without repeating the number of input channels.

Conventions every subclass follows:

- ``input_shape`` / ``output_shape`` are per-sample shapes, without the batch axis: ``(C, H, W)`` for
  images, ``(features,)`` for vectors.
- ``forward(x, training)`` returns the output and keeps in ``self._cache`` what ``backward`` needs
  (the CS231n ``(out, cache)`` pattern).
- ``backward(dy)`` returns ``dx`` and *sets* (does not accumulate) ``self.grads[name]`` for every
  parameter in ``self.params``.
- ``params`` are trainable arrays; ``buffers`` are state that is saved but not trained (batch-norm running
  statistics). Optimizers update ``params`` in place, so the arrays keep their identity.
- Names of parameters and buffers follow torchvision's (``weight``, ``bias``, ``running_mean``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError
from ..utils.random import child_seed, make_rng

Shape = tuple[int, ...]

#: Layer classes by registered name. cnnkit's own classes (defined in a ``cnnkit.`` module) use their
#: bare class name (``"Dense"``); every other class is registered under ``"<package>>Name"`` (Keras's
#: ``register_keras_serializable`` form), so a user's class can never take a built-in's place in
#: :func:`from_config` and ``load_model``.
_REGISTRY: dict[str, type[Layer]] = {}


def _builtin(cls: type) -> bool:
    return cls.__module__ == "cnnkit" or cls.__module__.startswith("cnnkit.")


def _register(cls: type[Layer], package: str | None) -> str:
    """Register ``cls`` and return its name (see :data:`_REGISTRY`)."""
    if package is not None:
        if not isinstance(package, str) or not package or ">" in package:
            raise ConfigError(
                f"{cls.__name__}: package must be a non-empty string without '>', got {package!r}"
            )
        name = f"{package}>{cls.__name__}"
    elif _builtin(cls):
        name = cls.__name__
    else:
        name = f"{cls.__module__}>{cls.__name__}"
    known = _REGISTRY.get(name)
    if (
        known is not None
        and known is not cls
        and _builtin(known)
        and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__)
    ):
        raise ConfigError(
            f"{cls.__name__}: two cnnkit layer classes share the name {name!r} "
            f"({known.__module__}.{known.__qualname__} and {cls.__module__}.{cls.__qualname__})"
        )
    _REGISTRY[name] = cls  # a user class redefined (a notebook cell run again) replaces its own entry
    return name


def layer_class(name: str) -> type[Layer]:
    """Return the registered layer class called ``name`` (used to rebuild models from JSON).

    A bare name is a cnnkit layer; a user's class is named ``"<package>>Name"`` (see :class:`Layer`).
    A bare name that is no cnnkit layer but matches exactly one user class's name is that class (files
    written before user classes had their own namespace).
    """
    if not isinstance(name, str):
        raise ConfigError(f"a layer class name must be a string, got {name!r:.100}")
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    if ">" not in name:
        matches = [c for key, c in _REGISTRY.items() if ">" in key and key.rsplit(">", 1)[1] == name]
        if len(matches) == 1:
            return matches[0]
    known = sorted(k for k in _REGISTRY if ">" not in k)
    users = sorted(k for k in _REGISTRY if ">" in k)
    raise ConfigError(
        f"unknown layer type {name!r:.100}; known: {', '.join(known)}"
        + (f"; user classes: {', '.join(users)}" if users else "")
        + ("" if ">" in name else " (a class of your own must be imported before loading)")
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


class Layer:
    """Base class of every layer and container."""

    #: Registered under this name for model files: the class name for cnnkit's layers, and
    #: ``"<package>>ClassName"`` for any other class, ``package`` being its module unless the class is
    #: declared with ``class MyLayer(Layer, package="myproject")``.
    registry_name: ClassVar[str] = "Layer"

    def __init_subclass__(cls, package: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.registry_name = _register(cls, package)

    def __init__(self, *, name: str | None = None, seed: int | None = None, dtype: Any = np.float32) -> None:
        self.name = name or _snake(type(self).__name__)
        self.seed = seed
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise DTypeError(f"{self.name}: dtype must be float32 or float64, got {self.dtype}")
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.built = False
        self.training = True
        #: When False, optimizers skip this layer's parameters and they count as non-trainable.
        self.trainable = True
        self._cache: Any = None

    # ----------------------------------------------------------------- building
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input shape; the default keeps the shape."""
        return tuple(input_shape)

    def build(self, input_shape: Shape) -> None:
        """Create parameters for ``input_shape`` (per sample, no batch axis). Subclasses extend this."""
        input_shape = tuple(int(s) for s in input_shape)
        self.input_shape = input_shape
        self.output_shape = tuple(self.compute_output_shape(input_shape))
        self.built = True

    def rng(self) -> np.random.Generator:
        """The generator for this layer's initialisation: from its seed, else the global one."""
        return make_rng(self.seed)

    def children(self) -> dict[str, Layer]:
        """Named sub-layers (empty for a leaf layer)."""
        return {}

    def rng_state(self) -> dict[str, Any] | None:
        """JSON-able state of a random generator the layer draws from while training (dropout).

        Checkpoints save it so a resumed run draws the same masks as an uninterrupted one. Layers with no
        training-time randomness return None.
        """
        return None

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`rng_state` returned."""

    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """Yield ``(dotted_name, layer)`` for this layer's descendants, depth first (self excluded)."""
        for key, child in self.children().items():
            yield prefix + key, child
            yield from child.named_layers(f"{prefix}{key}.")

    def _seed_children(self) -> None:
        """Give unseeded children a seed derived from this layer's seed and their name."""
        if self.seed is None:
            return
        for key, child in self.children().items():
            if child.seed is None:
                child.seed = child_seed(self.seed, key)

    # ----------------------------------------------------------------- running
    def __call__(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        x = self._check_input(x)
        return self.forward(x, self.training if training is None else training)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise DTypeError(f"{self.name}: input must be a numpy.ndarray, got {type(x).__name__}")
        if not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(
                f"{self.name}: input must be float32 or float64, got {x.dtype}; "
                "scale images first, e.g. x.astype(np.float32) / 255"
            )
        if not self.built:
            if x.ndim < 2:
                raise ShapeError(f"{self.name}: input needs a batch axis, got shape {x.shape}")
            self.build(x.shape[1:])
        elif tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"{self.name}: expected input of shape (N, {', '.join(map(str, self.input_shape))})"
                f", got {x.shape}"
            )
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Compute the output for a batch and keep what backward needs."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Given dL/dy, set dL/dparam in ``self.grads`` and return dL/dx."""
        raise NotImplementedError

    # ----------------------------------------------------------------- modes and dtype
    def train(self, mode: bool = True) -> Layer:
        """Switch this layer and its children to training (or inference) mode."""
        self.training = mode
        for child in self.children().values():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        """Switch to inference mode (dropout off, batch norm uses running statistics)."""
        return self.train(False)

    def astype(self, dtype: Any) -> Layer:
        """Cast parameters, gradients and buffers to ``dtype`` (float32 or float64), in place."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise DTypeError(f"{self.name}: dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        for store in (self.params, self.grads):
            for key, value in store.items():
                store[key] = value.astype(dtype)
        for key, value in self.buffers.items():
            if np.issubdtype(value.dtype, np.floating):
                self.buffers[key] = value.astype(dtype)
        for child in self.children().values():
            child.astype(dtype)
        return self

    # ----------------------------------------------------------------- parameters
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        """Yield ``(full_name, owner_layer, key)`` for each trainable parameter, depth first.

        ``owner.params[key]`` is the array and ``owner.grads[key]`` its gradient; ``full_name`` is the
        torchvision-style dotted name (``features.0.weight``).
        """
        for key in self.params:
            yield prefix + key, self, key
        for child_name, child in self.children().items():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        """Yield ``(full_name, owner_layer, key)`` for each buffer (saved, not trained)."""
        for key in self.buffers:
            yield prefix + key, self, key
        for child_name, child in self.children().items():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """All parameters and buffers by their dotted names (views of the live arrays)."""
        out = {name: owner.params[key] for name, owner, key in self.named_parameters()}
        out.update({name: owner.buffers[key] for name, owner, key in self.named_buffers()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into this layer's parameters and buffers in place, checking names and shapes."""
        own = {name: (owner, key, "params") for name, owner, key in self.named_parameters()}
        own.update({name: (owner, key, "buffers") for name, owner, key in self.named_buffers()})
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise ShapeError(
                    f"{self.name}: state dict does not match the model: missing {missing[:10]}, "
                    f"unexpected {unexpected[:10]}"
                )
        for name, value in state.items():
            if name not in own:
                continue
            owner, key, store_name = own[name]
            store = getattr(owner, store_name)
            target = store[key]
            value = np.asarray(value)
            if value.shape != target.shape:
                raise ShapeError(f"{owner.name}: {name} expected shape {target.shape}, got {value.shape}")
            target[...] = value.astype(target.dtype, copy=False)

    def count_params(self, trainable_only: bool = True) -> int:
        """Number of parameters (buffers such as running statistics are never counted).

        With ``trainable_only`` (the default) parameters of layers with ``trainable = False`` are left out.
        """
        return int(
            sum(
                owner.params[key].size
                for _, owner, key in self.named_parameters()
                if owner.trainable or not trainable_only
            )
        )

    def macs(self) -> int:
        """Multiply-adds for one sample through this layer (after build); 0 where negligible."""
        return int(sum(child.macs() for child in self.children().values()))

    # ----------------------------------------------------------------- configuration
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments; ``from_config(get_config())`` rebuilds the layer."""
        config: dict[str, Any] = {"name": self.name}
        if self.seed is not None:
            config["seed"] = self.seed
        if self.dtype != np.float32:
            config["dtype"] = self.dtype.name
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """Rebuild a layer from :meth:`get_config` output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def to_config(layer: Layer) -> dict[str, Any]:
    """``{"class": ..., "config": ...}`` for a layer, recursively through containers."""
    return {"class": layer.registry_name, "config": layer.get_config()}


def from_config(spec: dict[str, Any]) -> Layer:
    """Inverse of :func:`to_config`."""
    if not isinstance(spec, dict) or "class" not in spec:
        raise ConfigError(f"layer spec must be a dict with a 'class' key, got {spec!r:.200}")
    return layer_class(spec["class"]).from_config(dict(spec.get("config", {})))


@runtime_checkable
class LayerChain(Protocol):
    """A container whose forward pass is its ``layers``' forward passes in order, and whose backward pass
    is their backward passes in reverse (:class:`cnnkit.models.Sequential`).

    The training floor reads a model through this protocol, never through the model classes: it runs
    the chain as it runs (``children()``, fused layers included) without a final Softmax to train on
    logits (:mod:`cnnkit.training.head`). A container of your own that is such a chain gets the same
    treatment by having a ``layers`` dict.
    """

    layers: dict[str, Layer]
