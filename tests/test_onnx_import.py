"""cnnkit.onnx.load: PyTorch graphs (torch.onnx.export) and cnnkit's own exports become cnnkit models.

PyTorch twins of lenet5, simple_cnn, resnet18_small and vgg11_bn_small are exported with
``torch.onnx.export`` (TorchScript path, ``dynamo=False``: no network, no extra packages), with batch
norm folded into the convolutions (the default) and kept (``TrainingMode.PRESERVE``); the loaded model
predicts what PyTorch predicts within 1e-5. Bad files give clear errors.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import ConfigError, FileFormatError
from cnnkit.models import Residual, zoo

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
cnnkit_onnx = pytest.importorskip("cnnkit.onnx")
R = pytest.importorskip("torch_zoo_reference")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = 1e-5

TWINS = {
    "lenet5": (lambda: R.lenet5(), (1, 32, 32)),
    "simple_cnn": (lambda: R.simple_cnn(), (3, 32, 32)),
    "resnet18_small": (lambda: R.ResNet("resnet18", num_classes=10, small=True), (3, 32, 32)),
    "vgg11_bn_small": (lambda: R.VGGSmall("vgg11", True), (3, 32, 32)),
}


def torch_export(module, shape, path: Path, **kwargs) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.zeros(1, *shape),
            str(path),
            input_names=["x"],
            output_names=["scores"],
            dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}},
            dynamo=False,
            **kwargs,
        )


def twin(name: str):
    torch.manual_seed(0)
    factory, shape = TWINS[name]
    return R.randomise_batch_norm(factory()).eval(), shape


@pytest.mark.parametrize("name", list(TWINS))
@pytest.mark.parametrize("fold", [True, False], ids=["bn-folded", "bn-kept"])
def test_pytorch_twin_loads_and_predicts_what_pytorch_predicts(name: str, fold: bool, tmp_path: Path) -> None:
    module, shape = twin(name)
    path = tmp_path / f"{name}.onnx"
    extra = {} if fold else {"training": torch.onnx.TrainingMode.PRESERVE}
    torch_export(module, shape, path, opset_version=13 if fold else 17, **extra)
    model = cnnkit_onnx.load(path)
    assert model.input_shape == shape
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=TOL)
    if name == "resnet18_small":
        assert sum(isinstance(layer, Residual) for _, layer in model.named_layers()) == 8


@pytest.mark.parametrize("name", ["lenet5", "vgg11_bn_small", "resnet18_small"])
def test_cnnkit_export_round_trips(name: str, tmp_path: Path) -> None:
    from test_onnx_export import randomise_buffers

    model = randomise_buffers(zoo.get(name, seed=0))
    model.class_names = [f"c{i}" for i in range(10)]
    path = tmp_path / "m.onnx"
    cnnkit_onnx.export(model, path)
    back = cnnkit_onnx.load(path)
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert back.class_names == model.class_names
    # the same parameter arrays, in the same order
    ours = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in back.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    if name != "resnet18_small":  # same layers with the same settings, names aside
        assert _leaves(back) == _leaves(model)


def _leaves(model) -> list:
    """(class, config without name and seed) of every leaf layer, in order."""
    out = []
    for _, layer in model.named_layers():
        if not layer.children():
            config = {k: v for k, v in layer.get_config().items() if k not in ("name", "seed")}
            out.append((type(layer).__name__, config))
    return out


def _graph(nodes, inits=(), opset: int = 13, shape=(1, 4)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _dense_graph(opset: int = 13):
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "fc.weight")
    b = numpy_helper.from_array(np.ones(3, np.float32), "fc.bias")
    return _graph(
        [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["y"], transB=1, name="fc")], [w, b], opset
    )


def test_a_small_handmade_graph_loads(tmp_path: Path) -> None:
    path = tmp_path / "d.onnx"
    onnx.save(_dense_graph(), str(path))
    model = cnnkit_onnx.load(path)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        model.forward(x, False), x @ (np.arange(12).reshape(3, 4) / 10).T + 1, atol=1e-6
    )


def test_unsupported_ops_are_listed_with_their_nodes(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["a"], name="gate"),
        helper.make_node("Tanh", ["a"], ["b"], name="squash"),
        helper.make_node("Sigmoid", ["b"], ["y"], name="gate2"),
    ]
    path = tmp_path / "u.onnx"
    onnx.save(_graph(nodes), str(path))
    with pytest.raises(ConfigError, match=r"Sigmoid \(gate, gate2\); Tanh \(squash\)"):
        cnnkit_onnx.load(path)


def test_truncated_empty_and_foreign_files(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    onnx.save(_dense_graph(), str(good))
    data = good.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.onnx"):
        cnnkit_onnx.load(cut)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        cnnkit_onnx.load(empty)
    text = tmp_path / "text.onnx"
    text.write_text("hello, this is not protobuf at all\n" * 3)
    with pytest.raises(FileFormatError, match="text.onnx"):
        cnnkit_onnx.load(text)
    with pytest.raises(FileFormatError, match="no such file"):
        cnnkit_onnx.load(tmp_path / "missing.onnx")


@pytest.mark.parametrize("opset", [7, 30])
def test_wrong_opset(opset: int, tmp_path: Path) -> None:
    path = tmp_path / "o.onnx"
    onnx.save(_dense_graph(opset), str(path))
    with pytest.raises(FileFormatError, match=f"opset {opset}; cnnkit reads opsets 9 to 21"):
        cnnkit_onnx.load(path)


def _external(location: str, length: int = 48):
    model = _dense_graph()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    folder = tmp_path / "models"
    folder.mkdir()
    for location in ("../secret.bin", str(tmp_path / "secret.bin")):
        path = folder / "e.onnx"
        path.write_bytes(_external(location).SerializeToString())
        with pytest.raises(FileFormatError, match="outside the model's folder"):
            cnnkit_onnx.load(path)


def test_external_data_inside_the_folder_is_read_and_checked(tmp_path: Path) -> None:
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    (tmp_path / "w.bin").write_bytes(weights.tobytes())
    path = tmp_path / "e.onnx"
    path.write_bytes(_external("w.bin").SerializeToString())
    np.testing.assert_array_equal(cnnkit_onnx.load(path)["0"].params["weight"], weights)
    path.write_bytes(_external("w.bin", length=4800).SerializeToString())
    with pytest.raises(FileFormatError, match="must hold 48 bytes"):
        cnnkit_onnx.load(path)


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    model = _dense_graph()
    model.graph.initializer[0].dims[:] = [3_000_000, 4_000_000]  # 48 TB if anyone allocated it
    path = tmp_path / "big.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FileFormatError, match="fc.weight.*needs 48,000,000,000,000 bytes but holds 48"):
        cnnkit_onnx.load(path)


def test_graphs_cnnkit_cannot_express_are_clear_errors(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transA=1, name="odd")]
    path = tmp_path / "t.onnx"
    onnx.save(_graph(nodes, [w]), str(path))
    with pytest.raises(ConfigError, match=r"node odd \(Gemm\): transA=1"):
        cnnkit_onnx.load(path)


def test_every_layer_round_trips(tmp_path: Path) -> None:
    """Min pooling (-MaxPool(-x)), dilated average pooling (a depthwise Conv), adaptive pooling (two
    MatMul) and folded preprocessing come back as the layers and metadata they were exported from."""
    from cnnkit import layers as L
    from cnnkit.models import Sequential
    from test_onnx_export import randomise_buffers

    model = Sequential(
        [
            L.Conv2D(4, 3, padding=(1, 0), dilation=(1, 2)), L.BatchNorm2D(), L.LeakyReLU(0.2),
            L.MinPool2D(2, stride=1), L.AvgPool2D(3, stride=1, padding=1, dilation=2), L.AvgPool2D(2, padding=1),
            Residual(Sequential([L.Conv2D(4, 1), L.ReLU()]), Sequential([L.MaxPool2D(3, stride=1, padding=1)])),
            L.AdaptiveAvgPool2D((2, 3)), L.Softmax(axis=1), L.Flatten(), L.Dropout(0.3), L.Dense(6),
            L.BatchNorm1D(), L.ReLU(), L.Dense(3),
        ],
        input_shape=(1, 11, 12),
        seed=0,
    )  # fmt: skip
    randomise_buffers(model)
    model.metadata = {
        "preprocess": {"image_size": [11, 12], "color": "grey", "normalize": {"mode": "symmetric"}}
    }
    path = tmp_path / "all.onnx"
    cnnkit_onnx.export(model, path, include_preprocessing=True)
    back = cnnkit_onnx.load(path)
    assert _leaves(back) == _leaves(model)
    assert back.metadata == {"preprocess": model.metadata["preprocess"]}
    x = np.random.default_rng(0).normal(size=(3, 1, 11, 12)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=0, atol=1e-6)
