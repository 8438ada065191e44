"""cnnkit.layers.Conv2D: build, initialisation, forward/backward through the op, config, errors."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.layers.conv
import cnnkit.ops.conv
from cnnkit.errors import ConfigError, DTypeError, ShapeError, TrainingError
from cnnkit.layers import Conv2D
from cnnkit.layers.base import from_config, to_config
from cnnkit.ops import conv2d, conv2d_backward, conv2d_forward


def test_docstring_examples_run():
    for module in (cnnkit.layers.conv, cnnkit.ops.conv):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_lazy_build_and_parameter_shapes():
    layer = Conv2D(8, (3, 5), padding=(1, 2), groups=2, seed=0)
    assert not layer.built and layer.params == {}
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 10)).astype(np.float32)
    out = layer(x)
    assert layer.built and layer.input_shape == (6, 9, 10)
    assert layer.params["weight"].shape == (8, 3, 3, 5)  # (F, C/groups, KH, KW)
    assert layer.params["bias"].shape == (8,)
    assert layer.params["weight"].dtype == np.float32
    assert out.shape == (2, 8, 9, 10) and layer.output_shape == (8, 9, 10)
    assert layer.compute_output_shape((6, 9, 10)) == (8, 9, 10)
    assert Conv2D(4, 3, use_bias=False, seed=0).__call__(x).shape == (2, 4, 7, 8)


def test_build_from_declared_shape_and_macs():
    layer = Conv2D(64, 3, padding=1, seed=1)
    layer.build((32, 16, 16))  # notes §5 layer 3: 16x16x32 -> 16x16x64
    assert layer.output_shape == (64, 16, 16)
    assert layer.macs() == 16 * 16 * 64 * 32 * 3 * 3
    assert layer.count_params() == 64 * 32 * 9 + 64
    grouped = Conv2D(8, 3, stride=2, groups=4, seed=1)
    grouped.build((8, 9, 9))
    assert grouped.output_shape == (8, 4, 4)
    assert grouped.macs() == 4 * 4 * 8 * (8 // 4) * 3 * 3
    assert Conv2D(8, 3).macs() == 0  # not built yet


@pytest.mark.parametrize(("channels", "groups", "kernel"), [(3, 1, 3), (8, 2, (1, 5)), (4, 4, 2)])
def test_pytorch_default_initialisation(channels, groups, kernel):
    layer = Conv2D(16, kernel, groups=groups, seed=7)
    layer.build((channels, 8, 8))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    bound = 1.0 / np.sqrt(channels / groups * kh * kw)
    for key in ("weight", "bias"):
        values = layer.params[key]
        assert np.abs(values).max() <= bound
        # uniform on [-bound, bound]: spread over most of the interval, centred near zero
        assert np.abs(values).max() > 0.6 * bound
    w = layer.params["weight"]
    assert abs(w.mean()) < 0.25 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.35)
    # the same seed gives the same weights; another seed different ones
    again = Conv2D(16, kernel, groups=groups, seed=7)
    again.build((channels, 8, 8))
    np.testing.assert_array_equal(again.params["weight"], w)
    other = Conv2D(16, kernel, groups=groups, seed=8)
    other.build((channels, 8, 8))
    assert not np.array_equal(other.params["weight"], w)


@settings(max_examples=20, deadline=None)
@given(
    c=st.integers(1, 4),
    f_mult=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    kernel=st.sampled_from([1, 2, 3, (2, 3)]),
    stride=st.sampled_from([1, 2, (2, 1)]),
    padding=st.sampled_from([0, 1, (0, 2), "same", "valid"]),
    dilation=st.sampled_from([1, 2]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_forward_and_backward_equal_the_op(c, f_mult, groups, kernel, stride, padding, dilation, dtype, seed):
    if padding == "same":
        stride = 1
    layer = Conv2D(
        f_mult * groups,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        seed=seed,
        dtype=dtype,
    )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c * groups, 7, 6)).astype(dtype)
    out = layer(x)
    w, b = layer.params["weight"], layer.params["bias"]
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected, cache = conv2d_forward(x, w, b, **kwargs)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    dy = rng.standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dy)
    edx, edw, edb = conv2d_backward(dy, cache)
    np.testing.assert_array_equal(dx, edx)
    np.testing.assert_array_equal(layer.grads["weight"], edw)
    np.testing.assert_array_equal(layer.grads["bias"], edb)
    assert layer.grads["weight"].shape == w.shape and layer.grads["weight"].dtype == dtype


def test_backward_sets_rather_than_accumulates_and_no_bias_has_no_bias_grad():
    layer = Conv2D(3, 2, use_bias=False, seed=0)
    x = np.ones((1, 2, 4, 4), np.float32)
    out = layer(x)
    layer.backward(np.ones_like(out))
    first = layer.grads["weight"].copy()
    layer(x)
    layer.backward(np.ones_like(out))
    np.testing.assert_array_equal(layer.grads["weight"], first)
    assert "bias" not in layer.params and "bias" not in layer.grads
    np.testing.assert_array_equal(first, np.full((3, 2, 2, 2), 9.0))  # 3x3 positions of ones


def test_float64_layer():
    layer = Conv2D(4, 3, padding="same", seed=3, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 5))
    out = layer(x)
    assert out.dtype == np.float64 and layer.params["weight"].dtype == np.float64
    np.testing.assert_allclose(
        out, conv2d(x, layer.params["weight"], layer.params["bias"], padding=1), rtol=1e-14
    )
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == np.float64 and layer.grads["bias"].dtype == np.float64
    np.testing.assert_allclose(layer.grads["bias"], np.full(4, 2 * 5 * 5.0))


def test_get_config_round_trip():
    layer = Conv2D(6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=2, groups=3, use_bias=False, seed=5)
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON-able
    for key in ("filters", "kernel_size", "stride", "padding", "dilation", "groups", "use_bias"):
        assert key in config
    clone = Conv2D.from_config(config)
    assert clone.get_config() == config
    assert from_config(to_config(layer)).get_config() == config
    # the clone builds the same weights (same seed) and computes the same thing
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), clone(x))
    for padding in ("same", "valid", 2, (0, 1, 2, 3)):
        cfg = Conv2D(2, 3, padding=padding, dtype=np.float64, name="c").get_config()
        assert Conv2D.from_config(json.loads(json.dumps(cfg))).get_config() == cfg
        assert cfg["dtype"] == "float64" and cfg["name"] == "c"


def test_wrong_channel_count_after_build():
    layer = Conv2D(4, 3, name="conv2d_1", seed=0)
    layer(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(
        ShapeError, match=r"^conv2d_1: expected input of shape \(N, 3, 8, 8\).*\(1, 4, 8, 8\)"
    ):
        layer(np.zeros((1, 4, 8, 8), np.float32))


def test_build_errors_name_the_layer():
    with pytest.raises(
        ShapeError, match=r"^conv2d: expected a per-sample input of shape \(C, H, W\), got \(8, 8\)"
    ):
        Conv2D(4, 3)(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"^small: kernel \(5, 5\).*does not fit.*\(1, 3, 3\).*\(-1, -1\)"):
        Conv2D(4, 5, name="small").build((1, 3, 3))
    with pytest.raises(ShapeError, match=r"^g: groups=2 must divide the input channels, got C=3"):
        Conv2D(4, 3, groups=2, name="g").build((3, 8, 8))
    with pytest.raises(DTypeError, match=r"^conv2d: input must be float32 or float64, got int64"):
        Conv2D(4, 3)(np.zeros((1, 1, 4, 4), np.int64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(filters=0, kernel_size=3), r"^conv2d: filters must be an int >= 1, got 0"),
        (dict(filters=4, kernel_size=0), r"^conv2d: kernel_size must be >= 1"),
        (dict(filters=4, kernel_size=3, stride=(1, 0)), r"^conv2d: stride must be >= 1"),
        (dict(filters=4, kernel_size=3, padding="full"), r"^conv2d: padding must be an int"),
        (dict(filters=4, kernel_size=3, padding=-1), r"^conv2d: padding must be >= 0"),
        (dict(filters=4, kernel_size=3, padding="same", stride=2), r"needs stride 1"),
        (dict(filters=4, kernel_size=3, groups=3), r"^conv2d: groups=3 must divide filters=4"),
        (dict(filters=4, kernel_size=3, groups=0), r"^conv2d: groups must be an int >= 1"),
        (dict(filters=4, kernel_size=3, name="c9", dilation=0), r"^c9: dilation must be >= 1"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Conv2D(**kwargs)


def test_backward_before_forward():
    layer = Conv2D(2, 1)
    layer.build((1, 2, 2))
    with pytest.raises(TrainingError, match="conv2d: backward called before forward"):
        layer.backward(np.zeros((1, 2, 2, 2), np.float32))
