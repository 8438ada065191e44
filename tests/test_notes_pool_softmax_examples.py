"""The lecture notes' worked examples for pooling (§4.2, exercise 3, §7.2), softmax (§6.2), cross-entropy
(§7.1), flatten (§5.6) and batch norm (§8.3), with the expected values worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cnnkit.layers import AvgPool2D, Flatten, MaxPool2D, MinPool2D, Softmax
from cnnkit.ops import (
    avg_pool2d,
    batch_norm,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_forward,
    log_softmax,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
    min_pool2d,
    softmax,
)

# notes §4.2: the 4x4 input of every pooling example
X42 = np.array([[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]], dtype=np.float32)[None, None]
# notes §14.3, exercise 3
EX3 = np.array([[3, 8, 2, 4], [1, 6, 5, 3], [7, 2, 9, 1], [4, 5, 3, 6]], dtype=np.float32)[None, None]


def test_section_4_2_1_max_pooling():
    # max(1,3,4,6)=6, max(2,9,1,5)=9, max(7,2,0,4)=7, max(8,3,3,6)=8
    np.testing.assert_array_equal(max_pool2d(X42, 2, 2)[0, 0], [[6, 9], [7, 8]])
    np.testing.assert_array_equal(MaxPool2D(2)(X42)[0, 0], [[6, 9], [7, 8]])


def test_section_4_2_2_average_pooling():
    # (1+3+4+6)/4 = 3.5, (2+9+1+5)/4 = 4.25, (7+2+0+4)/4 = 3.25, (8+3+3+6)/4 = 5.0
    np.testing.assert_array_equal(avg_pool2d(X42, 2, 2)[0, 0], [[3.5, 4.25], [3.25, 5.0]])
    np.testing.assert_array_equal(AvgPool2D(2)(X42)[0, 0], [[3.5, 4.25], [3.25, 5.0]])


def test_section_4_2_3_min_pooling():
    # the notes give no numbers; by hand: min(1,3,4,6)=1, min(2,9,1,5)=1, min(7,2,0,4)=0, min(8,3,3,6)=3
    np.testing.assert_array_equal(min_pool2d(X42, 2, 2)[0, 0], [[1, 1], [0, 3]])
    np.testing.assert_array_equal(MinPool2D(2)(X42)[0, 0], [[1, 1], [0, 3]])


def test_exercise_3_max_pooling():
    # max(3,8,1,6)=8, max(2,4,5,3)=5, max(7,2,4,5)=7, max(9,1,3,6)=9
    np.testing.assert_array_equal(max_pool2d(EX3, 2)[0, 0], [[8, 5], [7, 9]])


def test_section_7_2_max_pooling_sends_the_gradient_to_the_max_position():
    out, cache = max_pool2d_forward(X42, 2)
    dout = np.array([[10, 20], [30, 40]], np.float32)[None, None]
    dx = max_pool2d_backward(dout, cache)[0, 0]
    # 6 sits at (1,1), 9 at (0,3), 7 at (2,0), 8 at (2,2); every other position gets nothing
    expected = np.zeros((4, 4), np.float32)
    expected[1, 1], expected[0, 3], expected[2, 0], expected[2, 2] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx, expected)
    # exercise 3: 8 at (0,1), 5 at (1,2), 7 at (2,0), 9 at (2,2)
    dx3 = max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), max_pool2d_forward(EX3, 2)[1])[0, 0]
    assert sorted(zip(*np.nonzero(dx3), strict=True)) == [(0, 1), (1, 2), (2, 0), (2, 2)]


def test_section_5_pooling_and_flatten_sizes():
    # §5.3: 32x32x32 -> 16x16x32; §5.5: 16x16x64 -> 8x8x64; §9: 128 -> 64 -> 32 -> 16; exercise 1.3: 14 -> 7
    assert MaxPool2D(2).compute_output_shape((32, 32, 32)) == (32, 16, 16)
    assert MaxPool2D(2).compute_output_shape((64, 16, 16)) == (64, 8, 8)
    assert [MaxPool2D(2).compute_output_shape((32, s, s))[1] for s in (128, 64, 32)] == [64, 32, 16]
    assert MaxPool2D(2, 2).compute_output_shape((64, 14, 14)) == (64, 7, 7)
    # §5.6: 8 x 8 x 64 = 4,096 neurons; §9: 16 x 16 x 128 = 32,768
    assert Flatten().compute_output_shape((64, 8, 8)) == (4096,)
    assert Flatten().compute_output_shape((128, 16, 16)) == (32768,)


def test_section_6_2_softmax_example():
    scores = np.array([[2.0, 1.0, 0.1]])
    # the terms, to 2 decimals as the notes print them: e^2.0 = 7.39, e^1.0 = 2.72, e^0.1 = 1.11
    assert [round(math.exp(z), 2) for z in (2.0, 1.0, 0.1)] == [7.39, 2.72, 1.11]
    # The notes' "Sum = 11.22" adds those rounded terms (7.39 + 2.72 + 1.11 = 11.22); the exact sum is
    # 7.3891 + 2.7183 + 1.1052 = 11.2125, which is 11.21 to 2 decimals.
    total = sum(math.exp(z) for z in (2.0, 1.0, 0.1))
    assert total == pytest.approx(11.2125, abs=1e-4) and round(total, 2) == 11.21
    assert round(7.39 + 2.72 + 1.11, 2) == 11.22
    p = softmax(scores)
    np.testing.assert_array_equal(np.round(p, 2), [[0.66, 0.24, 0.10]])
    assert p.sum() == pytest.approx(1.0)
    layer_p = Softmax()(scores.astype(np.float32))
    assert [round(float(v), 2) for v in layer_p[0]] == [0.66, 0.24, 0.10]


def test_section_7_1_cross_entropy_of_one_hot_is_minus_log_p_correct():
    scores = np.array([[2.0, 1.0, 0.1]])
    p = softmax(scores)[0]
    for correct in range(3):
        y = np.eye(3)[correct]
        by_formula = -sum(
            y_i * math.log(p_i) for y_i, p_i in zip(y, p, strict=True)
        )  # L = -sum y_i log y_hat_i
        assert cross_entropy(scores, np.array([correct])) == pytest.approx(-math.log(p[correct]), rel=1e-12)
        assert cross_entropy(scores, y[None]) == pytest.approx(by_formula, rel=1e-12)
    # the notes' class 1 (index 0) of the §6.2 example: -log 0.659 = 0.417
    assert cross_entropy(scores, np.array([0])) == pytest.approx(0.417, abs=5e-4)
    # and its gradient is softmax - y: [0.659 - 1, 0.242, 0.099]
    _, cache = cross_entropy_forward(scores, np.array([0]))
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache)[0], [p[0] - 1, p[1], p[2]], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_and_cross_entropy_stable_at_1e4(dtype):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
            lp = log_softmax(z)
            loss = cross_entropy(z, np.array([2, 0]))
    # log softmax: z_i - max z - log sum exp(z - max z): [0, -1e4, -2e4] and [-2e4 - log 2, -log 2, -log 2]
    np.testing.assert_allclose(lp[0], [0.0, -1e4, -2e4], rtol=1e-6)
    np.testing.assert_allclose(lp[1], [-2e4 - math.log(2), -math.log(2), -math.log(2)], rtol=1e-6)
    assert lp.dtype == dtype and np.isfinite(lp).all()
    assert loss == pytest.approx((2e4 + 2e4 + math.log(2)) / 2, rel=1e-6)


def test_section_8_3_batch_norm_formula():
    # one channel, values 1, 2, 3, 4: mu = 2.5, sigma^2 = 1.25 (biased), x_hat = (x - 2.5) / sqrt(1.25 + eps)
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = batch_norm(x, None, None, np.zeros(1), np.ones(1), training=True, eps=1e-5)
    np.testing.assert_allclose(y[:, 0], [-1.3416355, -0.4472118, 0.4472118, 1.3416355], rtol=1e-6)
