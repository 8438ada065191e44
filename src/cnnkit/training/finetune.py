"""Fine-tuning: start from weights made elsewhere, give the model a new head, keep parts of it fixed.

The three steps Keras and torchvision users know (notes section 12, transfer learning):

- :func:`init_from` copies weights into a model from a ``.safetensors`` state dict (torchvision names,
  as ``safetensors.torch.save_file(model.state_dict(), path)`` writes it), a ``.cnnkit`` model file or an
  ``.onnx`` file (its named initializers), via :func:`cnnkit.load_weights`. With ``new_head=True`` the
  last :class:`~cnnkit.layers.Dense` layer keeps its fresh initialisation when the file's head has
  another number of classes: the features are reused, the classifier is learned anew.
- :func:`replace_head` swaps the last Dense layer for a new one with ``num_classes`` outputs (for a
  model already loaded with its old head).
- :func:`freeze` sets ``trainable = False`` on the layers whose parameters the given dotted prefixes
  name (``features``, ``layer1.0``, ``conv1``): optimizers skip them, so their parameters keep their
  exact bits, and ``summary`` counts them as non-trainable. Batch-norm running statistics of a frozen
  layer still follow the data in training mode, as with ``requires_grad = False`` in PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError, ShapeError
from ..io.weights import LoadReport, apply_state_dict, check_weights_file, read_state_dict
from ..layers import Dense
from ..layers.base import Layer

__all__ = ["check_finetuning", "freeze", "head_name", "init_from", "prepare_finetuning", "replace_head"]


def _matches(name: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def freeze(model: Layer, prefixes: str | Iterable[str]) -> list[str]:
    """Freeze the layers whose parameters start with one of ``prefixes`` (dotted, whole components:
    ``layer1`` does not match ``layer10``). Returns the frozen parameter names, in model order.

    A prefix must name whole layers: one that matches some parameters of a layer but not all (``fc.bias``)
    is a :class:`ConfigError`, and so is one that matches nothing (the message lists the top-level names).
    """
    if isinstance(prefixes, str):
        prefixes = [p for p in prefixes.split(",")]
    prefixes = [p.strip() for p in prefixes]
    if not prefixes or any(not p for p in prefixes):
        raise ConfigError(f"freeze: give one or more parameter name prefixes, got {prefixes!r}")
    params = list(model.named_parameters())
    owners: dict[int, Layer] = {}
    for prefix in prefixes:
        hits = [(name, owner, key) for name, owner, key in params if _matches(name, prefix)]
        if not hits:
            top = sorted({name.split(".")[0] for name, _, _ in params})
            raise ConfigError(
                f"freeze: no parameter of {model.name} starts with {prefix!r}; top-level names: {', '.join(top)}"
            )
        by_owner: dict[int, tuple[Layer, str, set[str]]] = {}
        for name, owner, key in hits:
            by_owner.setdefault(id(owner), (owner, name, set()))[2].add(key)
        for owner, name, keys in by_owner.values():
            if set(owner.params) - keys:
                raise ConfigError(
                    f"freeze: {prefix!r} names only {sorted(keys)} of the layer that owns {name!r}; "
                    f"freezing works on whole layers (its parameters: {sorted(owner.params)})"
                )
            owners[id(owner)] = owner
    for owner in owners.values():
        owner.trainable = False
    return [name for name, owner, _ in params if id(owner) in owners]


def head_name(model: Layer) -> str:
    """Dotted name of the last :class:`~cnnkit.layers.Dense` layer (the classifier head)."""
    last = None
    for name, layer in model.named_layers():
        if isinstance(layer, Dense):
            last = name
    if last is None:
        raise ConfigError(f"{model.name}: has no Dense layer to use as the head")
    return last


def replace_head(model: Layer, num_classes: int, *, seed: int | None = None) -> Dense:
    """Replace the last Dense layer by a fresh ``Dense(num_classes)`` (PyTorch's initialisation), in place.

    Its container must hold children in a ``layers`` dict (a Sequential). The containers above it are
    rebuilt so that ``output_shape`` is ``(num_classes,)``. Returns the new layer.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"replace_head: num_classes must be an int >= 2, got {num_classes!r}")
    name = head_name(model)
    parts = name.split(".")
    chain = [model]
    for part in parts[:-1]:
        chain.append(chain[-1].children()[part])
    parent, key = chain[-1], parts[-1]
    store = getattr(parent, "layers", None)
    if not isinstance(store, dict) or key not in store:
        raise ConfigError(
            f"replace_head: {name} sits in a {type(parent).__name__}, which cannot swap children"
        )
    old = store[key]
    new = Dense(num_classes, use_bias=old.use_bias, name=old.name, seed=seed, dtype=old.dtype)
    new.build(old.input_shape)
    store[key] = new
    for container in reversed(chain):
        container.build(container.input_shape)
    return new


def init_from(
    model: Layer, path: str | os.PathLike[str], *, new_head: bool = False, strict: bool = True
) -> LoadReport:
    """Load the weights in ``path`` into ``model`` (see the module docstring); returns the report.

    ``new_head``: when the file's head (the model's last Dense layer, by name) has another shape, its
    tensors are not loaded and the model's head keeps its fresh initialisation; everything else must
    match as ``strict`` says. Without ``new_head`` such a file is refused with a hint to use it.
    """
    tensors = read_state_dict(path)
    head = head_name(model)
    own = model.state_dict()
    head_keys = [k for k in own if k.startswith(head + ".")]
    differs = any(k in tensors and tensors[k].shape != own[k].shape for k in head_keys)
    if differs and new_head:  # the model's fresh head stands in for the file's
        tensors.update({key: own[key].copy() for key in head_keys})
    try:
        report = apply_state_dict(model, tensors, os.fspath(path), strict=strict)
    except ShapeError as err:
        if differs:
            raise ShapeError(
                f"{err}; the head {head!r} has another number of classes: pass new_head=True "
                "(cnnkit train --new-head) to learn a new one"
            ) from None
        raise
    if differs and new_head:
        report.loaded = [key for key in report.loaded if key not in head_keys]
        report.reinitialised = head_keys
    return report


def check_finetuning(init_weights: str | None, new_head: bool = False, freeze_prefixes: Any = None) -> None:
    """The cheap checks of ``cnnkit train``'s fine-tuning flags, run before any data is read: the file
    exists and is not a pickle, ``--new-head`` comes with it, ``--freeze`` is a string."""
    if new_head and not init_weights:
        raise ConfigError("--new-head needs --init-weights FILE (the weights whose head it replaces)")
    if freeze_prefixes is not None and not isinstance(freeze_prefixes, str):
        raise ConfigError(f"--freeze takes PREFIX[,PREFIX], got {freeze_prefixes!r:.80}")
    if init_weights:
        check_weights_file(init_weights)


def prepare_finetuning(
    model: Layer,
    init_weights: str | None,
    *,
    new_head: bool = False,
    freeze_prefixes: str | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    """What ``cnnkit train --init-weights FILE [--new-head] [--freeze P1,P2]`` does to a built model."""
    check_finetuning(init_weights, new_head, freeze_prefixes)
    if init_weights:
        report = init_from(model, init_weights, new_head=new_head)
        extra = f"; new head {', '.join(report.reinitialised)}" if report.reinitialised else ""
        log(f"weights: {init_weights}: {report.describe()}{extra}")
    if freeze_prefixes:
        frozen = freeze(model, freeze_prefixes)
        log(f"frozen: {len(frozen)} parameters ({freeze_prefixes}); {model.count_params():,} trainable")
