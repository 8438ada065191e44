"""Residual blocks and whole models: finite-difference gradient checks and torch.nn twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn  # noqa: E402

import torch_zoo_reference as ref  # noqa: E402
from cnnkit import ConfigError, GradcheckError, ShapeError
from cnnkit.gradcheck import gradcheck
from cnnkit.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from cnnkit.layers.base import from_config, to_config
from cnnkit.models import BasicBlock, Bottleneck, Sequential


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# --------------------------------------------------------------------------- block structure


def test_basic_block_projection_rule():
    same = BasicBlock(8)
    same.build((8, 6, 6))
    assert list(same.children()) == ["conv1", "bn1", "conv2", "bn2"]
    assert same.output_shape == (8, 6, 6)
    strided = BasicBlock(8, stride=2)
    strided.build((8, 7, 7))
    assert list(strided.children()) == ["conv1", "bn1", "conv2", "bn2", "downsample"]
    assert strided.output_shape == (8, 4, 4)  # floor((7 + 2 - 3) / 2) + 1
    wider = BasicBlock(8)
    wider.build((4, 6, 6))
    assert "downsample" in wider.children()
    assert wider.state_dict()["downsample.0.weight"].shape == (8, 4, 1, 1)


def test_bottleneck_structure_and_count():
    block = Bottleneck(16, stride=2)
    block.build((32, 8, 8))
    assert list(block.children()) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample"]
    assert block.output_shape == (64, 4, 4)
    sd = block.state_dict()
    assert sd["conv1.weight"].shape == (16, 32, 1, 1)
    assert sd["conv2.weight"].shape == (16, 16, 3, 3)  # stride on the 3x3 (v1.5)
    assert sd["conv3.weight"].shape == (64, 16, 1, 1)
    # 512 + 32 + 2304 + 32 + 1024 + 128 + (2048 + 128) by hand
    assert block.count_params() == 512 + 32 + 2304 + 32 + 1024 + 128 + 2048 + 128
    identity = Bottleneck(16)
    identity.build((64, 8, 8))
    assert "downsample" not in identity.children()


def test_block_state_dict_matches_torch_block():
    for ours, kind, planes, cin, stride in [
        (BasicBlock(8, 2), ref.BasicBlock, 8, 4, 2),
        (Bottleneck(4), ref.Bottleneck, 4, 16, 1),
        (Bottleneck(4, 2), ref.Bottleneck, 4, 8, 2),
    ]:
        ours.build((cin, 8, 8))
        twin = ref.make_block(kind, cin, planes, stride)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: tuple(v.shape) for k, v in twin.state_dict().items()
        }


@settings(deadline=None, max_examples=15)
@given(
    kind=st.sampled_from([BasicBlock, Bottleneck]),
    planes=st.integers(1, 4),
    cin=st.integers(1, 8),
    stride=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
)
def test_block_shapes_random(kind, planes, cin, stride, h, w):
    block = kind(planes, stride=stride, seed=0)
    block.build((cin, h, w))
    out_c = planes * kind.expansion
    # 3x3 conv, padding 1, stride S (notes 3.4): (H - 3 + 2) // S + 1
    assert block.output_shape == (out_c, (h - 1) // stride + 1, (w - 1) // stride + 1)
    assert ("downsample" in block.children()) == (stride != 1 or cin != out_c)
    y = block(np.random.default_rng(0).normal(size=(2, cin, h, w)).astype(np.float32))
    assert y.shape == (2, *block.output_shape) and (y >= 0).all()  # ends with a ReLU
    assert block.backward(np.ones_like(y)).shape == (2, cin, h, w)


def test_block_config_round_trip():
    block = BasicBlock(8, stride=2, seed=3)
    block.build((4, 8, 8))
    spec = to_config(block)
    assert spec["class"] == "BasicBlock" and spec["config"]["planes"] == 8 and spec["config"]["stride"] == 2
    clone = from_config(spec)
    clone.build((4, 8, 8))
    for key, value in block.state_dict().items():
        np.testing.assert_array_equal(clone.state_dict()[key], value)  # same seed, same weights


def test_block_bad_arguments():
    with pytest.raises(ConfigError, match="planes"):
        BasicBlock(0)
    with pytest.raises(ConfigError, match="stride"):
        Bottleneck(4, stride=0)
    with pytest.raises(ShapeError):
        BasicBlock(4).build((4, 8))


def test_block_train_eval_and_astype_reach_the_shortcut():
    block = BasicBlock(4, stride=2)
    block.build((2, 6, 6))
    block.eval()
    assert not block["downsample"][1].training and not block["conv1"].training
    block.astype(np.float64)
    assert block.state_dict()["downsample.0.weight"].dtype == np.float64


# --------------------------------------------------------------------------- gradient checks (float64)


def test_gradcheck_small_sequential():
    model = Sequential(
        [Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4)], input_shape=(2, 6, 6), seed=0
    )
    assert gradcheck(model, _x((2, 2, 6, 6)))


def test_gradcheck_nested_sequential_with_names():
    model = Sequential(
        {"features": Sequential([Conv2D(2, 3), ReLU()]), "flatten": Flatten(), "fc": Dense(3)},
        input_shape=(1, 5, 5),
        seed=1,
    )
    assert [n for n, _, _ in model.named_parameters()] == [
        "features.0.weight",
        "features.0.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert gradcheck(model, _x((2, 1, 5, 5)))


def test_gradcheck_basic_block_with_projection():
    block = BasicBlock(4, stride=2, seed=0)
    block.build((3, 5, 5))
    assert "downsample" in block.children()
    assert gradcheck(block, _x((2, 3, 5, 5)))


def test_gradcheck_basic_block_identity():
    block = BasicBlock(3, seed=0)
    assert gradcheck(block, _x((2, 3, 4, 4)))


def test_gradcheck_bottleneck():
    block = Bottleneck(2, stride=2, seed=0)
    block.build((4, 5, 5))
    assert gradcheck(block, _x((2, 4, 5, 5)))


def test_gradcheck_bottleneck_identity():
    assert gradcheck(Bottleneck(2, seed=1), _x((2, 8, 3, 3)))


def test_gradcheck_batchnorm_model_in_training_mode():
    model = Sequential(
        [Conv2D(3, 3), BatchNorm2D(), ReLU(), Flatten(), Dense(2)], input_shape=(2, 5, 5), seed=2
    )
    model.eval()  # gradcheck switches its copy to training mode: batch statistics
    assert gradcheck(model, _x((3, 2, 5, 5)))


def test_gradcheck_dropout_model_with_fixed_mask():
    model = Sequential([Dense(8), ReLU(), Dropout(0.5), Dense(3)], input_shape=(6,), seed=3)
    assert gradcheck(model, _x((4, 6)))


def test_gradcheck_resnet_in_miniature():
    model = Sequential(
        {
            "conv1": Conv2D(4, 3, padding=1, use_bias=False),
            "bn1": BatchNorm2D(),
            "relu": ReLU(),
            "layer1": Sequential([BasicBlock(4), BasicBlock(6, stride=2)]),
            "flatten": Flatten(),
            "fc": Dense(3),
        },
        input_shape=(2, 4, 4),
        seed=4,
    )
    assert gradcheck(model, _x((2, 2, 4, 4)), max_elements_per_tensor=20)


class _BrokenDense(Dense):
    def backward(self, dy):
        return 2 * super().backward(dy)


class _BrokenBlock(BasicBlock):
    def backward(self, dy):
        masks, final = self._cache
        d = dy * final
        for _, layer, relu_after in reversed(self._main):
            if relu_after:
                d = d * masks[-1]
            d = layer.backward(d)
        return d  # forgets the shortcut's gradient


def test_gradcheck_catches_a_broken_layer_inside_a_model():
    model = Sequential([Dense(5), ReLU(), _BrokenDense(3)], input_shape=(4,), seed=0)
    with pytest.raises(GradcheckError, match="input x"):
        gradcheck(model, _x((2, 4)))


def test_gradcheck_catches_a_missing_shortcut_gradient():
    with pytest.raises(GradcheckError, match="input x"):
        gradcheck(_BrokenBlock(3, seed=0), _x((2, 3, 4, 4)))


# --------------------------------------------------------------------------- against torch.nn twins


def _randomise_bn(twin: nn.Module, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, m.num_features)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, m.num_features)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))


BLOCK_CASES = [
    ("basic-identity", BasicBlock, ref.BasicBlock, 6, 6, 1),
    ("basic-projection", BasicBlock, ref.BasicBlock, 8, 4, 2),
    ("bottleneck-identity", Bottleneck, ref.Bottleneck, 3, 12, 1),
    ("bottleneck-projection", Bottleneck, ref.Bottleneck, 4, 6, 2),
]


@pytest.mark.parametrize(("label", "ours_cls", "kind", "planes", "cin", "stride"), BLOCK_CASES)
def test_block_forward_and_gradients_equal_torch(label, ours_cls, kind, planes, cin, stride):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    twin = ref.make_block(kind, cin, planes, stride)
    _randomise_bn(twin, rng)
    ours = ours_cls(planes, stride=stride, seed=0)
    ours.build((cin, 7, 7))
    ours.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})

    x = rng.normal(size=(3, cin, 7, 7)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = twin(xt)  # training mode: batch statistics
    y = ours(x, training=True)
    scale = float(yt.detach().abs().max())
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5 * scale)

    dy = rng.normal(size=y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    dx = ours.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5 * float(xt.grad.abs().max()))
    grads = {name: owner.grads[key] for name, owner, key in ours.named_parameters()}
    torch_grads = {name: p.grad.numpy() for name, p in twin.named_parameters()}
    assert grads.keys() == torch_grads.keys()
    for name, expected in torch_grads.items():
        np.testing.assert_allclose(
            grads[name], expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()), err_msg=name
        )

    twin.eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x, training=False), expected, rtol=1e-4, atol=1e-5 * scale)
