"""Normalize: the three modes, per-channel statistics, JSON state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnkit.data import Normalize
from cnnkit.errors import ConfigError, DTypeError, ShapeError


def test_unit_and_symmetric_ranges():
    x = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    unit = Normalize("unit")(x)
    assert unit.dtype == np.float32 and unit.ravel().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert unit.max() == 1.0 and unit.min() == 0.0
    sym = Normalize("symmetric")(x)
    assert sym.dtype == np.float32 and sym.min() == -1.0 and sym.max() == 1.0
    assert sym.ravel()[1] == pytest.approx(51 / 127.5 - 1)
    assert Normalize("symmetric")(np.full((1, 1, 1, 1), 127.5)).item() == 0.0


def channels_with_different_statistics(n=50):
    rng = np.random.default_rng(0)
    x = np.empty((n, 3, 6, 5), dtype=np.uint8)
    x[:, 0] = rng.integers(0, 50, (n, 6, 5))
    x[:, 1] = rng.integers(100, 256, (n, 6, 5))
    x[:, 2] = rng.integers(0, 256, (n, 6, 5))
    return x


def test_standardize_statistics_per_channel():
    x = channels_with_different_statistics()
    norm = Normalize("standardize").fit(x)
    unit = x.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, unit.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, unit.std(axis=(0, 2, 3)), rtol=1e-12)
    out = norm(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, atol=1e-5)
    chunked = Normalize("standardize").fit(x, batch_size=7)
    np.testing.assert_allclose(chunked.mean, norm.mean, rtol=1e-12)
    np.testing.assert_allclose(chunked.std, norm.std, rtol=1e-12)


def test_fit_accepts_pairs_and_lazy_datasets():
    x = channels_with_different_statistics(20)

    class Lazy:
        def __len__(self):
            return len(x)

        def load_batch(self, idx):
            return x[idx], np.zeros(len(idx), np.int64)

    base = Normalize("standardize").fit(x)
    assert Normalize("standardize").fit((x, np.zeros(20))).mean == base.mean
    lazy = Normalize("standardize").fit(Lazy(), batch_size=6)
    np.testing.assert_allclose(lazy.std, base.std, rtol=1e-12)


def test_constant_channel_gets_unit_std():
    x = np.full((4, 2, 3, 3), 100, dtype=np.uint8)
    x[:, 1] = np.arange(9).reshape(3, 3)
    norm = Normalize("standardize").fit(x)
    assert norm.std[0] == 1.0 and norm.mean[0] == pytest.approx(100 / 255)
    assert np.all(norm(x)[:, 0] == 0)


def test_config_is_json_and_round_trips():
    x = channels_with_different_statistics(10)
    norm = Normalize("standardize").fit(x)
    config = json.loads(json.dumps(norm.get_config()))
    again = Normalize.from_config(config)
    assert np.array_equal(again(x), norm(x))
    np.testing.assert_allclose(again.inverse(again(x)), x, atol=1e-3)
    assert Normalize.from_config(Normalize("symmetric").get_config()).mode == "symmetric"


def test_single_image_and_inverse():
    img = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    out = Normalize("symmetric")(img)
    assert out.shape == (1, 3, 4)
    np.testing.assert_allclose(Normalize("symmetric").inverse(out), img, atol=1e-4)


def test_errors():
    with pytest.raises(ConfigError, match="mode"):
        Normalize("minmax")
    with pytest.raises(ConfigError, match="fit"):
        Normalize("standardize")(np.zeros((1, 1, 2, 2), np.uint8))
    with pytest.raises(ConfigError, match="both"):
        Normalize("standardize", mean=[0.5])
    with pytest.raises(ConfigError, match="std"):
        Normalize("standardize", mean=[0.5], std=[0.0])
    fitted = Normalize("standardize", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    with pytest.raises(ShapeError, match="3 channel"):
        fitted(np.zeros((1, 1, 2, 2), np.uint8))
    with pytest.raises(DTypeError, match="uint8 or floating"):
        Normalize()(np.zeros((1, 1, 2, 2), np.int16))
    with pytest.raises(ShapeError):
        Normalize()(np.zeros((2, 2), np.uint8))
    with pytest.raises(ConfigError, match="no data"):
        Normalize("standardize").fit(np.zeros((0, 1, 2, 2), np.uint8))
