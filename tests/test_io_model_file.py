"""cnnkit.io.model_file: models and checkpoints in one safe file."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnnkit.io.safetensors as stmod
from cnnkit.errors import CnnkitError, ConfigError, FileFormatError
from cnnkit.io import (
    Checkpoint,
    ModelFileExistsError,
    load_file,
    load_model,
    read_checkpoint,
    save_file,
    save_model,
)
from cnnkit.layers.base import Layer
from cnnkit.models.sequential import Sequential


# Small layers defined here (registered by Layer.__init_subclass__), so these tests do not depend on the
# real layers.
class IoTestAffine(Layer):
    """y = x * weight + bias per channel, plus a buffer that counts forward passes in training."""

    def __init__(self, *, offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def build(self, input_shape):
        super().build(input_shape)
        c = self.input_shape[0]
        rng = self.rng()
        self.params["weight"] = rng.standard_normal(c).astype(self.dtype)
        self.params["bias"] = rng.standard_normal(c).astype(self.dtype)
        self.buffers["running_mean"] = rng.standard_normal(c).astype(self.dtype)
        self.buffers["num_batches_tracked"] = np.array(0, dtype=np.int64)

    def forward(self, x, training):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            self.buffers["num_batches_tracked"] += 1
        return (
            (x - self.buffers["running_mean"].reshape(shape)) * self.params["weight"].reshape(shape)
            + self.params["bias"].reshape(shape)
            + self.offset
        )

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


class IoTestNoise(Layer):
    """Adds seeded noise in training; its generator state is what a checkpoint must restore."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gen = np.random.default_rng(self.seed)

    def forward(self, x, training):
        return x + self._gen.standard_normal(x.shape).astype(x.dtype) if training else x

    def rng_state(self):
        return self._gen.bit_generator.state

    def set_rng_state(self, state):
        self._gen.bit_generator.state = state


def _model(dtype=np.float32, seed=3) -> Sequential:
    return Sequential(
        [IoTestAffine(offset=0.5), IoTestNoise(), IoTestAffine(name="second")],
        input_shape=(3, 4, 4),
        seed=seed,
        dtype=dtype,
    )


def _x(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((2, 3, 4, 4)).astype(dtype)


# -------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip_bit_for_bit(tmp_path, dtype):
    model = _model(dtype)
    model(_x(dtype), training=True)  # changes the int buffer
    model.class_names = ["cat", "dog", "émeu"]
    meta = {"preprocess": {"mean": np.array([0.5, 0.25, 0.125]), "std": [1, 2, 3]}, "acc": np.float32(0.75)}
    path = tmp_path / "m.cnnkit"
    save_model(model, path, metadata=meta)
    loaded = load_model(path)
    assert type(loaded) is Sequential and loaded is not model
    assert loaded.input_shape == (3, 4, 4) and loaded.dtype == np.dtype(dtype)
    assert [type(layer) for layer in loaded.layers.values()] == [IoTestAffine, IoTestNoise, IoTestAffine]
    assert loaded["0"].offset == 0.5 and loaded["2"].name == "second"
    assert loaded.class_names == ["cat", "dog", "émeu"]
    assert loaded.metadata == {"preprocess": {"mean": [0.5, 0.25, 0.125], "std": [1, 2, 3]}, "acc": 0.75}
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(theirs) == list(ours)
    for key in ours:
        assert theirs[key].dtype == ours[key].dtype
        np.testing.assert_array_equal(theirs[key], ours[key])
    assert int(theirs["0.num_batches_tracked"]) == 1
    out_a, out_b = model(_x(dtype), training=False), loaded(_x(dtype), training=False)
    assert out_b.dtype == np.dtype(dtype)
    assert out_a.tobytes() == out_b.tobytes()


def test_header_metadata_layout(tmp_path):
    model = _model()
    model.class_names = ["a", "b", "c"]
    save_model(model, tmp_path / "m.cnnkit", metadata={"epochs": 2})
    tensors, meta = load_file(tmp_path / "m.cnnkit")
    assert set(tensors) == set(model.state_dict())
    assert meta["format"] == "cnnkit.model" and meta["format_version"] == "1"
    assert all(isinstance(v, str) for v in meta.values())
    arch = json.loads(meta["architecture"])
    assert arch["class"] == "Sequential"
    user = f"{__name__}>"  # classes outside cnnkit are saved under their module's namespace
    assert [spec["class"] for spec in arch["config"]["layers"].values()] == [
        user + "IoTestAffine",
        user + "IoTestNoise",
        user + "IoTestAffine",
    ]
    assert json.loads(meta["input_shape"]) == [3, 4, 4]
    assert json.loads(meta["class_names"]) == ["a", "b", "c"]
    assert json.loads(meta["metadata"]) == {"epochs": 2}
    assert meta["cnnkit_version"]
    assert "optimizer" not in meta and "training_state" not in meta


def test_model_save_method_and_metadata_carried_over(tmp_path):
    model = _model()
    model.save(tmp_path / "a.cnnkit", metadata={"note": "first"})
    loaded = load_model(tmp_path / "a.cnnkit")
    save_model(loaded, tmp_path / "b.cnnkit")  # metadata defaults to loaded.metadata
    assert load_model(tmp_path / "b.cnnkit").metadata == {"note": "first"}


def test_no_class_names_loads_as_none(tmp_path):
    save_model(_model(), tmp_path / "m.cnnkit")
    loaded = load_model(tmp_path / "m.cnnkit")
    assert loaded.class_names is None and loaded.metadata == {}


def test_loading_does_not_consume_the_global_generator(tmp_path):
    import cnnkit
    from cnnkit.utils.random import global_rng

    model = Sequential([IoTestAffine(), IoTestAffine()], input_shape=(3,))  # unseeded: global generator
    save_model(model, tmp_path / "m.cnnkit")
    cnnkit.set_seed(5)
    expected = global_rng().random(4)
    cnnkit.set_seed(5)
    loaded = load_model(tmp_path / "m.cnnkit")
    np.testing.assert_array_equal(global_rng().random(4), expected)
    np.testing.assert_array_equal(loaded.state_dict()["1.weight"], model.state_dict()["1.weight"])


def test_bare_layer_round_trip(tmp_path):
    layer = IoTestAffine(offset=2.0, seed=1)
    layer.build((5,))
    save_model(layer, tmp_path / "l.cnnkit")
    loaded = load_model(tmp_path / "l.cnnkit")
    assert isinstance(loaded, IoTestAffine) and loaded.offset == 2.0
    np.testing.assert_array_equal(loaded.params["weight"], layer.params["weight"])


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="not built"):
        save_model(Sequential([IoTestAffine()]), tmp_path / "x.cnnkit")
    with pytest.raises(ConfigError, match="expected a cnnkit model"):
        save_model(object(), tmp_path / "x.cnnkit")
    with pytest.raises(ConfigError, match="metadata must be JSON-serialisable"):
        save_model(_model(), tmp_path / "x.cnnkit", metadata={"f": object()})
    with pytest.raises(ConfigError, match="optimizer_state"):
        save_model(_model(), tmp_path / "x.cnnkit", optimizer_state={"arrays": {}})
    with pytest.raises(ConfigError, match="arrays"):
        save_model(_model(), tmp_path / "x.cnnkit", optimizer_state={"config": {}, "arrays": {"a": [1]}})
    with pytest.raises(ConfigError, match="training_state"):
        save_model(_model(), tmp_path / "x.cnnkit", training_state=[1, 2])
    assert not (tmp_path / "x.cnnkit").exists()


def test_overwrite_false_refuses_existing_file(tmp_path):
    path = tmp_path / "m.cnnkit"
    save_model(_model(seed=1), path)
    before = path.read_bytes()
    with pytest.raises(ModelFileExistsError, match="already exists") as info:
        save_model(_model(seed=2), path, overwrite=False)
    assert isinstance(info.value, CnnkitError) and isinstance(info.value, FileExistsError)
    assert path.read_bytes() == before
    save_model(_model(seed=2), path)  # overwrite=True is the default
    assert path.read_bytes() != before
    save_model(_model(seed=2), tmp_path / "new.cnnkit", overwrite=False)
    assert (tmp_path / "new.cnnkit").exists()


# -------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_with_optimizer_and_generator_state(tmp_path):
    model = _model()
    rng = np.random.default_rng(1)
    rng.random(5)  # advance it so the state is not the seed's
    optimizer_state = {
        "config": {"class": "SGD", "lr": 0.1, "momentum": 0.9, "steps": {"0.weight": 3}},
        "arrays": {"0.weight.momentum_buffer": np.arange(3, dtype=np.float32), "2.bias.v": np.ones(3)},
    }
    training_state = {
        "epoch": 4,
        "history": {"loss": [np.float32(1.5), 0.75], "val_accuracy": [0.5, np.float64(0.625)]},
        "rng": rng.bit_generator.state,
    }
    path = tmp_path / "ckpt.cnnkit"
    save_model(
        model, path, metadata={"run": "a"}, optimizer_state=optimizer_state, training_state=training_state
    )
    expected_draws = rng.random(10)

    ckpt = read_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.metadata == {"run": "a"} and ckpt.model.metadata == {"run": "a"}
    assert ckpt.optimizer_state["config"] == optimizer_state["config"]
    assert set(ckpt.optimizer_state["arrays"]) == set(optimizer_state["arrays"])
    for key, value in optimizer_state["arrays"].items():
        got = ckpt.optimizer_state["arrays"][key]
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)
    assert ckpt.training_state["epoch"] == 4
    assert ckpt.training_state["history"] == {"loss": [1.5, 0.75], "val_accuracy": [0.5, 0.625]}
    assert ckpt.training_state["rng"]["state"]["state"] > 2**64  # a big int survives JSON
    restored = np.random.default_rng()
    restored.bit_generator.state = ckpt.training_state["rng"]
    np.testing.assert_array_equal(restored.random(10), expected_draws)
    # The optimizer tensors are not model weights, and load_model ignores them.
    assert not any(key.startswith("__optimizer__") for key in ckpt.model.state_dict())
    assert list(load_model(path).state_dict()) == list(model.state_dict())


def test_plain_model_file_has_no_optimizer_or_training_state(tmp_path):
    save_model(_model(), tmp_path / "m.cnnkit")
    ckpt = read_checkpoint(tmp_path / "m.cnnkit")
    assert ckpt.optimizer_state is None and ckpt.training_state is None


def test_layer_random_state_is_restored(tmp_path):
    model = _model()
    x = _x()
    model(x, training=True)  # advance the noise layer's generator
    save_model(model, tmp_path / "m.cnnkit")
    loaded = load_model(tmp_path / "m.cnnkit")
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


# ------------------------------------------------------------------------------------------ bad model files
def _resave(src: Path, dst: Path, *, tensors=None, meta=None) -> Path:
    """Rewrite a model file with altered tensors or metadata (a None value deletes the entry)."""
    old_tensors, old_meta = load_file(src)
    new_meta = {**old_meta, **(meta or {})}
    new_meta = {k: v for k, v in new_meta.items() if v is not None}  # None deletes an entry
    save_file(old_tensors if tensors is None else tensors(old_tensors), dst, new_meta)
    return dst


@pytest.fixture
def saved(tmp_path) -> Path:
    save_model(
        _model(), tmp_path / "good.cnnkit", optimizer_state={"config": {}, "arrays": {"a": np.ones(2)}}
    )
    return tmp_path / "good.cnnkit"


def _drop(key):
    return lambda t: {k: v for k, v in t.items() if k != key}


BAD = {
    "not cnnkit": ({"format": "pt"}, None, "not a cnnkit model file"),
    "newer version": ({"format_version": "2"}, None, "format_version '2'"),
    "missing tensor": (None, _drop("0.weight"), "missing \\['0.weight'\\]"),
    "extra tensor": (
        None,
        lambda t: {**t, "9.weight": np.ones(1, np.float32)},
        "unexpected \\['9.weight'\\]",
    ),
    "shape mismatch": (
        None,
        lambda t: {**t, "0.weight": np.ones(4, np.float32)},
        "'0.weight' should be float32 of shape \\(3,\\)",
    ),
    "dtype mismatch": (None, lambda t: {**t, "0.bias": t["0.bias"].astype(np.float64)}, "found float64"),
    "orphan optimizer arrays": ({"optimizer": None}, None, "optimizer tensors"),
    "architecture not json": ({"architecture": "{nope"}, None, "architecture'\\] is not valid JSON"),
    "architecture a list": ({"architecture": "[]"}, None, "should be a JSON dict"),
    "unknown layer": (
        {"architecture": json.dumps({"class": "os.system", "config": {"command": "echo hi"}})},
        None,
        "unknown layer type 'os.system'",
    ),
    "bad kwargs": (
        {"architecture": json.dumps({"class": "IoTestAffine", "config": {"evil": 1}})},
        None,
        "cannot rebuild",
    ),
    "config not object": (
        {"architecture": json.dumps({"class": "IoTestAffine", "config": [1]})},
        None,
        "should be a JSON object",
    ),
    "bad input shape": ({"input_shape": "[3, -4, 4]"}, None, "positive integers"),
    "input shape disagrees": ({"input_shape": "[3, 5, 5]"}, None, "builds for input"),
    "no architecture": ({"architecture": None}, None, "no 'architecture'"),
    "bad class names": ({"class_names": '{"a": 1}'}, None, "class_names"),
    "rng state of missing layer": ({"rng_states": '{"7": {}}'}, None, "rng_states names layer '7'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_files_raise_file_format_error(saved, tmp_path, case):
    meta, tensors, message = BAD[case]
    dst = tmp_path / "bad.cnnkit"
    _resave(saved, dst, tensors=tensors, meta=meta)
    with pytest.raises(FileFormatError, match=message) as info:
        read_checkpoint(dst)
    assert str(dst) in str(info.value)


def test_plain_safetensors_file_is_not_a_model(tmp_path):
    save_file({"w": np.ones(2, np.float32)}, tmp_path / "plain.safetensors")
    with pytest.raises(FileFormatError, match="load_file"):
        load_model(tmp_path / "plain.safetensors")


def test_unregistered_class_imports_nothing(saved, tmp_path):
    nested = {
        "class": "Sequential",
        "config": {
            "layers": {
                "0": {"class": "IoTestAffine", "config": {}},
                "1": {"class": "subprocess.Popen", "config": {"args": ["touch", str(tmp_path / "pwned")]}},
            },
            "input_shape": [3, 4, 4],
        },
    }
    dst = _resave(saved, tmp_path / "evil.cnnkit", meta={"architecture": json.dumps(nested)})
    for name in ("subprocess", "os", "builtins"):
        spec = json.dumps({"class": f"{name}.system", "config": {}})
        _resave(saved, tmp_path / f"{name}.cnnkit", meta={"architecture": spec})
    before = set(sys.modules)
    with pytest.raises(FileFormatError, match="subprocess.Popen"):
        load_model(dst)
    for name in ("subprocess", "os", "builtins"):
        with pytest.raises(FileFormatError, match="unknown layer type"):
            load_model(tmp_path / f"{name}.cnnkit")
    assert set(sys.modules) == before
    assert not (tmp_path / "pwned").exists()


def test_io_modules_never_use_pickle():
    import cnnkit.io

    io_dir = Path(cnnkit.io.__file__).parent
    sources = sorted(io_dir.glob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "safetensors.py", "model_file.py"}
    forbidden_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "importlib", "torch"}
    for source in sources:
        text = source.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert not names & forbidden_modules, f"{source.name} imports {names & forbidden_modules}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "__import__", "compile"}, source.name
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in {"load", "loads"} or ast.unparse(node.func) == "json.loads", (
                    f"{source.name}: {ast.unparse(node)}"
                )
            if isinstance(node, ast.keyword):
                assert node.arg != "allow_pickle", source.name
        assert "allow_pickle=True" not in text


# ------------------------------------------------------------------------------------------------ atomicity
def test_crash_while_saving_a_model_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.cnnkit"
    save_model(_model(seed=1), path)
    before = path.read_bytes()

    def crashing_write(handle, header, arrays):
        handle.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(stmod, "_write", crashing_write)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(seed=2), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.cnnkit"]
    monkeypatch.undo()
    np.testing.assert_array_equal(
        load_model(path).state_dict()["0.weight"], _model(seed=1).state_dict()["0.weight"]
    )


# ------------------------------------------------------------------------------------ real cnnkit layers
def _real_model(dtype) -> Sequential:
    from cnnkit.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

    return Sequential(
        [Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2), Dropout(0.5), Flatten(), Dense(5)],
        input_shape=(3, 8, 8),
        seed=0,
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_sequential_round_trip(tmp_path, dtype):
    model = _real_model(dtype)
    x = np.random.default_rng(1).standard_normal((6, 3, 8, 8)).astype(dtype)
    model(x, training=True)  # moves the batch-norm running statistics and the dropout generator
    model.class_names = [f"class {i}" for i in range(5)]
    model.save(tmp_path / "net.cnnkit", metadata={"preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3}})

    loaded = load_model(tmp_path / "net.cnnkit")
    names = list(loaded.state_dict())
    assert names == list(model.state_dict())
    assert {
        "0.weight",
        "0.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "6.weight",
    } <= set(names)
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    assert int(loaded.state_dict()["1.num_batches_tracked"]) == 1
    assert loaded.dtype == np.dtype(dtype) and loaded.state_dict()["6.weight"].dtype == np.dtype(dtype)
    assert loaded.class_names == model.class_names
    assert loaded.metadata == {"preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    out = loaded(x, training=False)
    assert out.dtype == np.dtype(dtype)
    assert out.tobytes() == model(x, training=False).tobytes()
    # The dropout generator was restored too: the next training pass draws the same mask.
    assert loaded(x, training=True).tobytes() == model(x, training=True).tobytes()
