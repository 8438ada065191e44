"""cnnkit.onnx.export: onnx.checker passes and onnxruntime gives what model.predict gives (1e-5, absolute).

Every zoo model at its default input size (the deep and the ImageNet-size ones in the slow tests), random
Sequentials that hypothesis draws from every layer, logits, folded preprocessing, metadata and errors.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnkit
from cnnkit import layers as L
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.models import BasicBlock, Bottleneck, Residual, Sequential, zoo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
cnnkit_onnx = pytest.importorskip("cnnkit.onnx")

TOL = 1e-5
FAST_ZOO = [
    "lenet5",
    "simple_cnn",
    "cats_dogs_cnn",
    "vgg11_small",
    "vgg11_bn_small",
    "resnet18_small",
    "resnet50_small",
]


def session(proto):
    onnx.checker.check_model(proto)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(proto, x: np.ndarray) -> np.ndarray:
    sess = session(proto)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def randomise_buffers(model, seed: int = 0):
    """Non-trivial batch-norm statistics (fresh ones make batch norm nearly the identity)."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if "running_var" in layer.buffers:
            n = layer.buffers["running_var"].shape
            layer.buffers["running_mean"][...] = rng.uniform(-0.5, 0.5, n)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 1.5, n)
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, n)
            layer.params["bias"][...] = rng.uniform(-0.5, 0.5, n)
    return model


def images(model, n: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape)).astype(np.float32)


def check_zoo(name: str) -> None:
    model = randomise_buffers(zoo.get(name, seed=0))
    proto = cnnkit_onnx.to_onnx(model)
    x = images(model, 2)
    got = run(proto, x)
    assert got.shape == (2, zoo.info(name).num_classes)
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", FAST_ZOO)
def test_zoo_model_matches_predict(name: str) -> None:
    check_zoo(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in zoo.names() if n not in FAST_ZOO])
def test_zoo_model_matches_predict_slow(name: str) -> None:
    check_zoo(name)


def test_dynamic_batch_and_metadata(tmp_path) -> None:
    model = zoo.get("lenet5", seed=0)
    model.class_names = [f"class {i}" for i in range(10)]
    path = tmp_path / "lenet.onnx"
    cnnkit_onnx.export(model, path)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == cnnkit_onnx.OPSET == 13
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == model.class_names
    assert props["cnnkit_version"] == cnnkit.__version__
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 5):
        x = images(model, n, seed=n)
        np.testing.assert_allclose(run(proto, x), model.predict(x), rtol=0, atol=TOL)
    # parameters are stored under their state-dict names
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) - {"num_batches_tracked"} <= names


def test_logits_drops_the_softmax_predict_adds() -> None:
    model = zoo.get("simple_cnn", seed=0)
    x = images(model)
    logits = run(cnnkit_onnx.to_onnx(model, logits=True), x)
    np.testing.assert_allclose(logits, model.forward(x, False), rtol=0, atol=1e-4)
    assert not np.allclose(logits.sum(axis=1), 1.0)


def test_a_final_softmax_layer_is_the_output_and_logits_leave_it_out() -> None:
    body = [L.Conv2D(4, 3), L.ReLU(), L.Flatten(), L.Dense(3)]
    model = Sequential([*body, L.Softmax()], input_shape=(2, 6, 6), seed=0)
    x = images(model, 3)
    proto = cnnkit_onnx.to_onnx(model)
    assert [n.op_type for n in proto.graph.node].count("Softmax") == 1
    np.testing.assert_allclose(run(proto, x), model.predict(x), rtol=0, atol=TOL)
    raw = run(cnnkit_onnx.to_onnx(model, logits=True), x)
    np.testing.assert_allclose(raw, _body(model, x), rtol=0, atol=1e-5)


def _body(model, x):
    for layer in list(model.children().values())[:-1]:
        x = layer.forward(x, False)
    return x


@pytest.mark.parametrize(
    "normalize",
    [
        {"mode": "unit", "mean": None, "std": None, "max_value": 255.0},
        {"mode": "symmetric", "mean": None, "std": None, "max_value": 255.0},
        {"mode": "standardize", "mean": [0.2, 0.5, 0.7], "std": [0.3, 0.25, 0.1], "max_value": 255.0},
    ],
)
def test_include_preprocessing_takes_pixels_in_0_1(normalize: dict) -> None:
    from cnnkit.data.transforms import Normalize

    model = zoo.get("simple_cnn", seed=0)
    model.metadata = {"preprocess": {"image_size": [32, 32], "color": "rgb", "normalize": normalize}}
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
    norm = Normalize(normalize["mode"], normalize["mean"], normalize["std"], normalize["max_value"])
    expected = model.predict(norm(pixels))
    proto = cnnkit_onnx.to_onnx(model, include_preprocessing=True)
    np.testing.assert_allclose(run(proto, pixels.astype(np.float32) / 255), expected, rtol=0, atol=TOL)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["preprocess"])["normalize"]["mode"] == normalize["mode"]


def test_include_preprocessing_without_metadata_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no saved preprocessing"):
        cnnkit_onnx.to_onnx(zoo.get("lenet5", seed=0), include_preprocessing=True)


def test_unbuilt_unsupported_and_non_classifier_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="not built"):
        cnnkit_onnx.to_onnx(Sequential([L.Flatten(), L.Dense(3)]))
    with pytest.raises(ShapeError, match="one score per class"):
        cnnkit_onnx.to_onnx(Sequential([L.Conv2D(2, 3)], input_shape=(1, 5, 5)))

    class Square(L.Layer):
        def forward(self, x, training):
            return x * x

    model = Sequential([L.Flatten(), Square(name="sq"), L.Dense(3), Square(name="sq2")], input_shape=(4,))
    with pytest.raises(ConfigError, match=r"2 layer\(s\): 1 \(Square\), 3 \(Square\)"):
        cnnkit_onnx.to_onnx(model)


def test_float64_models_export_as_float32() -> None:
    model = zoo.get("lenet5", seed=0, dtype=np.float64)
    x = images(model)
    np.testing.assert_allclose(run(cnnkit_onnx.to_onnx(model), x), model.predict(x), rtol=0, atol=TOL)


def test_cnnkit_onnx_imports_without_onnx_and_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import cnnkit, cnnkit.onnx\n"
        "m = cnnkit.models.get('lenet5', seed=0)\n"
        "try:\n    cnnkit.onnx.export(m, 'never.onnx')\n"
        "except cnnkit.CnnkitError as err:\n    print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "OnnxUnavailableError" in out and "pip install 'cnnkit[onnx]'" in out


# ------------------------------------------------------------------------------ random Sequentials
def _conv(draw, c: int):
    groups = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0]))
    kwargs = {}
    if "flip_kernel" in L.Conv2D.__init__.__code__.co_varnames:
        kwargs["flip_kernel"] = draw(st.booleans())
    return L.Conv2D(
        groups * draw(st.integers(1, 3)),
        draw(st.sampled_from([1, 2, 3, (1, 3)])),
        stride=draw(st.integers(1, 2)),
        padding=draw(st.sampled_from([0, 1, (1, 0), (0, 1, 1, 0), "valid"])),
        dilation=draw(st.integers(1, 2)),
        groups=groups,
        use_bias=draw(st.booleans()),
        **kwargs,
    )


@st.composite
def image_layer(draw, c: int):
    kind = draw(
        st.sampled_from(
            [
                "conv",
                "relu",
                "leaky",
                "max",
                "avg",
                "min",
                "bn",
                "drop",
                "softmax",
                "residual",
                "basic",
                "bottleneck",
            ]
        )
    )
    pool = {
        "pool_size": draw(st.integers(1, 3)),
        "stride": draw(st.integers(1, 2)),
        "dilation": draw(st.integers(1, 2)),
    }
    pool["padding"] = draw(st.integers(0, pool["pool_size"] // 2))
    if kind == "conv":
        return _conv(draw, c)
    if kind == "residual":
        branch = Sequential([L.Conv2D(c, 3, padding=1), L.BatchNorm2D(), L.LeakyReLU(0.1)])
        short = draw(st.sampled_from([None, "conv"]))
        return Residual(branch, None if short is None else Sequential([L.Conv2D(c, 1)]))
    return {
        "relu": lambda: L.ReLU(),
        "leaky": lambda: L.LeakyReLU(draw(st.sampled_from([0.01, 0.2]))),
        "max": lambda: L.MaxPool2D(**pool),
        "avg": lambda: L.AvgPool2D(**pool),
        "min": lambda: L.MinPool2D(**pool),
        "bn": lambda: L.BatchNorm2D(eps=draw(st.sampled_from([1e-5, 1e-3]))),
        "drop": lambda: L.Dropout(0.3),
        "softmax": lambda: L.Softmax(axis=1),
        "basic": lambda: BasicBlock(draw(st.integers(1, 4)), stride=draw(st.integers(1, 2))),
        "bottleneck": lambda: Bottleneck(draw(st.integers(1, 2)), stride=draw(st.integers(1, 2))),
    }[kind]()


@st.composite
def random_model(draw):
    shape = (draw(st.integers(1, 4)), draw(st.integers(5, 10)), draw(st.integers(5, 10)))
    model = Sequential(input_shape=None, seed=draw(st.integers(0, 99)))
    layers: list = []
    current = shape
    for _ in range(draw(st.integers(0, 5))):
        layer = draw(image_layer(current[0]))
        try:
            layer.build(current)
        except (ShapeError, ConfigError):
            continue
        layers.append(layer)
        current = layer.output_shape
    head = draw(st.sampled_from(["flatten", "global", "adaptive"]))
    if head == "global":
        layers.append(L.GlobalAvgPool2D())
    elif head == "adaptive":
        layers.append(L.AdaptiveAvgPool2D((draw(st.integers(1, 3)), draw(st.integers(1, 4)))))
    layers.append(L.Flatten())
    for _ in range(draw(st.integers(0, 2))):
        layers.append(draw(st.sampled_from([L.Dense(5), L.BatchNorm1D(), L.Dropout(0.5), L.LeakyReLU(0.05)])))
    layers.append(L.Dense(draw(st.integers(2, 4))))
    if draw(st.booleans()):
        layers.append(L.Softmax(axis=draw(st.sampled_from([1, -1]))))
    for layer in layers:
        model.add(layer)
    model.build(shape)
    return randomise_buffers(model, seed=draw(st.integers(0, 99)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_model(), logits=st.booleans(), n=st.integers(1, 3))
def test_random_sequentials_match_predict(model: Sequential, logits: bool, n: int) -> None:
    x = images(model, n, seed=n)
    proto = cnnkit_onnx.to_onnx(model, logits=logits)
    got = run(proto, x)
    if logits:
        expected = _body(model, x) if model[-1].registry_name == "Softmax" else model.forward(x, False)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=TOL)


def test_min_and_dilated_average_pooling_use_the_documented_ops() -> None:
    model = Sequential(
        [L.MinPool2D(2), L.AvgPool2D(3, stride=1, dilation=2, padding=1), L.Flatten(), L.Dense(2)],
        input_shape=(2, 12, 12),
        seed=0,
    )
    proto = cnnkit_onnx.to_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:4] == ["Neg", "MaxPool", "Neg", "Conv"]
    x = images(model)
    np.testing.assert_allclose(run(proto, x), model.predict(x), rtol=0, atol=TOL)


class TrueConv2D(L.Conv2D):
    """A convolution with ``flip_kernel`` (notes §3.2's true convolution) through :func:`cnnkit.ops.conv2d`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flip_kernel = True

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        from cnnkit.ops.conv import conv2d

        w, b = self.params["weight"], self.params.get("bias")
        return conv2d(x, w, b, self.stride, self._pad4, self.dilation, self.groups, flip_kernel=True)


def test_flip_kernel_convolutions_export_their_weights_turned() -> None:
    model = Sequential(
        [TrueConv2D(4, (2, 3), padding=(0, 1, 1, 0), dilation=(2, 1)), L.ReLU(), L.Flatten(), L.Dense(3)],
        input_shape=(2, 7, 6),
        seed=0,
    )
    x = images(model)
    proto = cnnkit_onnx.to_onnx(model)
    np.testing.assert_allclose(run(proto, x), model.predict(x), rtol=0, atol=TOL)
    weight = next(t for t in proto.graph.initializer if t.name == "0.weight")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(weight), model[0].params["weight"][:, :, ::-1, ::-1]
    )


class ConvThenLeaky(L.Layer):
    """A container of the user's own with no converter: the exporter walks its ``children()`` in order."""

    def __init__(self, filters: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = {"conv": L.Conv2D(filters, 3, padding=1), "act": L.LeakyReLU(0.3)}

    def children(self):
        return self.parts

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for part in self.parts.values():
            part.build(shape)
            shape = part.output_shape
        self.input_shape, self.output_shape, self.built = tuple(input_shape), shape, True

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        for part in self.parts.values():
            x = part.forward(x, training)
        return x


def test_containers_without_a_converter_are_walked_through_their_children() -> None:
    model = Sequential(
        [ConvThenLeaky(3), L.GlobalAvgPool2D(), L.Flatten(), L.Dense(2)], input_shape=(2, 5, 5)
    )
    proto = cnnkit_onnx.to_onnx(model)
    assert [n.op_type for n in proto.graph.node][:2] == ["Conv", "LeakyRelu"]
    assert "0.conv.weight" in {t.name for t in proto.graph.initializer}
    x = images(model)
    np.testing.assert_allclose(run(proto, x), model.predict(x), rtol=0, atol=TOL)


def test_fused_blocks_export_as_their_layers_with_fusion_on_or_off() -> None:
    model = zoo.get("simple_cnn", seed=0)
    assert type(model.children()["0"]).__name__ == "ConvReLUMaxPool2D"
    fused = cnnkit_onnx.to_onnx(model)
    model.set_fusion(False)
    plain = cnnkit_onnx.to_onnx(model)
    assert [(n.op_type, n.name) for n in fused.graph.node] == [(n.op_type, n.name) for n in plain.graph.node]
    assert [n.name for n in fused.graph.node[:4]] == ["0/Conv", "1/Relu", "2/MaxPool", "3/Conv"]
    x = images(model)
    np.testing.assert_allclose(run(fused, x), model.predict(x), rtol=0, atol=TOL)
