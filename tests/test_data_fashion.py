"""fashion_mnist: search order ($CNNKIT_DATA, the Debian folder, the bundled subset) and the subset."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.data.datasets as datasets_module
from cnnkit.data import FASHION_MNIST_CLASSES, fashion_mnist, write_idx
from cnnkit.errors import DataError, FileFormatError

DEBIAN = datasets_module.DEFAULT_FASHION_DIR


def make_fake(folder, n_train=20, n_test=10, gz=True, label_shift=0):
    """Small Fashion-MNIST-shaped IDX files whose pixels encode the image index."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = (np.arange(n, dtype=np.uint8)[:, None, None] + np.zeros((1, 28, 28), np.uint8)).astype(np.uint8)
        y = ((np.arange(n) + label_shift) % 10).astype(np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", y)
    return folder


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setattr(datasets_module, "DEFAULT_FASHION_DIR", tmp_path / "absent")


@pytest.mark.parametrize("sub", ["", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_reads_from_cnnkit_data(monkeypatch, tmp_path, sub, gz):
    target = make_fake(tmp_path / "data" / sub if sub else tmp_path / "data", gz=gz)
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "data"))
    ds = fashion_mnist()
    assert ds.source == str(target)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.x_train[7, 0, 3, 5] == 7 and ds.y_train[13] == 3
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.num_classes == 10


def test_explicit_path_wins_and_must_exist(monkeypatch, tmp_path):
    make_fake(tmp_path / "env")
    mine = make_fake(tmp_path / "mine", n_train=30)
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "env"))
    assert fashion_mnist(mine).x_train.shape[0] == 30
    with pytest.raises(DataError, match="nowhere"):
        fashion_mnist(tmp_path / "nowhere")


def test_partial_copy_is_an_error(monkeypatch, tmp_path):
    folder = make_fake(tmp_path / "part")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("CNNKIT_DATA", str(folder))
    with pytest.raises(DataError, match="t10k-labels"):
        fashion_mnist()


def test_corrupt_file_names_the_file(monkeypatch, tmp_path):
    folder = make_fake(tmp_path / "bad", label_shift=0)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(20, 12, np.uint8))
    monkeypatch.setenv("CNNKIT_DATA", str(folder))
    with pytest.raises(FileFormatError, match="train-labels-idx1-ubyte.gz"):
        fashion_mnist()


def test_falls_back_to_bundled_subset(no_system_copy):
    ds = fashion_mnist()
    assert ds.source == "bundled subset"
    assert ds.x_train.shape == (8000, 1, 28, 28) and ds.x_test.shape == (2000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [800] * 10
    assert np.bincount(ds.y_test).tolist() == [200] * 10
    assert len(ds.class_names) == 10
    # Real photos of clothing, not blank files: most images have a dark background and a bright object.
    assert 40 < ds.x_train.mean() < 110 and (ds.x_train.reshape(8000, -1).max(axis=1) > 100).all()


def test_subset_flags(monkeypatch, tmp_path, no_system_copy):
    with pytest.raises(DataError, match="CNNKIT_DATA"):
        fashion_mnist(subset=False)
    monkeypatch.setenv("CNNKIT_DATA", str(make_fake(tmp_path / "env")))
    assert fashion_mnist(subset=True).source == "bundled subset"
    assert fashion_mnist(subset=False).x_train.shape[0] == 20


def test_bundled_subset_size_and_licence():
    files = sorted(datasets_module.ASSETS_DIR.iterdir())
    total = sum(f.stat().st_size for f in files)
    assert total <= 5 * 1024 * 1024
    notice = (datasets_module.ASSETS_DIR / "FASHION-MNIST-LICENSE.txt").read_text()
    assert "Zalando SE" in notice and "MIT License" in notice and "Permission is hereby granted" in notice


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_full_copy_from_debian_package(monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    ds = fashion_mnist()
    assert ds.source == str(DEBIAN)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    # The bundled subset was drawn from these files, with its labels.
    sub = fashion_mnist(subset=True)
    full = ds.x_train.reshape(60000, -1)
    weights = np.random.default_rng(0).random(784)
    keys = full @ weights  # a cheap fingerprint per image; candidates are then compared exactly
    for img, lbl in zip(sub.x_train[::400], sub.y_train[::400], strict=True):
        candidates = np.flatnonzero(np.isclose(keys, img.ravel() @ weights, rtol=0, atol=1e-6))
        matches = [i for i in candidates if np.array_equal(full[i], img.ravel())]
        assert matches and all(ds.y_train[i] == lbl for i in matches)
