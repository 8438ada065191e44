"""Fusion as real layers (cnnkit.layers.fused), decided when a model is built.

For every zoo model, ``model(x, training=False)``, ``model.predict(x)`` and a plain loop over the model's
top-level children give the same values bit for bit, with fusion on and with fusion off; the parameter
names, the saved architecture and the gradients do not depend on fusion.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnkit.models as models
import cnnkit.ops.policy as policy
from cnnkit.errors import ConfigError
from cnnkit.io import load_model, read_header
from cnnkit.layers import (
    Conv2D,
    ConvReLUMaxPool2D,
    Dense,
    Flatten,
    FusedLayer,
    MaxPool2D,
    ReLU,
    ReLUMaxPool2D,
    Softmax,
)
from cnnkit.models import Sequential
from cnnkit.models.summary import layer_rows, summary
from cnnkit.ops import softmax

#: Small inputs: every zoo model at a size that keeps the default run fast.
_SMALL_INPUT = {"lenet5": (1, 32, 32), "cats_dogs_cnn": (3, 32, 32), "simple_cnn": (3, 32, 32)}


def _input_shape(name: str) -> tuple[int, int, int]:
    if name in _SMALL_INPUT:
        return _SMALL_INPUT[name]
    if name.startswith("resnet") and name.endswith("_small"):
        return (3, 8, 8)
    if name.startswith("vgg") and name.endswith("_small"):
        return (3, 32, 32)
    return (3, 64, 64)  # ImageNet architectures at the smallest size their pooling allows comfortably


def _loop(model: Sequential, x: np.ndarray) -> np.ndarray:
    """A user's own loop over the model's top-level children."""
    for child in model.children().values():
        x = child(x, training=False)
    return x


def _three_ways(model: Sequential, x: np.ndarray) -> np.ndarray:
    """``model(x)``; asserts that ``predict`` and the plain loop give the same values bit for bit."""
    logits = model(x, training=False)
    np.testing.assert_array_equal(_loop(model, x), logits)
    np.testing.assert_array_equal(model.predict(x), softmax(logits, axis=1))
    return logits


def _check_zoo_model(name: str) -> None:
    shape = _input_shape(name)
    model = models.get(name, num_classes=5, input_shape=shape, seed=0)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    names = list(model.state_dict())
    on = _three_ways(model, x)
    model.set_fusion(False)
    assert all(not isinstance(layer, FusedLayer) for _, layer in model.named_layers())
    for _, layer in [("", model), *model.named_layers()]:
        if isinstance(layer, Sequential):
            assert layer.children() is layer.layers
    off = _three_ways(model, x)
    # no compiled first-layer kernel runs at these sizes, so fused and unfused are the same arithmetic
    np.testing.assert_array_equal(on, off)
    assert list(model.state_dict()) == names


#: One of each family in the default run (about a second each); the deeper ones and the ImageNet
#: architectures (up to 144M parameters) run with ``-m slow``.
_FAST = ["simple_cnn", "cats_dogs_cnn", "lenet5", "vgg11_small", "vgg11_bn_small", "resnet18_small"]
_SLOW = [n for n in models.names() if n not in _FAST]


@pytest.mark.parametrize("name", _FAST)
def test_zoo_call_predict_and_loop_agree_with_fusion_on_and_off(name):
    _check_zoo_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", _SLOW)
def test_every_zoo_model_call_predict_and_loop_agree_with_fusion_on_and_off(name):
    _check_zoo_model(name)


def test_zoo_get_fuse_false_builds_the_same_model_unfused():
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    fused = models.get("vgg11_bn_small", seed=0)
    plain = models.get("vgg11_bn_small", seed=0, fuse=False)
    assert plain["features"].children() is plain["features"].layers
    np.testing.assert_array_equal(_three_ways(plain, x), _three_ways(fused, x))


def test_zoo_models_fuse_where_expected():
    kinds = {
        name: [type(c).__name__ for c in models.get(name, seed=0).children().values()][:3]
        for name in ("simple_cnn", "lenet5")
    }
    assert kinds["simple_cnn"] == ["ConvReLUMaxPool2D", "ConvReLUMaxPool2D", "Flatten"]
    assert kinds["lenet5"] == ["ConvReLUMaxPool2D", "ConvReLUMaxPool2D", "Flatten"]
    vgg = models.get("vgg11_bn_small", seed=0)
    # BatchNorm2D sits between the convolution and the ReLU: the ReLU and the pooling fuse
    assert "ReLUMaxPool2D" in [type(c).__name__ for c in vgg["features"].children().values()]


@pytest.fixture
def compiled_everywhere(monkeypatch):
    """Every compiled kernel for inputs of any size: the direct first layer and Winograd run fused."""
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(policy, "WINOGRAD_CHANNELS_PER_TILE", 1 << 20)
    if not policy.numba_on():
        pytest.skip("Numba not available")


@pytest.mark.parametrize("name", ["simple_cnn", "lenet5"])
def test_the_three_ways_agree_where_the_fused_kernels_run(compiled_everywhere, name):
    """The direct first-layer kernel sums in another order than the GEMM: fused and unfused agree to
    rounding, but within each setting the three ways agree bit for bit."""
    shape = _input_shape(name)
    model = models.get(name, input_shape=shape, seed=0)
    x = np.random.default_rng(2).standard_normal((3, *shape)).astype(np.float32)
    on = _three_ways(model, x)
    off = _three_ways(model.set_fusion(False), x)
    np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-5 * float(np.abs(off).max()))


def test_gradients_do_not_depend_on_fusion(compiled_everywhere):
    """Training step of a block model: the fused and unfused gradients (Winograd fused: bit for bit)."""
    rng = np.random.default_rng(3)

    def model(fuse):
        layers = [Conv2D(16, 3, padding=1), ReLU(), MaxPool2D(2)] * 2 + [Flatten(), Dense(3)]
        return Sequential(
            [type(layer)(**layer.get_config()) for layer in layers], input_shape=(16, 8, 8), seed=4, fuse=fuse
        )

    x = rng.standard_normal((3, 16, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((3, 3)).astype(np.float32)
    fused, plain = model(True), model(False)
    assert [type(c) for c in fused.children().values()][:2] == [ConvReLUMaxPool2D] * 2
    np.testing.assert_array_equal(fused.forward(x, True), plain.forward(x, True))
    np.testing.assert_array_equal(fused.backward(dy), plain.backward(dy))
    for (name, owner, key), (_, other, _) in zip(
        fused.named_parameters(), plain.named_parameters(), strict=True
    ):
        np.testing.assert_array_equal(owner.grads[key], other.grads[key], err_msg=name)


def test_no_layer_writes_another_layers_cache():
    model = models.get("simple_cnn", seed=0)
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model.forward(x, True)
    block = model.children()["0"]
    assert isinstance(block, ConvReLUMaxPool2D) and block._cache is not None
    assert all(layer._cache is None for layer in block.children().values())
    model.backward(np.ones((2, 10), np.float32))
    assert set(model[0].grads) == {"weight", "bias"}  # the convolution sets its own gradients


def test_names_config_and_files_stay_unfused(tmp_path):
    model = models.get("lenet5", seed=0)
    assert list(model.state_dict())[:4] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert list(model.layers) == [str(i) for i in range(12)]
    assert list(model.children())[:3] == ["0", "3", "6"]
    assert [type(layer).__name__ for layer in model.children()["0"].children().values()] == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
    ]
    path = tmp_path / "lenet.cnnkit"
    model.save(path)
    arch = json.loads(read_header(path)[1]["architecture"])
    assert "Fused" not in json.dumps(arch) and "ConvReLUMaxPool2D" not in json.dumps(arch)
    assert [spec["class"] for spec in arch["config"]["layers"].values()][:3] == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
    ]
    loaded = load_model(path)
    assert type(loaded.children()["0"]) is ConvReLUMaxPool2D  # fusion re-derived on build
    x = np.random.default_rng(6).standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    model.set_fusion(False)
    model.save(tmp_path / "plain.cnnkit")
    plain = load_model(tmp_path / "plain.cnnkit")
    assert plain.fuse is False and plain.children() is plain.layers


def test_fuse_false_and_set_fusion():
    layers = [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), ReLU(), MaxPool2D(2), Flatten(), Dense(2)]
    model = Sequential(layers, input_shape=(3, 8, 8), seed=0, fuse=False)
    assert model.children() is model.layers and model.get_config()["fuse"] is False
    model.set_fusion(True)
    kinds = [type(c) for c in model.children().values()]
    assert kinds == [ConvReLUMaxPool2D, ReLUMaxPool2D, Flatten, Dense]
    assert "fuse" not in model.get_config()
    # only exact types fuse; a strided convolution keeps its own layer, its ReLU and pooling fuse
    strided = Sequential([Conv2D(4, 3, stride=2), ReLU(), MaxPool2D(2)], input_shape=(3, 9, 9))
    assert [type(c) for c in strided.children().values()] == [Conv2D, ReLUMaxPool2D]
    # a model ending in Softmax keeps it last (fit's head strips it)
    soft = Sequential([Conv2D(2, 3), ReLU(), MaxPool2D(2), Flatten(), Softmax()], input_shape=(1, 6, 6))
    assert type(soft[-1]) is Softmax and type(list(soft.children().values())[-1]) is Softmax


def test_summary_lists_declared_layers_and_optionally_one_row_per_fused_layer():
    model = models.get("simple_cnn", seed=0)
    text = summary(model)
    assert "0 (Conv2D)" in text and "Run fused" in text and "0+1+2 (ConvReLUMaxPool2D)" in text
    rows = layer_rows(model, fused=True)
    assert [r.type for r in rows[:3]] == ["ConvReLUMaxPool2D", "ConvReLUMaxPool2D", "Flatten"]
    assert rows[0].name == "0" and rows[0].output_shape == (32, 16, 16) and rows[0].params == 896
    assert sum(r.params for r in rows) == model.count_params()
    assert sum(r.macs for r in rows) == model.macs()
    assert "ConvReLUMaxPool2D" in summary(model, fused=True)


def test_fused_layer_checks_what_it_wraps():
    with pytest.raises(ConfigError, match="ConvReLUMaxPool2D"):
        ConvReLUMaxPool2D({"0": ReLU(), "1": MaxPool2D(2)})


def test_training_a_softmax_ended_model_runs_the_fused_layers():
    """fit's loss head skips a final Softmax and runs the model's children as they run: fused."""
    from cnnkit.training.head import LossHead

    model = Sequential(
        [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3), Softmax()],
        input_shape=(1, 8, 8),
        seed=0,
    )
    head = LossHead(model)
    assert head.ends_with_softmax
    assert any(isinstance(layer, ConvReLUMaxPool2D) for layer in head.body)
    model.set_fusion(False)
    assert not any(isinstance(layer, FusedLayer) for layer in head.body)
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(softmax(head.logits(x, False), axis=1), model.predict(x))
