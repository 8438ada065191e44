"""Pooling, activation, dense, flatten, dropout and batch-norm layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnkit.errors import ConfigError, ShapeError, TrainingError
from cnnkit.layers import (
    AdaptiveAvgPool2D,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    MinPool2D,
    ReLU,
    Softmax,
)
from cnnkit.layers.base import from_config, layer_class, to_config
from cnnkit.models.sequential import Sequential
from cnnkit.ops import (
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    global_avg_pool2d,
    leaky_relu,
    linear,
    max_pool2d,
    min_pool2d,
    relu,
    softmax,
)

IMAGE = (3, 9, 8)  # per-sample (C, H, W)


def image_batch(n=4, shape=IMAGE, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


# layer factory, per-sample input shape, matching op (on a batch)
CASES = {
    "max": (lambda: MaxPool2D(2), IMAGE, lambda x: max_pool2d(x, 2)),
    "max3": (lambda: MaxPool2D(3, 2, 1, (1, 2)), IMAGE, lambda x: max_pool2d(x, 3, 2, 1, (1, 2))),
    "avg": (lambda: AvgPool2D((2, 3), 1, (1, 0)), IMAGE, lambda x: avg_pool2d(x, (2, 3), 1, (1, 0))),
    "min": (lambda: MinPool2D(2, 1), IMAGE, lambda x: min_pool2d(x, 2, 1)),
    "gap": (GlobalAvgPool2D, IMAGE, global_avg_pool2d),
    "adaptive": (lambda: AdaptiveAvgPool2D((4, 3)), IMAGE, lambda x: adaptive_avg_pool2d(x, (4, 3))),
    "relu": (ReLU, IMAGE, relu),
    "leaky": (lambda: LeakyReLU(0.2), IMAGE, lambda x: leaky_relu(x, 0.2)),
    "softmax": (Softmax, (7,), softmax),
    "softmax_c": (lambda: Softmax(axis=-1), IMAGE, lambda x: softmax(x, -1)),
    "flatten": (Flatten, IMAGE, lambda x: x.reshape(len(x), -1)),
    "dropout_eval": (lambda: Dropout(0.5).eval(), IMAGE, lambda x: x),
}


# ----------------------------------------------------------------------------- build, shapes, ops
@pytest.mark.parametrize("key", sorted(CASES))
def test_layer_lazy_build_shapes_and_equality_with_op(key):
    make, shape, op = CASES[key]
    layer = make()
    assert not layer.built
    x = image_batch(shape=shape)
    y = layer(x)
    assert layer.built and layer.input_shape == shape
    assert y.shape == (len(x), *layer.output_shape)
    assert layer.compute_output_shape(shape) == layer.output_shape
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, op(x))
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert layer.grads == {} and layer.params == {} and layer.count_params() == 0


@pytest.mark.parametrize("key", sorted(CASES))
def test_layer_float64_and_config_round_trip(key):
    make, shape, op = CASES[key]
    layer = make()
    config = to_config(layer)
    json.dumps(config)  # JSON-able
    clone = from_config(json.loads(json.dumps(config)))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    assert layer_class(type(layer).__name__) is type(layer)
    layer64 = from_config({"class": config["class"], "config": {**config["config"], "dtype": "float64"}})
    layer64.training = layer.training
    x = image_batch(shape=shape, dtype=np.float64)
    y = layer64(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, op(x), rtol=1e-12)
    assert layer64.backward(np.ones_like(y)).dtype == np.float64


def test_pool_layers_known_sizes_and_bad_config():
    # notes §5.3 / §9: 2x2 max pool halves the size; exercise 1.3: 14 -> 7; odd sizes round down
    assert MaxPool2D(2).compute_output_shape((32, 32, 32)) == (32, 16, 16)
    assert MaxPool2D(2).compute_output_shape((64, 14, 14)) == (64, 7, 7)
    assert MaxPool2D(2).compute_output_shape((8, 7, 9)) == (8, 3, 4)
    assert MaxPool2D(3, 2, 1).compute_output_shape((64, 112, 112)) == (64, 56, 56)  # ResNet stem
    assert AdaptiveAvgPool2D(7).compute_output_shape((512, 1, 1)) == (512, 7, 7)
    assert GlobalAvgPool2D().compute_output_shape((512, 7, 7)) == (512, 1, 1)
    assert MaxPool2D(2).get_config() == {
        "name": "max_pool2d",
        "pool_size": 2,
        "stride": 2,
        "padding": 0,
        "dilation": 1,
    }
    with pytest.raises(ConfigError, match=r"^max_pool2d: pool_size must be >= 1, got 0"):
        MaxPool2D(0)
    with pytest.raises(ConfigError, match=r"^pool: padding must be at most half the kernel"):
        AvgPool2D(2, padding=2, name="pool")
    with pytest.raises(
        ShapeError, match=r"^max_pool2d: expected a per-sample input of shape \(C, H, W\), got \(10,\)"
    ):
        MaxPool2D(2).build((10,))
    with pytest.raises(ShapeError, match=r"^max_pool2d: input of spatial size \(1, 1\) is too small"):
        MaxPool2D(2)(np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(ConfigError, match="reads only padding"):
        MinPool2D(2, 1, 1, 3).build((1, 2, 2))
    with pytest.raises(ConfigError, match=r"^adaptive_avg_pool2d: output_size must be >= 1"):
        AdaptiveAvgPool2D(0)
    with pytest.raises(ShapeError, match=r"^global_avg_pool2d: expected a per-sample input of shape"):
        GlobalAvgPool2D().build((4, 4))


def test_activation_layers_bad_config():
    with pytest.raises(ConfigError, match=r"^leaky_relu: .*negative_slope"):
        LeakyReLU("x")
    with pytest.raises(ConfigError, match=r"^softmax: axis must be an int, got 'a'"):
        Softmax("a")
    with pytest.raises(ShapeError, match=r"^softmax: axis must be in \[-2, 2\) .* \(N, 10\), got 3"):
        Softmax(3).build((10,))


@pytest.mark.parametrize(
    "layer", [ReLU(), MaxPool2D(2), Dense(3), Flatten(), Dropout(0.5), BatchNorm1D(), Softmax()]
)
def test_backward_before_forward(layer):
    with pytest.raises(TrainingError, match=f"^{layer.name}: backward called before forward"):
        layer.backward(np.zeros((1, 3), np.float32))


# ----------------------------------------------------------------------------- Dense
def test_dense_build_init_and_gradients():
    layer = Dense(64, seed=3)
    y = layer(image_batch(shape=(100,)))
    w, b = layer.params["weight"], layer.params["bias"]
    assert w.shape == (64, 100) and b.shape == (64,) and w.dtype == np.float32
    bound = 1 / np.sqrt(100)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01  # uniform on [-bound, bound]
    assert abs(w.mean()) < 0.01
    assert layer.count_params() == 100 * 64 + 64 and layer.macs() == 100 * 64
    # the same seed gives the same weights
    again = Dense(64, seed=3)
    again.build((100,))
    np.testing.assert_array_equal(again.params["weight"], w)
    # forward and backward equal the op's
    x = image_batch(shape=(100,), seed=1)
    y = layer(x)
    np.testing.assert_allclose(y, linear(x, w, b), rtol=1e-6)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.grads["weight"], dy.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.grads["bias"], dy.sum(0), rtol=1e-5, atol=1e-6)
    # no bias
    nb = Dense(5, use_bias=False, seed=0)
    nb(x)
    assert set(nb.params) == {"weight"}
    nb.backward(np.ones((len(x), 5), np.float32))
    assert set(nb.grads) == {"weight"}
    assert to_config(nb) == {
        "class": "Dense",
        "config": {"name": "dense", "seed": 0, "units": 5, "use_bias": False},
    }


def test_dense_bad_input_tells_to_flatten():
    with pytest.raises(
        ShapeError, match=r"^dense: .*\(features,\) \(add Flatten\(\) before this layer\), got \(64, 8, 8\)"
    ):
        Dense(10).build((64, 8, 8))
    with pytest.raises(ConfigError, match=r"^dense: units must be an int >= 1, got 0"):
        Dense(0)
    layer = Dense(4)
    layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match=r"^dense: expected input of shape \(N, 3\), got \(2, 5\)"):
        layer(np.zeros((2, 5), np.float32))


def test_dense_matches_torch_linear():
    import torch

    layer = Dense(7, seed=0)
    x = image_batch(shape=(12,))
    y = layer(x)
    ref = torch.nn.Linear(12, 7)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.params["weight"]))
        ref.bias.copy_(torch.tensor(layer.params["bias"]))
    np.testing.assert_allclose(y, ref(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Dropout
def test_dropout_train_eval_and_reproducibility():
    x = np.ones((64, 32), np.float32)
    layer = Dropout(0.5, seed=11)
    first = layer(x, training=True)
    second = layer(x, training=True)
    assert not np.array_equal(first, second)  # successive batches get different masks
    assert set(np.unique(first).tolist()) == {0.0, 2.0}
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), second)  # same mask as the last forward
    # the same seed reproduces the whole run
    replay = Dropout(0.5, seed=11)
    np.testing.assert_array_equal(replay(x, training=True), first)
    np.testing.assert_array_equal(replay(x, training=True), second)
    # inference: identity, gradient passes unchanged
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * x)
    assert Dropout(0.25).get_config() == {"name": "dropout", "rate": 0.25}


def test_dropout_rng_state_resumes_the_same_masks():
    x = np.ones((8, 16), np.float32)
    layer = Dropout(0.3, seed=5)
    layer(x, training=True)
    state = json.loads(json.dumps(layer.rng_state()))  # JSON round trip, as a checkpoint stores it
    expected = layer(x, training=True)
    resumed = Dropout(0.3, seed=99)
    resumed.build((16,))
    resumed.set_rng_state(state)
    np.testing.assert_array_equal(resumed(x, training=True), expected)
    assert Dropout(0.3).rng_state() is None  # not built yet
    with pytest.raises(ConfigError, match="^dropout: rng state must be a"):
        resumed.set_rng_state({"bit_generator": "MT19937"})


def test_dropout_bad_rate():
    for rate in (1.0, -0.5, "0.1"):
        with pytest.raises(ConfigError, match=r"^dropout: rate must be a number in \[0, 1\)"):
            Dropout(rate)


def test_dropout_unseeded_uses_global_seed():
    import cnnkit

    x = np.ones((4, 10), np.float32)
    cnnkit.set_seed(1)
    a = Dropout(0.5)(x, training=True)
    cnnkit.set_seed(1)
    b = Dropout(0.5)(x, training=True)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- BatchNorm
def test_batch_norm_2d_parameters_buffers_and_modes():
    bn = BatchNorm2D(momentum=0.2)
    x = image_batch(8, (4, 5, 5)) * 3 + 1
    bn.build((4, 5, 5))
    assert set(bn.params) == {"weight", "bias"} and set(bn.buffers) == {
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }
    np.testing.assert_array_equal(bn.params["weight"], np.ones(4))
    np.testing.assert_array_equal(bn.buffers["running_var"], np.ones(4))
    nbt = bn.buffers["num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == () and int(nbt) == 0
    assert bn.count_params() == 8

    y = bn(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    m = 8 * 5 * 5
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.2 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(
        bn.buffers["running_var"], 0.8 + 0.2 * x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-5
    )
    assert int(bn.buffers["num_batches_tracked"]) == 1 and bn.buffers["num_batches_tracked"] is nbt

    # inference: running statistics used, nothing moves
    before = {k: v.copy() for k, v in bn.buffers.items()}
    bn.eval()
    y_eval = bn(x)
    for key, value in bn.buffers.items():
        np.testing.assert_array_equal(value, before[key])
    expected = batch_norm(
        x,
        bn.params["weight"],
        bn.params["bias"],
        before["running_mean"].copy(),
        before["running_var"].copy(),
        False,
    )
    np.testing.assert_allclose(y_eval, expected, rtol=1e-6)
    dy = np.ones_like(y_eval)
    dx = bn.backward(dy)
    np.testing.assert_allclose(dx, dy / np.sqrt(before["running_var"] + 1e-5)[None, :, None, None], rtol=1e-5)
    assert set(bn.grads) == {"weight", "bias"}

    # training backward sets gradients
    bn.train()
    y = bn(x)
    bn.backward(np.ones_like(y))
    np.testing.assert_allclose(bn.grads["bias"], np.full(4, m), rtol=1e-6)
    assert int(bn.buffers["num_batches_tracked"]) == 2


def test_batch_norm_state_dict_names_and_float64():
    model = Sequential(
        [BatchNorm2D(), Flatten(), Dense(3), BatchNorm1D(eps=1e-3)], input_shape=(2, 3, 3), seed=0
    )
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "3.weight",
        "3.bias",
        "0.running_mean",
        "0.running_var",
        "0.num_batches_tracked",
        "3.running_mean",
        "3.running_var",
        "3.num_batches_tracked",
    ]
    model.astype(np.float64)
    assert model[0].buffers["running_mean"].dtype == np.float64
    assert model[0].buffers["num_batches_tracked"].dtype == np.int64
    y = model(np.random.default_rng(0).standard_normal((5, 2, 3, 3)), training=True)
    assert y.dtype == np.float64 and int(model[3].buffers["num_batches_tracked"]) == 1
    config = model[3].get_config()
    assert {k: config[k] for k in ("name", "momentum", "eps", "dtype")} == {
        "name": "batch_norm1d",
        "momentum": 0.1,
        "eps": 0.001,
        "dtype": "float64",
    }


def test_batch_norm_bad_input():
    with pytest.raises(
        ShapeError, match=r"^batch_norm2d: .*\(C, H, W\) \(use BatchNorm1D for this input\), got \(10,\)"
    ):
        BatchNorm2D().build((10,))
    with pytest.raises(
        ShapeError, match=r"^batch_norm1d: .*\(features,\) \(use BatchNorm2D for this input\)"
    ):
        BatchNorm1D().build((3, 4, 4))
    with pytest.raises(ConfigError, match=r"^batch_norm2d: momentum must be a number in \[0, 1\], got 2"):
        BatchNorm2D(momentum=2)
    with pytest.raises(ConfigError, match=r"^batch_norm2d: eps must be a number in \(0, 1\], got 0"):
        BatchNorm2D(eps=0)
    with pytest.raises(ShapeError, match=r"^batch_norm1d: batch_norm: training needs more than 1 value"):
        BatchNorm1D()(np.zeros((1, 4), np.float32), training=True)


def test_batch_norm_matches_torch_module_over_steps():
    import torch

    bn = BatchNorm2D(momentum=0.3)
    ref = torch.nn.BatchNorm2d(3, momentum=0.3)
    rng = np.random.default_rng(4)
    for step in range(3):
        x = (rng.standard_normal((4, 3, 5, 5)) * (step + 1) + step).astype(np.float32)
        np.testing.assert_allclose(
            bn(x, training=True), ref.train()(torch.tensor(x)).detach().numpy(), atol=1e-5
        )
    for name, value in ref.state_dict().items():
        np.testing.assert_allclose(bn.buffers.get(name, bn.params.get(name)), value.numpy(), rtol=1e-5)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(bn(x, training=False), ref.eval()(torch.tensor(x)).detach().numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- a whole stack
def test_sequential_of_these_layers_gradient_check():
    """Backward through pool, norm, activations, flatten and dense layers against finite differences."""
    model = Sequential(
        [
            BatchNorm2D(),
            LeakyReLU(0.1),
            MaxPool2D(2),
            AvgPool2D(2, 1),
            MinPool2D(1),
            AdaptiveAvgPool2D(3),
            Flatten(),
            Dropout(0.5),
            Dense(4),
            ReLU(),
            Dense(3),
            Softmax(),
        ],
        input_shape=(2, 8, 8),
        seed=0,
        dtype=np.float64,
    )
    assert model.output_shape == (3,)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 8))
    dy = rng.standard_normal((3, 3))
    model.eval()  # dropout off, batch norm on running statistics: a fixed function of x
    model(x)
    dx = model.backward(dy)

    def loss(v):
        return float(np.sum(model(v) * dy))

    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 1, 3, 4), (2, 0, 7, 7), (2, 1, 5, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        assert dx[idx] == pytest.approx((loss(xp) - loss(xm)) / (2 * eps), rel=1e-5, abs=1e-9)
    model(x)
    model.backward(dy)
    grad = model[8].grads["weight"].copy()
    w = model[8].params["weight"]
    for idx in [(0, 0), (3, 17)]:
        old = w[idx]
        w[idx] = old + eps
        plus = loss(x)
        w[idx] = old - eps
        minus = loss(x)
        w[idx] = old
        assert grad[idx] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)
    # rebuilt from its config, the model has the same architecture
    clone = Sequential.from_config(json.loads(json.dumps(model.get_config())))
    assert [type(c) for c in clone.layers.values()] == [type(c) for c in model.layers.values()]
    assert clone.output_shape == (3,)
