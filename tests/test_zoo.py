"""The model zoo: parameter counts, torchvision state-dict names and shapes, forward passes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn  # noqa: E402

import cnnkit.models as models
import torch_zoo_reference as ref  # noqa: E402
from cnnkit import ConfigError, ShapeError
from cnnkit.models import zoo

# Published torchvision counts (torchvision.models docs, "num_params", 1000 classes) and the notes' networks
# worked out by hand: simple_cnn 896 + 18,496 + 524,416 + 1,290; cats_dogs 896 + 18,496 + 73,856 +
# 16,777,728 + 1,026; lenet5 156 + 2,416 + 48,120 + 10,164 + 850.
PUBLISHED = {
    "simple_cnn": 545_098,
    "cats_dogs_cnn": 16_872_002,
    "lenet5": 61_706,
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
}

VGGS = ["vgg11", "vgg13", "vgg16", "vgg19"]
RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
ALL = (
    ["simple_cnn", "cats_dogs_cnn", "lenet5", "alexnet"]
    + [v + s for v in VGGS for s in ("", "_bn", "_small", "_bn_small")]
    + [r + s for r in RESNETS for s in ("", "_small")]
)
# Builds that take several seconds on a small machine (130-144M parameters to draw each); VGG-16 stays in
# the default run through test_vgg16_builds_in_seconds.
SLOW_BUILDS = {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}


def _param(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW_BUILDS else name


def _torch_model(name: str, num_classes: int | None = None) -> nn.Module:
    """The plain torch.nn twin of a zoo entry, on the meta device (names and shapes only)."""
    base = name.removesuffix("_small")
    small = name.endswith("_small")
    classes = num_classes or (10 if small else 1000)
    if name == "alexnet":
        return ref.on_meta(ref.AlexNet, classes)
    if base.startswith("resnet"):
        return ref.on_meta(ref.ResNet, base, classes, small)
    cfg, bn = base.removesuffix("_bn"), base.endswith("_bn")
    if small:
        return ref.on_meta(ref.VGGSmall, cfg, bn, classes)
    return ref.on_meta(ref.VGG, cfg, bn, classes)


def _torch_count(name: str) -> int:
    return sum(p.numel() for p in _torch_model(name).parameters())


# --------------------------------------------------------------------------- registry


def test_names_and_info():
    names = models.names()
    assert names == ALL or sorted(names) == sorted(ALL)
    assert len(set(names)) == len(names) == 30
    entry = models.info("resnet18_small")
    assert entry.input_shape == (3, 32, 32) and entry.num_classes == 10
    assert models.info("vgg16").input_shape == (3, 224, 224) and models.info("vgg16").num_classes == 1000
    assert models.info("cats_dogs_cnn").num_classes == 2
    assert all(models.info(n).description for n in names)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="resnet18"):
        models.get("resnet17")
    with pytest.raises(ConfigError):
        models.info("nope")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(ConfigError, match="num_classes"):
        models.get("lenet5", num_classes=bad)


@pytest.mark.parametrize("bad", [(32, 32), (3, 0, 32), (3, 32.0, 32), "abc", 5])
def test_bad_input_shape(bad):
    with pytest.raises(ConfigError, match="input_shape"):
        models.get("simple_cnn", input_shape=bad)


def test_input_too_small_is_a_shape_error():
    # five 2x2 max pools: 16 -> 8 -> 4 -> 2 -> 1 -> 0
    with pytest.raises(ShapeError):
        models.get("vgg11_small", input_shape=(3, 16, 16))


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_metadata_equals_published_count(name):
    assert models.info(name).params == PUBLISHED[name]


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("simple_cnn", "cats_dogs_cnn", "lenet5")])
def test_metadata_equals_torch_twin(name):
    assert models.info(name).params == _torch_count(name)


@pytest.mark.parametrize("name", [_param(n) for n in ALL])
def test_build_matches_metadata(name):
    model = models.get(name, seed=0)
    entry = models.info(name)
    assert model.built and model.input_shape == entry.input_shape
    assert model.output_shape == (entry.num_classes,)
    assert model.count_params() == entry.params


def test_vgg16_builds_in_seconds():
    start = time.perf_counter()
    model = models.get("vgg16", seed=0)
    elapsed = time.perf_counter() - start
    assert model.count_params() == 138_357_544  # "138 million parameters", notes 10.3
    assert model.params == {} and model["classifier"][0].params["weight"].dtype == np.float32
    assert elapsed < 20, f"building VGG-16 took {elapsed:.1f} s"


def test_num_classes_changes_only_the_last_layer():
    # lenet5: Dense(84, classes) has 84 * c + c parameters
    assert models.get("lenet5", num_classes=3).count_params() == 61_706 - 850 + 84 * 3 + 3
    assert models.get("resnet18_small", num_classes=100).count_params() == 11_173_962 - 5_130 + 51_300


def test_lenet5_28_and_32_have_the_same_parameters():
    a = models.get("lenet5", input_shape=(1, 28, 28), seed=0)
    b = models.get("lenet5", seed=0)
    assert a.count_params() == b.count_params() == 61_706
    assert a[0].output_shape == b[0].output_shape == (6, 28, 28)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


# --------------------------------------------------------------------------- torchvision names and shapes


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "name", ["alexnet", "vgg11_bn", "resnet18", "resnet50", "resnet18_small", "vgg11_bn_small"]
)
def test_state_dict_names_and_shapes_match_torch(name):
    model = models.get(name, seed=0)
    twin = _torch_model(name)
    expected = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert _shapes(model) == expected
    # parameters come in the same (depth-first) order
    assert [n for n, _, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in ("simple_cnn", "cats_dogs_cnn", "lenet5")])
def test_state_dict_names_and_shapes_match_torch_all(name):
    twin = _torch_model(name)
    assert _shapes(models.get(name, seed=0)) == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_known_torchvision_keys():
    # keys as printed by torchvision.models.resnet18().state_dict() and friends
    r18 = models.get("resnet18", seed=0).state_dict()
    assert len(r18) == 122
    for key in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.num_batches_tracked",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in r18, key
    assert "layer1.0.downsample.0.weight" not in r18  # 64 -> 64, stride 1: identity shortcut
    assert r18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert r18["fc.weight"].shape == (1000, 512)
    alex = models.get("alexnet", seed=0).state_dict()
    assert sorted(alex) == sorted(
        f"{part}.{i}.{p}"
        for part, idx in (("features", (0, 3, 6, 8, 10)), ("classifier", (1, 4, 6)))
        for i in idx
        for p in ("weight", "bias")
    )
    assert alex["classifier.1.weight"].shape == (4096, 9216)


# --------------------------------------------------------------------------- forward passes


def test_resnet18_small_forward_shape():
    model = models.get("resnet18_small", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    out = model(x, training=False)
    assert out.shape == (2, 10) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 32, 32)])
def test_lenet5_forward_shape(shape):
    model = models.get("lenet5", input_shape=shape, seed=0)
    out = model(np.random.default_rng(0).random((3, *shape), dtype=np.float32))
    assert out.shape == (3, 10)


def test_seed_reproducible_and_distinct():
    a, b = models.get("simple_cnn", seed=1), models.get("simple_cnn", seed=1)
    c = models.get("simple_cnn", seed=2)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_float64_models():
    model = models.get("lenet5", seed=0, dtype=np.float64)
    assert all(v.dtype == np.float64 for v in model.state_dict().values() if v.dtype.kind == "f")
    assert model(np.zeros((1, 1, 32, 32))).dtype == np.float64


def _load_from_torch(model, twin: nn.Module, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics, so eval mode tests them
                module.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, module.num_features)))
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, module.num_features)))
                module.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, module.num_features)))
                module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, module.num_features)))
    model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})


@pytest.mark.parametrize(("name", "size"), [("resnet18_small", 32), ("resnet18", 64), ("vgg11_bn_small", 32)])
def test_forward_equals_torch_twin_in_eval_mode(name, size):
    torch.manual_seed(0)
    base = name.removesuffix("_small")
    if base.startswith("resnet"):
        twin = ref.ResNet(base, 10, small=name.endswith("_small"))
    else:
        twin = ref.VGGSmall("vgg11", True, 10)
    twin.eval()
    model = models.get(name, num_classes=10, input_shape=(3, size, size), seed=0)
    _load_from_torch(model, twin, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 3, size, size)).astype(np.float32)
    out = model(x, training=False)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_alexnet_forward_equals_torch_twin():
    torch.manual_seed(0)
    twin = ref.AlexNet(10).eval()
    model = models.get("alexnet", num_classes=10, seed=0)
    _load_from_torch(model, twin, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        model(x, training=False), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_zoo_model_config_round_trip():
    from cnnkit.layers.base import from_config, to_config

    model = models.get("resnet18_small", seed=0)
    clone = from_config(to_config(model))
    assert _shapes(clone) == _shapes(model)
    clone.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(clone(x, training=False), model(x, training=False))


def test_zoo_module_exports():
    assert models.get is zoo.get and models.ZooEntry is zoo.ZooEntry
