"""A user's layer class never replaces a cnnkit layer in model files (its own namespace, as Keras's
``register_keras_serializable(package=...)``)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.errors import ConfigError
from cnnkit.layers import Dense, Flatten, ReLU
from cnnkit.layers.base import Layer, from_config, layer_class, to_config


def _model() -> cnnkit.Sequential:
    return cnnkit.Sequential([Flatten(), Dense(3), ReLU()], input_shape=(1, 2, 2), seed=0)


def test_a_user_class_named_like_a_builtin_does_not_change_load_model(tmp_path):
    path = tmp_path / "m.cnnkit"
    _model().save(path)

    class Dense(Layer):  # noqa: F811  (the point: the same bare name as cnnkit's Dense)
        def forward(self, x, training):
            raise AssertionError("the user's Dense must not be built by load_model")

    class ReLU(Layer, package="mine"):  # noqa: F811
        pass

    assert Dense.registry_name == f"{__name__}>Dense"
    assert ReLU.registry_name == "mine>ReLU"
    loaded = cnnkit.load_model(path)
    assert [type(layer).__module__ for layer in loaded.layers.values()] == [
        "cnnkit.layers.reshape",
        "cnnkit.layers.dense",
        "cnnkit.layers.activations",
    ]
    assert layer_class("Dense") is not Dense and layer_class("Dense").__module__ == "cnnkit.layers.dense"
    x = np.ones((2, 1, 2, 2), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), _model().predict(x))


def test_a_user_class_round_trips_under_its_namespace(tmp_path):
    class Scale(Layer, package="myproject"):
        def __init__(self, factor: float = 2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def forward(self, x, training):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    spec = to_config(Scale(3.0))
    assert spec["class"] == "myproject>Scale"
    assert type(from_config(spec)) is Scale and from_config(spec).factor == 3.0


def test_a_bad_package_is_refused():
    with pytest.raises(ConfigError, match="package must be a non-empty string"):

        class Bad(Layer, package="a>b"):
            pass


def test_an_unknown_name_says_what_is_known():
    with pytest.raises(ConfigError, match="unknown layer type 'NoSuchLayer'.*Dense"):
        layer_class("NoSuchLayer")
