"""The seeded shapes generator."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cnnkit.data import SHAPES, Dataset, shapes
from cnnkit.errors import ConfigError


def test_shapes_dtypes_and_names():
    x, y, names = shapes(30, image_size=32, classes=("circle", "square", "triangle"))
    assert x.shape == (30, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (30,) and y.dtype == np.int64
    assert names == ["circle", "square", "triangle"]
    big = shapes(4, image_size=128)
    assert big.x.shape == (4, 3, 128, 128)
    rect = shapes(4, image_size=(20, 36))
    assert rect.x.shape == (4, 3, 20, 36)


def test_default_classes_are_ten_for_notes_section_5():
    data = shapes(20)
    assert len(data.class_names) == 10 and set(data.class_names) == set(SHAPES)


def test_deterministic_with_seed():
    a, b, c = shapes(50, seed=3), shapes(50, seed=3), shapes(50, seed=4)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize(("n", "k", "expected"), [(100, 10, [10] * 10), (7, 3, [3, 2, 2]), (2, 3, [1, 1, 0])])
def test_balanced_classes(n, k, expected):
    classes = list(SHAPES)[:k]
    y = shapes(n, classes=classes).y
    assert np.bincount(y, minlength=k).tolist() == expected


def test_order_is_shuffled_and_images_differ():
    x, y, _ = shapes(200, seed=0)
    assert not np.array_equal(y, np.sort(y))
    flat = x.reshape(200, -1)
    assert len(np.unique(flat, axis=0)) == 200
    assert flat.std(axis=1).min() > 5  # every image has a visible shape on its background


def test_noise_has_the_requested_strength():
    clean = shapes(40, noise=0.0, seed=1).x.astype(np.float64)
    noisy = shapes(40, noise=0.1, seed=1).x.astype(np.float64)
    diff = noisy - clean  # same shapes, colours and positions: only the noise differs
    assert abs(diff.mean()) < 1.0
    assert 0.8 * 25.5 < diff.std() < 1.05 * 25.5  # clipping at 0/255 can only shrink it


def test_shape_is_a_two_colour_region_without_noise():
    x, y, _ = shapes(60, noise=0.0, seed=2, classes=("circle", "square"))
    for img in x.astype(np.int64):
        corner = img[:, 0, 0]
        # The shape covers a sizeable part, far in colour from the background corner (contrast >= 90).
        dist = np.sqrt(((img - corner[:, None, None]) ** 2).sum(axis=0))
        fraction = (dist > 60).mean()
        assert 0.05 < fraction < 0.7


def test_split_helper_is_stratified_and_seeded():
    data = shapes(100, classes=("circle", "square", "triangle", "ring"), seed=0)
    ds = data.split(test_size=0.2, seed=1, source="shapes")
    assert isinstance(ds, Dataset) and ds.source == "shapes"
    assert np.bincount(ds.y_test).tolist() == [5, 5, 5, 5]
    assert np.bincount(ds.y_train).tolist() == [20, 20, 20, 20]
    again = data.split(test_size=0.2, seed=1)
    other = data.split(test_size=0.2, seed=2)
    assert np.array_equal(ds.x_test, again.x_test) and not np.array_equal(ds.x_test, other.x_test)
    assert ds.input_shape == (3, 32, 32) and ds.class_names == data.class_names


def test_fast_enough():
    start = time.perf_counter()
    data = shapes(10_000, image_size=32)
    elapsed = time.perf_counter() - start
    assert data.x.shape == (10_000, 3, 32, 32)
    assert elapsed < 8.0  # ~0.6 s on one idle core; a per-pixel Python loop would take minutes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 10, "classes": ("circle", "blob")},
        {"n": 10, "classes": ("circle", "circle")},
        {"n": 10, "image_size": 4},
        {"n": 10, "noise": -1.0},
        {"n": 10, "size_range": (0.4, 0.2)},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="shapes"):
        shapes(**kwargs)
