"""A network layer by layer, as the notes' §5 and §9 walk through one: each output shape from the §3.4
formula, each layer's parameters (``3*3*3*32 + 32 = 896``) and multiply-adds.

Works for any zoo model (by name), any built model object, and any saved model file. Shapes are the
layers' own ``output_shape``; the formula lines recompute them with
:func:`cnnkit.ops.conv.conv_output_size` and say so if they ever disagree. Parameter counts are the sizes
of the layers' parameter arrays and multiply-adds are the layers' ``macs()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..layers.base import Layer, Shape
from ..ops.conv import conv_output_size
from ._format import Explanation, heading, num, thousands, wrap

_NOTES_SECTIONS = {
    "simple_cnn": (
        "This is the notes' §5 network (32x32x3 -> ... -> 10). Padding 1 keeps each convolution's size, "
        "and each 2x2 max pool halves it."
    ),
    "cats_dogs_cnn": (
        "This is the notes' §9 cats-vs-dogs network. §9 says only '3x3' for each convolution, but its "
        "shapes (128 -> 128, 64 -> 64, 32 -> 32) need (W - 3 + 2P)/1 + 1 = W, i.e. P = 1 ('same' "
        "padding), which the notes do not state; cnnkit uses padding 1."
    ),
}


@dataclass(frozen=True)
class LayerStep:
    """One layer of the walk-through."""

    name: str  # dotted name, as in the state dict
    kind: str  # class name
    depth: int
    input_shape: Shape | None
    output_shape: Shape | None
    params: int  # this layer's own parameters (a container's are on its children)
    macs: int  # multiply-adds per sample (for a container: its children's are on their rows)
    lines: list[str] = field(default_factory=list)  # the working: formula, parameters, mult-adds
    container: bool = False


@dataclass(frozen=True)
class NetworkExplanation(Explanation):
    """Every layer's shape, parameters and multiply-adds (see :func:`network`)."""

    model_name: str
    input_shape: Shape
    steps: list[LayerStep]
    total_params: int
    trainable_params: int
    total_macs: int
    note: str = ""

    def step(self, name: str) -> LayerStep:
        """The step of the layer called ``name`` (dotted)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def render(self) -> str:
        from ..models.summary import notes_shape

        lines = [heading(f"Network {self.model_name}, layer by layer (notes §5, §9)"), ""]
        lines.append(
            f"Input: {notes_shape(self.input_shape)} (H x W x C as the notes write it; "
            f"cnnkit arrays are (C, H, W) = {tuple(self.input_shape)})"
        )
        if self.note:
            lines.append(wrap(self.note))
        lines.append("")
        for k, step in enumerate(self.steps, start=1):
            pad = "    " * step.depth
            head = f"{pad}{k}. {step.kind} (layer {step.name})"
            if step.input_shape is not None and step.output_shape is not None:
                head += f": {notes_shape(step.input_shape)} -> {notes_shape(step.output_shape)}"
            lines.append(head)
            lines.extend(f"{pad}     {line}" for line in step.lines)
        last = self.steps[-1] if self.steps else None
        if last is not None and last.kind == "Dense":
            lines.append(
                wrap(
                    "The last layer gives class scores (logits). The notes put a softmax here (§5.8, §6.2); "
                    "cnnkit applies it inside the cross-entropy loss and in predict(), which is the same "
                    "function computed more stably."
                )
            )
        lines.append("")
        lines.append(f"Total parameters: {thousands(self.total_params)}")
        if self.trainable_params != self.total_params:
            lines.append(f"  trainable: {thousands(self.trainable_params)}")
        lines.append(f"Multiply-adds per image: {thousands(self.total_macs)}")
        biggest = max((s for s in self.steps if not s.container), key=lambda s: s.params, default=None)
        if biggest is not None and self.total_params and biggest.params / self.total_params > 0.5:
            share = 100 * biggest.params / self.total_params
            lines.append(
                wrap(
                    f"Layer {biggest.name} ({biggest.kind}) alone holds {share:.1f}% of the parameters: fully connected layers on a "
                    "big flattened input are where a CNN's weights go (the notes' §1.2 argument)."
                )
            )
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- per-layer working
def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _kernel(layer: Layer) -> Any:
    """A conv layer's ``kernel_size`` or a pooling layer's ``pool_size`` (None for other layers)."""
    kernel = getattr(layer, "kernel_size", None)
    return kernel if kernel is not None else getattr(layer, "pool_size", None)


def _pad4(layer: Layer) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of a conv or pool layer."""
    resolved = getattr(layer, "_pad4", None)  # Conv2D resolves 'same'/'valid' at construction
    if resolved is not None:
        return tuple(int(p) for p in resolved)  # type: ignore[return-value]
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        from ..ops.conv import _resolve_padding

        return _resolve_padding(  # type: ignore[return-value]
            padding,
            _pair(_kernel(layer)),
            _pair(getattr(layer, "stride", 1) or _kernel(layer)),
            _pair(getattr(layer, "dilation", 1)),
            layer.name,
        )
    if isinstance(padding, (tuple, list)):
        if len(padding) == 4:
            return tuple(int(p) for p in padding)  # type: ignore[return-value]
        ph, pw = _pair(padding)
        return (ph, ph, pw, pw)
    p = int(padding)
    return (p, p, p, p)


def _axis_formula(size: int, kernel: int, lo: int, hi: int, stride: int, dilation: int, actual: int) -> str:
    fe = dilation * (kernel - 1) + 1
    pad_text = f"2*{lo}" if lo == hi else f"{lo} + {hi}"
    exact = Fraction(size - fe + lo + hi, stride) + 1
    text = f"({size} - {fe} + {pad_text}) / {stride} + 1 = "
    if exact.denominator == 1:
        text += str(exact.numerator)
    else:
        text += f"{num(float(exact))} -> rounded down to {actual}"
    if lo == hi:
        expected = conv_output_size(size, kernel, padding=lo, stride=stride, dilation=dilation)
        if expected != actual:  # pragma: no cover - would be a library bug
            text += f"  [conv_output_size gives {expected}, the layer {actual}!]"
    return text


def _window_lines(layer: Layer, in_shape: Shape, out_shape: Shape, pooling: bool) -> list[str]:
    kh, kw = _pair(_kernel(layer))
    stride = getattr(layer, "stride", None)
    sh, sw = _pair(stride if stride is not None else _kernel(layer))
    dh, dw = _pair(getattr(layer, "dilation", 1))
    t, b, l, r = _pad4(layer)
    _, h, w = in_shape
    _, oh, ow = out_shape
    lines = []
    desc = f"window {kh}x{kw}, stride {sh if sh == sw else (sh, sw)}"
    if (t, b, l, r) != (0, 0, 0, 0):
        desc += f", padding {t if len({t, b, l, r}) == 1 else (t, b, l, r)}"
    if (dh, dw) != (1, 1):
        desc += f", dilation {dh if dh == dw else (dh, dw)} (covers {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1} pixels)"
    lines.append(desc)
    fh = _axis_formula(h, kh, t, b, sh, dh, oh)
    fw = _axis_formula(w, kw, l, r, sw, dw, ow)
    if fh == fw:
        lines.append(f"size: (W - F + 2P) / S + 1 = {fh}")
    else:
        lines.append(f"height: {fh}")
        lines.append(f"width:  {fw}")
    if pooling and (kh, kw) == (sh, sw) and (t, b, l, r) == (0, 0, 0, 0) and (dh, dw) == (1, 1):
        if h % kh == 0 and w % kw == 0:
            lines.append(
                f"(that is {h}/{kh} = {oh}, the shortcut §5.3 uses: window = stride = {kh} divides by {kh})"
            )
    return lines


def _own_params(layer: Layer) -> int:
    return int(sum(p.size for p in layer.params.values()))


def _leaf_lines(layer: Layer) -> list[str]:
    kind = type(layer).__name__
    in_shape, out_shape = layer.input_shape, layer.output_shape
    params = _own_params(layer)
    macs = int(layer.macs())
    lines: list[str] = []
    weight = layer.params.get("weight")
    bias = layer.params.get("bias")
    windowed = _kernel(layer) is not None and in_shape is not None and len(in_shape) == 3
    if windowed and weight is not None and weight.ndim == 4:
        # a convolution: F filters of size KH x KW x C/groups
        f, cg, kh, kw = weight.shape
        groups = getattr(layer, "groups", 1)
        lines.append(f"{f} filters of size {kh}x{kw}x{cg}" + (f" ({groups} groups)" if groups > 1 else ""))
        lines += _window_lines(layer, in_shape, out_shape, pooling=False)
        formula = f"{kh}*{kw}*{cg}*{f}"
        if bias is not None:
            formula += f" + {bias.size}"
        lines.append(f"parameters: {formula} = {thousands(params)}")
        _, oh, ow = out_shape
        lines.append(
            f"multiply-adds: {oh}*{ow} positions * {f} filters * {kh * kw * cg} taps = {thousands(macs)}"
        )
    elif windowed:
        lines += _window_lines(layer, in_shape, out_shape, pooling=True)
        lines.append("parameters: 0 (pooling has nothing to learn); depth unchanged")
    elif weight is not None and weight.ndim == 2:
        out_f, in_f = weight.shape
        formula = f"{in_f}*{out_f}" + (f" + {bias.size}" if bias is not None else "")
        lines.append(f"fully connected: every one of {thousands(in_f)} inputs to each of {out_f} outputs")
        lines.append(f"parameters: {formula} = {thousands(params)}")
        lines.append(f"multiply-adds: {in_f}*{out_f} = {thousands(macs)}")
    elif in_shape is not None and out_shape is not None and len(in_shape) == 3 and len(out_shape) == 1:
        c, h, w = in_shape
        lines.append(f"{h}*{w}*{c} = {thousands(out_shape[0])} neurons (one vector per image, §5.6)")
    elif (
        in_shape is not None
        and out_shape is not None
        and len(out_shape) == 3
        and out_shape[1:] != in_shape[1:]
    ):
        lines.append(f"averages each map down to {out_shape[1]}x{out_shape[2]}")
        if params:
            lines.append(f"parameters: {thousands(params)}")
    elif "Norm" in kind and params:
        lines.append(f"parameters: scale and shift per channel, 2*{params // 2} = {thousands(params)}")
        lines.append("(running mean and variance are saved too, but they are not trained)")
    elif in_shape == out_shape and not params:
        lines.append("shape unchanged, no parameters")
    elif params:
        lines.append(f"parameters: {thousands(params)}")
    return lines


def _container_lines(layer: Layer) -> list[str]:
    from ..models.residual import ResidualBlock

    if isinstance(layer, ResidualBlock):
        shortcut = "a 1x1 projection" if "downsample" in layer.children() else "the identity"
        return [f"residual block (§10.4): y = relu(F(x) + shortcut(x)), shortcut = {shortcut}"]
    return []


# ----------------------------------------------------------------------------- entry point
def _resolve_model(model: Layer | str | os.PathLike[str]) -> tuple[Layer, str]:
    if isinstance(model, Layer):
        return model, model.name
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(
            f"explain.network: expected a model, a zoo name or a model file path, got {type(model).__name__}"
        )
    path = Path(model)
    if path.is_file():
        from .. import models  # noqa: F401 - registers Sequential and the residual blocks
        from ..io.model_file import load_model

        loaded = load_model(path)
        return loaded, f"{loaded.name} ({path.name})"
    from ..models import zoo

    if str(model) in zoo.names():
        return zoo.get(str(model), seed=0), str(model)
    raise ConfigError(
        f"explain.network: {str(model)!r} is neither a model file nor a zoo model; zoo models: "
        f"{', '.join(zoo.names())}"
    )


def network(model: Layer | str | os.PathLike[str]) -> NetworkExplanation:
    """Explain a network layer by layer: output shapes by §3.4's formula, parameters, multiply-adds.

    ``model`` is a built model, a zoo name (``"simple_cnn"``, ``"cats_dogs_cnn"``, ``"lenet5"``, ...) or
    the path of a saved model file.

    >>> r = network("simple_cnn")
    >>> [s.params for s in r.steps if s.params]
    [896, 18496, 524416, 1290]
    """
    layer, label = _resolve_model(model)
    if not layer.built or layer.input_shape is None:
        raise ConfigError(
            f"explain.network: model {layer.name!r} is not built; give it an input_shape or call it once"
        )
    steps: list[LayerStep] = []
    pairs = list(layer.named_layers()) or [(layer.name, layer)]
    for name, child in pairs:
        container = bool(child.children())
        if container:
            own = _own_params(child)
            macs = int(child.macs()) - sum(int(c.macs()) for c in child.children().values())
            lines = _container_lines(child)
        else:
            own = _own_params(child)
            macs = int(child.macs())
            lines = _leaf_lines(child)
        steps.append(
            LayerStep(
                name=name,
                kind=type(child).__name__,
                depth=name.count(".") if pairs[0][1] is not layer else 0,
                input_shape=child.input_shape,
                output_shape=child.output_shape,
                params=own,
                macs=macs,
                lines=lines,
                container=container,
            )
        )
    note = _NOTES_SECTIONS.get(layer.name, "")
    return NetworkExplanation(
        model_name=label,
        input_shape=tuple(layer.input_shape),
        steps=steps,
        total_params=int(layer.count_params(trainable_only=False)),
        trainable_params=int(layer.count_params()),
        total_macs=int(layer.macs()),
        note=note,
    )
