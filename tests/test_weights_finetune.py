"""cnnkit.load_weights (PyTorch state dicts in safetensors files) and fine-tuning (new head, frozen layers).

Weights cannot be downloaded here, so PyTorch makes them: ``safetensors.torch.save_file(m.state_dict())``
of the twins in torch_zoo_reference.py, whose names are torchvision's and cnnkit's.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.errors import ConfigError, FileFormatError, ShapeError
from cnnkit.models import zoo
from cnnkit.optim import SGD, Adam
from cnnkit.training.finetune import freeze, init_from, replace_head

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")
R = pytest.importorskip("torch_zoo_reference")


def torch_weights(tmp_path: Path, module, name: str = "w.safetensors", dtype=None) -> Path:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / name
    st_torch.save_file(state, str(path))
    return path


def lenet_twin(num_classes: int = 10):
    torch.manual_seed(0)
    return R.lenet5(num_classes).eval()


@pytest.mark.parametrize("name", ["lenet5", "resnet18_small"])
def test_pytorch_weights_predict_what_pytorch_predicts(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = lenet_twin() if name == "lenet5" else R.ResNet("resnet18", num_classes=10, small=True)
    module = R.randomise_batch_norm(module).eval()
    path = torch_weights(tmp_path, module)
    model = zoo.get(name, seed=1)
    report = cnnkit.load_weights(model, path)
    assert report.complete and len(report.loaded) == len(module.state_dict())
    x = np.random.default_rng(0).normal(size=(3, *model.input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_precisions_are_converted(dtype: str, tmp_path: Path) -> None:
    module = lenet_twin()
    path = torch_weights(tmp_path, module, dtype=getattr(torch, dtype))
    model = zoo.get("lenet5", seed=1)
    cnnkit.load_weights(model, path)
    for key, value in module.state_dict().items():
        expected = value.to(getattr(torch, dtype)).to(torch.float32).numpy()
        assert model.state_dict()[key].dtype == np.float32
        np.testing.assert_array_equal(model.state_dict()[key], expected)


def _broken_state(tmp_path: Path) -> Path:
    state = {k: v.contiguous() for k, v in lenet_twin().state_dict().items()}
    del state["9.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["0.weight"] = torch.zeros(6, 1, 3, 3)
    path = tmp_path / "broken.safetensors"
    st_torch.save_file(state, str(path))
    return path


def test_strict_lists_missing_unexpected_and_misshaped_at_once_and_loads_nothing(tmp_path: Path) -> None:
    model = zoo.get("lenet5", seed=1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ShapeError) as err:
        cnnkit.load_weights(model, _broken_state(tmp_path))
    message = str(err.value)
    assert "broken.safetensors" in message
    assert "1 missing from the file: 9.bias" in message
    assert "1 unexpected (not in the model): extra.weight" in message
    assert "0.weight: file (6, 1, 3, 3) float32, model (6, 1, 5, 5) float32" in message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_not_strict_loads_what_matches_and_reports_the_rest(tmp_path: Path) -> None:
    model = zoo.get("lenet5", seed=1)
    before = model.state_dict()["0.weight"].copy()
    report = cnnkit.load_weights(model, _broken_state(tmp_path), strict=False)
    assert report.missing == ["9.bias"] and report.unexpected == ["extra.weight"]
    assert [m.split(":")[0] for m in report.mismatched] == ["0.weight"]
    assert len(report.loaded) == len(model.state_dict()) - 2
    np.testing.assert_array_equal(model.state_dict()["0.weight"], before)
    np.testing.assert_array_equal(
        model.state_dict()["3.weight"], lenet_twin().state_dict()["3.weight"].numpy()
    )


def test_pickles_are_refused_with_the_conversion(tmp_path: Path) -> None:
    state = lenet_twin().state_dict()
    for name in ("model.pt", "model.pth", "disguised.safetensors"):
        path = tmp_path / name
        torch.save(state, str(path))
        with pytest.raises(FileFormatError) as err:
            cnnkit.load_weights(zoo.get("lenet5", seed=1), path)
        message = str(err.value)
        assert "never unpickles" in message and name in message
        assert 'torch.load("model.pt", map_location="cpu", weights_only=True)' in message
        assert "safetensors.torch.save_file(" in message


def test_cnnkit_and_onnx_files_give_their_weights(tmp_path: Path) -> None:
    source = zoo.get("simple_cnn", seed=3)
    source.save(tmp_path / "m.cnnkit")
    target = zoo.get("simple_cnn", seed=4)
    cnnkit.load_weights(target, tmp_path / "m.cnnkit")
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    pytest.importorskip("onnx")
    from cnnkit.onnx import export

    export(source, tmp_path / "m.onnx")
    other = zoo.get("simple_cnn", seed=5)
    cnnkit.load_weights(other, tmp_path / "m.onnx")
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)


# ------------------------------------------------------------------------------------------ fine-tuning
def _data(n: int = 32, classes: int = 10, shape=(1, 32, 32)):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.1, momentum=0.9, weight_decay=1e-2), lambda: Adam(1e-2)])
def test_frozen_parameters_keep_their_bits_and_the_others_train(optimizer) -> None:
    model = zoo.get("lenet5", seed=0)
    trainable_before = model.count_params()
    frozen = freeze(model, "0, 3")
    assert frozen == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert model.count_params() == trainable_before - sum(model.state_dict()[k].size for k in frozen)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer(), verbose=0, seed=0)
    for key, value in model.state_dict().items():
        if key in frozen:
            assert value.tobytes() == before[key].tobytes(), key
        else:
            assert not np.array_equal(value, before[key]), key


def test_freeze_refuses_unknown_and_partial_prefixes() -> None:
    model = zoo.get("resnet18_small", seed=0)
    with pytest.raises(ConfigError, match="starts with 'layer9'.*top-level names: bn1, conv1, fc, layer1"):
        freeze(model, "layer9")
    with pytest.raises(ConfigError, match=r"'fc.bias' names only \['bias'\]"):
        freeze(model, "fc.bias")
    assert all(layer.trainable for _, layer in model.named_layers())  # nothing half-done
    assert freeze(model, ["layer1", "conv1"])[:2] == ["conv1.weight", "layer1.0.conv1.weight"]
    assert not model["layer1"]["0"]["bn1"].trainable and model["layer2"]["0"]["bn1"].trainable


def test_replace_head_gives_a_new_number_of_classes() -> None:
    model = zoo.get("resnet18_small", seed=0)
    conv = model["conv1"].params["weight"].copy()
    head = replace_head(model, 3, seed=0)
    assert model.output_shape == (3,) and model["fc"] is head and head.params["weight"].shape == (3, 512)
    np.testing.assert_array_equal(model["conv1"].params["weight"], conv)
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert model.predict(x).shape == (2, 3)


def test_init_from_with_a_new_head(tmp_path: Path) -> None:
    path = torch_weights(tmp_path, lenet_twin(10))
    model = zoo.get("lenet5", num_classes=3, seed=0)
    with pytest.raises(ShapeError, match="another number of classes: pass new_head=True"):
        init_from(model, path)
    head = model["11"].params["weight"].copy()
    report = init_from(model, path, new_head=True)
    assert report.reinitialised == ["11.weight", "11.bias"] and report.complete
    np.testing.assert_array_equal(model["11"].params["weight"], head)
    np.testing.assert_array_equal(model["7"].params["weight"], lenet_twin().state_dict()["7.weight"].numpy())


# ------------------------------------------------------------------------------------------ the CLI
def run_cli(*argv) -> tuple[int, str, str]:
    from cnnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["a", "b", "c"]):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
            pixels[k * 8 : k * 8 + 8] = 220
            Image.fromarray(pixels).save(tmp_path / "img" / name / f"{i}.png")
    return tmp_path / "img"


def test_cli_fine_tunes_from_pytorch_weights_and_exports(tmp_path: Path, image_folder: Path) -> None:
    module = lenet_twin(10)
    weights = torch_weights(tmp_path, module, "lenet5.safetensors")
    out = tmp_path / "run"
    rc, stdout, err = run_cli(
        "train", "--model", "lenet5", "--data", image_folder, "--image-size", "32", "--grey", "--epochs", "1",
        "--validation-split", "0", "--init-weights", weights, "--new-head", "--freeze", "0,3", "--out", out,
        "--threads", "1",
    )  # fmt: skip
    assert rc == 0, err
    assert "new head 11.weight, 11.bias" in stdout and "frozen: 4 parameters" in stdout
    model = cnnkit.load_model(out / "model.cnnkit")
    assert model.output_shape == (3,)
    for key in ("0.weight", "0.bias", "3.weight", "3.bias"):  # frozen: PyTorch's values, bit for bit
        assert model.state_dict()[key].tobytes() == module.state_dict()[key].numpy().tobytes()
    assert not np.array_equal(model.state_dict()["7.weight"], module.state_dict()["7.weight"].numpy())

    rc, _, err = run_cli("train", "--data", image_folder, "--new-head", "--out", tmp_path / "x")
    assert rc == 2 and "--new-head needs --init-weights" in err

    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "model.onnx"
    rc, stdout, err = run_cli("export", out / "model.cnnkit", onnx_path, "--include-preprocessing")
    assert rc == 0 and "wrote" in stdout, err
    rc, _, err = run_cli("export", out / "model.cnnkit", onnx_path)
    assert rc == 2 and "already exists" in err
    from cnnkit.data.transforms import Normalize

    pixels = np.random.default_rng(1).integers(0, 256, (4, 1, 32, 32)).astype(np.uint8)
    norm = Normalize(**{k: v for k, v in model.metadata["preprocess"]["normalize"].items()})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": pixels.astype(np.float32) / 255})[0]
    np.testing.assert_allclose(got, model.predict(norm(pixels)), rtol=0, atol=1e-5)
