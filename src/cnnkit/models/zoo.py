"""The model zoo: the notes' networks and the classic architectures of notes section 10, by name.

>>> import cnnkit.models as models
>>> model = models.get("simple_cnn", seed=0)        # notes section 5, built for (3, 32, 32)
>>> model.count_params(), model.output_shape
(545098, (10,))
>>> models.info("vgg16").params                      # "138 million parameters" (notes 10.3)
138357544

Every model is a :class:`~cnnkit.models.Sequential`, built for its input shape, whose output is the
class *scores* (logits). The notes end their networks with a softmax (sections 5.8, 9); in cnnkit the
softmax lives in the loss (``cross_entropy`` fuses it, which is exact and stable) and in ``predict``,
which returns probabilities. Add a ``Softmax()`` layer only for a model used outside cnnkit's loop.

The notes' networks:

- ``simple_cnn`` -- section 5: (3, 32, 32) -> Conv 32@3x3 pad 1 -> ReLU -> MaxPool 2 -> Conv 64@3x3 pad 1
  -> ReLU -> MaxPool 2 -> Flatten (4,096) -> Dense 128 -> ReLU -> Dense 10. 545,098 parameters.
- ``cats_dogs_cnn`` -- section 9: (3, 128, 128), convolutions of 32, 64, 128 3x3 filters, each followed by
  ReLU and a 2x2 max pool, Flatten (32,768), Dense 512 -> ReLU -> Dense 2. The notes give only "3x3" and
  the shapes 128 -> 128, 64 -> 64, 32 -> 32: by section 3.4, (128 - 3 + 2P) / 1 + 1 = 128 needs P = 1
  ("same" padding), which they do not state. 16,872,002 parameters, 16,777,728 of them in the first
  dense layer -- the notes' own section 1.2 argument against big fully connected layers.
- ``lenet5`` -- section 10.1, LeCun et al. 1998, with the modern substitutions: ReLU instead of the
  scaled tanh and max pooling instead of trainable subsampling; C5 written as Flatten + Dense(120). For
  (1, 32, 32) the first convolution is unpadded as in the paper; for (1, 28, 28) (MNIST) it has
  padding 2, which gives the same 28x28x6 feature maps. 61,706 parameters with 10 classes either way.

The classic ImageNet architectures, exactly torchvision's (same layers, same state-dict names and shapes,
so torchvision weights converted to NumPy load with ``load_state_dict``): ``alexnet`` (section 10.2),
``vgg11``/``13``/``16``/``19`` and their ``_bn`` variants (10.3), ``resnet18``/``34``/``50``/``101``/``152``
(10.4). Default input (3, 224, 224) and 1000 classes. Containers are nested Sequentials with named
children (``features``, ``avgpool``, ``classifier``; ``conv1`` ... ``layer4``, ``fc``), and inside
``features`` and ``classifier`` the ReLU, max-pool and dropout layers take list positions as in
torchvision, so the indices match (``features.0.weight``, ``classifier.6.bias``). torchvision flattens
in ``forward``; here a parameter-free ``flatten`` child does it.

Small-input variants for 32x32 images (CIFAR-10), default 10 classes:

- ``resnet18_small`` ... ``resnet152_small``: the usual CIFAR adaptation -- a 3x3 stride-1 stem
  convolution instead of 7x7 stride 2, and no max pool, so the four stages see 32, 16, 8 and 4 pixels
  (the 224 version would shrink 32x32 to 1x1 before the last stage); global average pooling; fc.
- ``vgg11_small`` ... ``vgg19_bn_small``: torchvision's ``features`` unchanged (five 2x2 max pools take
  32x32 to 1x1x512), then global average pooling, flatten and one Dense(num_classes) ``classifier``. The
  ImageNet classifier (25,088 -> 4,096 -> 4,096 -> classes, 120M parameters of the 138M) would mostly
  replicate one pixel 49 times; a single linear layer on the 512 features is the common CIFAR choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..layers import (
    AdaptiveAvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
)
from ..layers.base import Layer, Shape
from ..ops._args import is_int
from .residual import BasicBlock, Bottleneck, ResidualBlock
from .sequential import Sequential

__all__ = ["ZooEntry", "get", "info", "names"]

Layers = list[Layer] | dict[str, Layer]
Builder = Callable[[int, Shape], Layers]


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: how to build it and what it is.

    ``params`` is the trainable parameter count for the default ``input_shape`` and ``num_classes``
    (the tests hold every build to it).
    """

    name: str
    builder: Builder
    input_shape: Shape
    num_classes: int
    params: int
    description: str
    family: str


# --------------------------------------------------------------------------- the notes' networks
def _simple_cnn(num_classes: int, input_shape: Shape) -> Layers:
    """Notes section 5."""
    return [
        Conv2D(32, 3, padding=1),  # 5.2: 32x32x3 -> 32x32x32
        ReLU(),
        MaxPool2D(2),  # 5.3: -> 16x16x32
        Conv2D(64, 3, padding=1),  # 5.4: -> 16x16x64
        ReLU(),
        MaxPool2D(2),  # 5.5: -> 8x8x64
        Flatten(),  # 5.6: 4,096
        Dense(128),  # 5.7
        ReLU(),
        Dense(num_classes),  # 5.8 (softmax in the loss)
    ]


def _cats_dogs_cnn(num_classes: int, input_shape: Shape) -> Layers:
    """Notes section 9; padding 1 keeps each convolution's size (see the module docstring)."""
    layers: list[Layer] = []
    for filters in (32, 64, 128):
        layers += [Conv2D(filters, 3, padding=1), ReLU(), MaxPool2D(2)]
    return [*layers, Flatten(), Dense(512), ReLU(), Dense(num_classes)]


def _lenet5(num_classes: int, input_shape: Shape) -> Layers:
    """LeNet-5 with ReLU and max pooling; padding 2 for 28x28 input."""
    padding = 2 if tuple(input_shape[1:]) == (28, 28) else 0
    return [
        Conv2D(6, 5, padding=padding),  # C1: 28x28x6
        ReLU(),
        MaxPool2D(2),  # S2: 14x14x6
        Conv2D(16, 5),  # C3: 10x10x16
        ReLU(),
        MaxPool2D(2),  # S4: 5x5x16
        Flatten(),  # 400
        Dense(120),  # C5
        ReLU(),
        Dense(84),  # F6
        ReLU(),
        Dense(num_classes),
    ]


# --------------------------------------------------------------------------- AlexNet
def _alexnet(num_classes: int, input_shape: Shape) -> Layers:
    """torchvision ``alexnet`` (the one-GPU variant of Krizhevsky et al. 2012, 64/192/384/256/256)."""
    features = Sequential(
        [
            Conv2D(64, 11, stride=4, padding=2),
            ReLU(),
            MaxPool2D(3, stride=2),
            Conv2D(192, 5, padding=2),
            ReLU(),
            MaxPool2D(3, stride=2),
            Conv2D(384, 3, padding=1),
            ReLU(),
            Conv2D(256, 3, padding=1),
            ReLU(),
            Conv2D(256, 3, padding=1),
            ReLU(),
            MaxPool2D(3, stride=2),
        ],
        name="features",
    )
    classifier = Sequential(
        [
            Dropout(0.5),
            Dense(4096),
            ReLU(),
            Dropout(0.5),
            Dense(4096),
            ReLU(),
            Dense(num_classes),
        ],
        name="classifier",
    )
    return {
        "features": features,
        "avgpool": AdaptiveAvgPool2D((6, 6)),
        "flatten": Flatten(),
        "classifier": classifier,
    }


# --------------------------------------------------------------------------- VGG
#: torchvision's configurations: output channels of each 3x3 convolution, "M" for a 2x2 max pool.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # fmt: skip
}


def _vgg_features(config: list[int | str], batch_norm: bool) -> Sequential:
    """Conv 3x3 pad 1 (with bias, also in the BN variants) [-> BatchNorm2D] -> ReLU; "M": MaxPool 2."""
    layers: list[Layer] = []
    for item in config:
        if item == "M":
            layers.append(MaxPool2D(2, stride=2))
        else:
            layers.append(Conv2D(int(item), 3, padding=1))
            if batch_norm:
                layers.append(BatchNorm2D())
            layers.append(ReLU())
    return Sequential(layers, name="features")


def _vgg(config: str, batch_norm: bool) -> Builder:
    def build(num_classes: int, input_shape: Shape) -> Layers:
        classifier = Sequential(
            [
                Dense(4096),
                ReLU(),
                Dropout(0.5),
                Dense(4096),
                ReLU(),
                Dropout(0.5),
                Dense(num_classes),
            ],
            name="classifier",
        )
        return {
            "features": _vgg_features(VGG_CONFIGS[config], batch_norm),
            "avgpool": AdaptiveAvgPool2D((7, 7)),
            "flatten": Flatten(),
            "classifier": classifier,
        }

    return build


def _vgg_small(config: str, batch_norm: bool) -> Builder:
    def build(num_classes: int, input_shape: Shape) -> Layers:
        return {
            "features": _vgg_features(VGG_CONFIGS[config], batch_norm),
            "avgpool": GlobalAvgPool2D(),
            "flatten": Flatten(),
            "classifier": Dense(num_classes),
        }

    return build


# --------------------------------------------------------------------------- ResNet
#: Blocks per stage (layer1 ... layer4) and the block type, as in He et al. 2015, table 1.
RESNET_CONFIGS: dict[str, tuple[type[ResidualBlock], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def _resnet_stages(block: type[ResidualBlock], counts: tuple[int, int, int, int]) -> dict[str, Layer]:
    """layer1 ... layer4: 64, 128, 256, 512 planes; the first block of layers 2-4 has stride 2."""
    stages: dict[str, Layer] = {}
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
        stride = 1 if i == 0 else 2
        blocks = [block(planes, stride)] + [block(planes) for _ in range(count - 1)]
        stages[f"layer{i + 1}"] = Sequential(blocks, name=f"layer{i + 1}")
    return stages


def _resnet(config: str, small: bool) -> Builder:
    block, counts = RESNET_CONFIGS[config]

    def build(num_classes: int, input_shape: Shape) -> Layers:
        layers: dict[str, Layer] = {}
        if small:
            layers["conv1"] = Conv2D(64, 3, padding=1, use_bias=False)
        else:
            layers["conv1"] = Conv2D(64, 7, stride=2, padding=3, use_bias=False)
        layers["bn1"] = BatchNorm2D()
        layers["relu"] = ReLU()
        if not small:
            layers["maxpool"] = MaxPool2D(3, stride=2, padding=1)
        layers.update(_resnet_stages(block, counts))
        layers["avgpool"] = GlobalAvgPool2D() if small else AdaptiveAvgPool2D((1, 1))
        layers["flatten"] = Flatten()
        layers["fc"] = Dense(num_classes)
        return layers

    return build


# --------------------------------------------------------------------------- the registry
_IMAGENET: Shape = (3, 224, 224)
_CIFAR: Shape = (3, 32, 32)

#: Parameter counts at the default input and classes; ImageNet ones are torchvision's.
_COUNTS: dict[str, int] = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vgg11_small": 9_225_610,
    "vgg13_small": 9_410_122,
    "vgg16_small": 14_719_818,
    "vgg19_small": 20_029_514,
    "vgg11_bn_small": 9_231_114,
    "vgg13_bn_small": 9_416_010,
    "vgg16_bn_small": 14_728_266,
    "vgg19_bn_small": 20_040_522,
    "resnet18_small": 11_173_962,
    "resnet34_small": 21_282_122,
    "resnet50_small": 23_520_842,
    "resnet101_small": 42_512_970,
    "resnet152_small": 58_156_618,
}


def _entries() -> dict[str, ZooEntry]:
    entries = [
        ZooEntry("simple_cnn", _simple_cnn, (3, 32, 32), 10, 545_098, "notes section 5: two conv/pool stages, Dense 128, Dense 10", "notes"),
        ZooEntry("cats_dogs_cnn", _cats_dogs_cnn, (3, 128, 128), 2, 16_872_002, "notes section 9: three conv/pool stages (32, 64, 128, padding 1), Dense 512, Dense 2", "notes"),
        ZooEntry("lenet5", _lenet5, (1, 32, 32), 10, 61_706, "LeNet-5 (notes 10.1) with ReLU and max pooling; (1, 28, 28) input gets padding 2", "lenet"),
        ZooEntry("alexnet", _alexnet, _IMAGENET, 1000, _COUNTS["alexnet"], "AlexNet (notes 10.2), torchvision layout", "alexnet"),
    ]  # fmt: skip
    for config in VGG_CONFIGS:
        depth = config[3:]
        for bn in (False, True):
            suffix = "_bn" if bn else ""
            kind = " with batch norm" if bn else ""
            entries.append(
                ZooEntry(
                    config + suffix,
                    _vgg(config, bn),
                    _IMAGENET,
                    1000,
                    _COUNTS[config + suffix],
                    f"VGG-{depth}{kind} (notes 10.3), torchvision layout",
                    "vgg",
                )
            )
            entries.append(
                ZooEntry(
                    f"{config}{suffix}_small",
                    _vgg_small(config, bn),
                    _CIFAR,
                    10,
                    _COUNTS[f"{config}{suffix}_small"],
                    f"VGG-{depth}{kind} features for 32x32 input, global average pool, one Dense",
                    "vgg",
                )
            )
    for config, (block, _) in RESNET_CONFIGS.items():
        depth = config[6:]
        entries.append(
            ZooEntry(
                config,
                _resnet(config, small=False),
                _IMAGENET,
                1000,
                _COUNTS[config],
                f"ResNet-{depth} (notes 10.4) with {block.__name__}s, torchvision layout",
                "resnet",
            )
        )
        entries.append(
            ZooEntry(
                config + "_small",
                _resnet(config, small=True),
                _CIFAR,
                10,
                _COUNTS[config + "_small"],
                f"ResNet-{depth} for 32x32 input: 3x3 stride-1 stem, no max pool",
                "resnet",
            )
        )
    return {entry.name: entry for entry in entries}


_ZOO: dict[str, ZooEntry] = _entries()


def names() -> list[str]:
    """Names of the zoo's models, in registry order (notes' networks first)."""
    return list(_ZOO)


def info(name: str) -> ZooEntry:
    """The :class:`ZooEntry` for ``name``; ConfigError listing the known names otherwise."""
    try:
        return _ZOO[name]
    except (KeyError, TypeError):
        raise ConfigError(f"zoo: unknown model {name!r}; known: {', '.join(_ZOO)}") from None


def _check_shape(value: Any, name: str) -> Shape:
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(is_int(s) and s >= 1 for s in shape):
        raise ConfigError(
            f"zoo.get({name!r}): input_shape must be three positive ints (C, H, W), got {value!r}"
        )
    return tuple(int(s) for s in shape)


def get(
    name: str,
    num_classes: int | None = None,
    input_shape: Shape | None = None,
    seed: int | None = None,
    dtype: Any = np.float32,
    fuse: bool = True,
) -> Sequential:
    """Build the zoo model ``name`` for ``input_shape`` (per sample, ``(C, H, W)``) and ``num_classes``.

    Defaults come from :func:`info`. With ``seed`` the weights are reproducible bit for bit (each layer
    draws from a seed derived from ``seed`` and its dotted name); otherwise they come from the global
    generator (:func:`cnnkit.set_seed`). Returns a built :class:`Sequential` named ``name``, in
    ``dtype``, in training mode, with fusion on unless ``fuse`` is False (see :mod:`cnnkit.layers.fused`;
    ``model.set_fusion`` switches it later). A ShapeError names the layer when ``input_shape`` is too small for the
    architecture.
    """
    entry = info(name)
    if num_classes is None:
        num_classes = entry.num_classes
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"zoo.get({name!r}): num_classes must be an int >= 1, got {num_classes!r}")
    shape = entry.input_shape if input_shape is None else _check_shape(input_shape, name)
    layers = entry.builder(int(num_classes), shape)
    model = Sequential(layers, name=name, seed=seed, dtype=dtype, fuse=fuse)
    if not fuse:
        model.set_fusion(False)  # the nested Sequentials (features, layer1, ...) too
    model.build(shape)
    return model
