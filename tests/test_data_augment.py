"""Augmentation: identity, flips, rotations against np.rot90, zoom by hand, a loop reference, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.data import Augment, affine_inverse_maps, hflip, rotate, warp_affine
from cnnkit.errors import ConfigError, DTypeError, ShapeError


def batch(n=4, c=3, h=9, w=9, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    return rng.random((n, c, h, w)).astype(dtype)


def reference_warp(x, maps, fill_mode, fill):
    """Obvious per-pixel loop: bilinear interpolation of the four neighbours, outside handled per mode."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h, w))

    def pixel(img, r, q):
        if fill_mode == "edge":
            r, q = min(max(r, 0), h - 1), min(max(q, 0), w - 1)
        elif 0 <= r < h and 0 <= q < w:
            pass
        else:
            return np.full(c, fill, dtype=float)
        return img[:, r, q].astype(float)

    for k in range(n):
        for i in range(h):
            for j in range(w):
                sr = maps[k, 0, 0] * i + maps[k, 0, 1] * j + maps[k, 0, 2]
                sc = maps[k, 1, 0] * i + maps[k, 1, 1] * j + maps[k, 1, 2]
                if fill_mode == "edge":
                    sr, sc = min(max(sr, 0), h - 1), min(max(sc, 0), w - 1)
                r0, c0 = math.floor(sr), math.floor(sc)
                a, b = sr - r0, sc - c0
                out[k, :, i, j] = (
                    (1 - a) * (1 - b) * pixel(x[k], r0, c0)
                    + (1 - a) * b * pixel(x[k], r0, c0 + 1)
                    + a * (1 - b) * pixel(x[k], r0 + 1, c0)
                    + a * b * pixel(x[k], r0 + 1, c0 + 1)
                )
    return out


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    degrees=st.floats(-180, 180),
    scale=st.floats(0.5, 2.0),
    shift=st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
    flip=st.booleans(),
    fill_mode=st.sampled_from(["edge", "constant"]),
)
def test_warp_matches_loop_reference(h, w, degrees, scale, shift, flip, fill_mode):
    x = batch(2, 2, h, w, dtype=np.float64, seed=h * 10 + w)
    maps = affine_inverse_maps(
        (h, w),
        np.array([degrees, -degrees]),
        np.array([scale, 1.0]),
        np.array([shift, shift]),
        np.array([flip, False]),
    )
    out = warp_affine(x, maps, fill_mode=fill_mode, fill=0.25)
    np.testing.assert_allclose(out, reference_warp(x, maps, fill_mode, 0.25), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_identity_gives_back_the_input_exactly(dtype):
    x = batch(dtype=dtype)
    for aug in (Augment(), Augment(rotation=0, flip=False, zoom=0, translate=0, seed=1)):
        out = aug(x)
        assert out.dtype == x.dtype and np.array_equal(out, x) and out is not x
    identity = affine_inverse_maps(x.shape[2:], np.zeros(len(x)))
    for mode in ("edge", "reflect", "constant"):
        assert np.array_equal(warp_affine(x, identity, mode), x)


def test_flip_twice_is_identity():
    x = batch(h=5, w=7)
    assert np.array_equal(hflip(hflip(x)), x)
    assert np.array_equal(hflip(x), x[..., ::-1])
    always = Augment(flip=1.0, seed=0)
    assert np.array_equal(always(x), x[..., ::-1])
    assert np.array_equal(always(always(x)), x)
    half = Augment(flip=True, seed=0)(batch(n=200, h=2, w=2))
    flipped = np.mean(
        [np.array_equal(o, i[..., ::-1]) for o, i in zip(half, batch(n=200, h=2, w=2), strict=True)]
    )
    assert 0.35 < flipped < 0.65


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("size", [8, 9])
def test_rotation_by_90_equals_rot90(dtype, size):
    x = batch(h=size, w=size, dtype=dtype)
    for degrees, k in ((90, 1), (-90, -1), (180, 2)):
        out = rotate(x, degrees, fill_mode="constant")
        expected = np.rot90(x, k=k, axes=(2, 3))
        c = slice(1, size - 1)  # interpolation tolerance: compare away from the border
        np.testing.assert_allclose(out[..., c, c].astype(float), expected[..., c, c].astype(float), atol=1e-5)
    via_augment = Augment(rotation=(90, 90), fill_mode="constant")(x)
    assert np.allclose(via_augment.astype(float), np.rot90(x, axes=(2, 3)).astype(float), atol=1e-5)


def test_zoom_by_two_worked_by_hand():
    # 5x5 image, centre c = 2; zoom s = 2 reads output (i, j) at c + (p - c) / 2: (0, 0) <- (1, 1).
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    out = Augment(zoom=(2.0, 2.0))(x)
    assert out.shape == x.shape
    assert (
        out[0, 0, 0, 0] == x[0, 0, 1, 1]
        and out[0, 0, 2, 2] == x[0, 0, 2, 2]
        and out[0, 0, 4, 4] == x[0, 0, 3, 3]
    )
    assert out[0, 0, 0, 1] == pytest.approx((x[0, 0, 1, 1] + x[0, 0, 1, 2]) / 2)  # half-way: bilinear mean


def test_zoom_keeps_shape_and_dtype():
    x = batch(n=6, c=3, h=12, w=20)
    out = Augment(zoom=0.3, seed=2)(x)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert not np.array_equal(out, x)


def test_translate_is_an_integer_shift_with_fill():
    x = batch(n=30, c=1, h=6, w=6).astype(np.float64) + 1  # no zeros, so the fill is recognisable
    out = Augment(translate=2, fill_mode="constant", seed=4)(x)
    shifts = set()
    for o, i in zip(out, x, strict=True):
        match = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = np.zeros_like(i)
                shifted[:, max(dy, 0) : 6 + min(dy, 0), max(dx, 0) : 6 + min(dx, 0)] = i[
                    :, max(-dy, 0) : 6 - max(dy, 0), max(-dx, 0) : 6 - max(dx, 0)
                ]
                if np.array_equal(o, shifted):
                    match.append((dy, dx))
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 5  # random shifts, not one fixed offset


def test_rotation_direction_is_counter_clockwise():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 4] = 1.0  # a dot right of the centre
    out = rotate(x, 90, fill_mode="constant")
    assert out[0, 0, 0, 2] == pytest.approx(1.0)  # now above the centre


def test_seeded_reproducibility():
    x = batch(n=8, h=16, w=16)
    kwargs = {"rotation": 15, "flip": True, "zoom": 0.1, "translate": 2}
    a1, a2, b = Augment(seed=5, **kwargs), Augment(seed=5, **kwargs), Augment(seed=6, **kwargs)
    first = a1(x)
    assert np.array_equal(first, a2(x)) and np.array_equal(a1(x), a2(x))  # same sequence
    assert not np.array_equal(first, b(x))
    r1 = Augment(**kwargs)(x, rng=np.random.default_rng(9))
    r2 = Augment(**kwargs)(x, rng=np.random.default_rng(9))
    assert np.array_equal(r1, r2)


def test_reflect_mode_mirrors():
    x = np.arange(4, dtype=np.float64).reshape(1, 1, 1, 4)
    out = Augment(translate=(0, 2), fill_mode="reflect", seed=0)
    maps = affine_inverse_maps((1, 4), np.zeros(1), translate=np.array([[0.0, 2.0]]))
    assert warp_affine(x, maps, "reflect").ravel().tolist() == [2, 1, 0, 1]
    assert out.get_config()["fill_mode"] == "reflect"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rotation": -5},
        {"zoom": 1.0},
        {"zoom": (1.2, 1.1)},
        {"flip": 2},
        {"translate": -1},
        {"translate": 1.5},
        {"fill_mode": "wrap"},
        {"rotation": "15"},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="Augment"):
        Augment(**kwargs)


def test_bad_input():
    with pytest.raises(ShapeError, match="4 dimensions"):
        Augment(flip=True)(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DTypeError, match="uint8 or floating"):
        Augment(flip=True)(np.zeros((1, 3, 4, 4), np.int32))
    with pytest.raises(ShapeError, match="maps"):
        warp_affine(np.zeros((2, 1, 3, 3)), np.zeros((1, 2, 3)))
