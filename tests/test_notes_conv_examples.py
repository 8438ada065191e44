"""The lecture notes' convolution examples, with expected values worked out by hand.

Where the notes print a wrong number, the test pins the right one and says what the notes print.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.ops import conv2d, conv2d_forward, conv_output_size, im2col
from cnnkit.ops.reference import conv2d_reference

# §3.3: the 4x4 image and the vertical-edge kernel
IMAGE_3_3 = np.array(
    [
        [1, 0, 1, 2],
        [0, 2, 1, 0],
        [1, 1, 0, 1],
        [2, 0, 1, 1],
    ],
    dtype=np.float64,
)
EDGE_KERNEL = np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float64)


def _conv(image, kernel, **kwargs):
    return conv2d(image[None, None], kernel[None, None], **kwargs)[0, 0]


def test_section_3_3_cross_correlation():
    """§3.3 slides the kernel without flipping it (cross-correlation, what frameworks compute).

    Each output is (right column - left column) of its 3x3 window, summed over the three rows:
      (0,0): rows 0-2, cols 2 vs 0: (1-1) + (1-0) + (0-1) =  0   (the notes' step 1 agrees: 0)
      (0,1): cols 3 vs 1:           (2-0) + (0-2) + (1-1) =  0
      (1,0): rows 1-3, cols 2 vs 0: (1-0) + (0-1) + (1-2) = -1
      (1,1): cols 3 vs 1:           (0-2) + (1-1) + (1-0) = -1
    The notes print [[0, 3], [2, -1]] as the "final output"; only the first entry is right (it is
    the one they work out), the other three do not follow from the image and kernel given.
    """
    expected = np.array([[0, 0], [-1, -1]], dtype=np.float64)
    for dtype in (np.float32, np.float64):
        out = _conv(IMAGE_3_3.astype(dtype), EDGE_KERNEL.astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(_conv(IMAGE_3_3, EDGE_KERNEL), [[0, 3], [2, -1]])


def test_section_3_2_true_convolution_flips_the_kernel():
    """§3.2's formula sum I[i-m, j-n] K[m, n] turns the kernel by 180 degrees first.

    Turned by 180 degrees, this kernel becomes [[1, 0, -1]] * 3 = -K (it is antisymmetric under
    the flip), so the true convolution is the negation of the cross-correlation: [[0, 0], [1, 1]].
    """
    out = _conv(IMAGE_3_3, EDGE_KERNEL, flip_kernel=True)
    np.testing.assert_array_equal(out, [[0, 0], [1, 1]])
    # and straight from §3.2's formula, in "valid" positions: out[i, j] = (I * K)[i + 2, j + 2]
    by_formula = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            by_formula[i, j] = sum(
                IMAGE_3_3[i + 2 - m, j + 2 - n] * EDGE_KERNEL[m, n] for m in range(3) for n in range(3)
            )
    np.testing.assert_array_equal(out, by_formula)


def test_section_3_4_output_size_examples():
    assert conv_output_size(6, 3, padding=0, stride=1) == 4  # (6-3+0)/1 + 1 = 4
    assert conv_output_size(6, 3, padding=0, stride=2) == 2  # (6-3+0)/2 + 1 = 2.5 -> 2
    # and the convolution really produces those sizes
    assert conv2d(np.zeros((1, 1, 6, 6)), np.zeros((1, 1, 3, 3))).shape == (1, 1, 4, 4)
    assert conv2d(np.zeros((1, 1, 6, 6)), np.zeros((1, 1, 3, 3)), stride=2).shape == (1, 1, 2, 2)


def test_exercise_1_sizes():
    assert conv_output_size(28, 5) == 24  # (28-5)/1 + 1
    # The notes write (100-3+2)/2 + 1 = 50; exactly it is 99/2 + 1 = 50.5, floored to 50.
    assert conv_output_size(100, 3, padding=1, stride=2) == 50
    # 14x14 after 2x2 max pooling, stride 2: the same size formula with kernel 2, stride 2.
    assert conv_output_size(14, 2, stride=2) == 7


def test_exercise_2_convolution():
    """The notes' answer [[1, 0], [1, 3]] is right (a cross-correlation, like §3.3)."""
    image = np.array([[2, 4, 1], [3, 1, 5], [0, 2, 1]], dtype=np.float64)
    kernel = np.array([[0, 1], [-1, 0]], dtype=np.float64)
    # (0,0): 2*0 + 4*1 + 3*-1 + 1*0 = 1    (0,1): 4*0 + 1*1 + 1*-1 + 5*0 = 0
    # (1,0): 3*0 + 1*1 + 0*-1 + 2*0 = 1    (1,1): 1*0 + 5*1 + 2*-1 + 1*0 = 3
    np.testing.assert_array_equal(_conv(image, kernel), [[1, 0], [1, 3]])


def test_section_11_1_im2col_matrix():
    """§11.1's 3x3 input, 2x2 kernel: pixel x_rc is given the value 10*r + c to track positions."""
    x = np.array([[11, 12, 13], [21, 22, 23], [31, 32, 33]], dtype=np.float64)
    expected = np.array(
        [
            [11, 12, 21, 22],
            [12, 13, 22, 23],
            [21, 22, 31, 32],
            [22, 23, 32, 33],
        ],
        dtype=np.float64,
    )
    cols = im2col(x[None, None], 2)
    np.testing.assert_array_equal(cols, expected)
    # Output = im2col(X) x W, with W = [w11, w12, w21, w22] as a column
    w = np.array([[1.5, -2.0], [0.25, 3.0]])
    product = (cols @ w.ravel()).reshape(2, 2)
    np.testing.assert_allclose(product, _conv(x, w), rtol=1e-15)
    # by hand for the first window: 11*1.5 + 12*-2 + 21*0.25 + 22*3 = 63.75
    assert product[0, 0] == pytest.approx(63.75)


def test_section_5_network_shapes():
    # conv1: 32x32x3, 32 filters 3x3, stride 1, padding 1 -> (32-3+2)/1 + 1 = 32
    assert conv_output_size(32, 3, padding=1, stride=1) == 32
    # pool: 32 -> 16; conv2: 16x16x32, 64 filters 3x3, padding 1 -> 16; pool -> 8
    assert conv_output_size(32, 2, stride=2) == 16
    assert conv_output_size(16, 3, padding=1) == 16
    assert conv_output_size(16, 2, stride=2) == 8
    assert 8 * 8 * 64 == 4096  # §5.6 flatten
    out = conv2d(np.zeros((1, 3, 32, 32), np.float32), np.zeros((32, 3, 3, 3), np.float32), padding=1)
    assert out.shape == (1, 32, 32, 32)


def test_section_9_cats_vs_dogs_shapes():
    """§9: conv 3x3 keeps 128, 64, 32 (so padding 1, 'same'); each 2x2 pool halves it."""
    steps = [
        ("conv1", conv_output_size(128, 3, padding=1), 128),
        ("pool1", conv_output_size(128, 2, stride=2), 64),
        ("conv2", conv_output_size(64, 3, padding=1), 64),
        ("pool2", conv_output_size(64, 2, stride=2), 32),
        ("conv3", conv_output_size(32, 3, padding=1), 32),
        ("pool3", conv_output_size(32, 2, stride=2), 16),
    ]
    for name, got, notes in steps:
        assert got == notes, name
    assert 16 * 16 * 128 == 32768  # §9 flatten
    # without padding the notes' sizes would not hold: 128 - 3 + 1 = 126
    assert conv_output_size(128, 3) == 126
    out = conv2d(np.zeros((1, 64, 32, 32)), np.zeros((128, 64, 3, 3)), padding="same")
    assert out.shape == (1, 128, 32, 32)


def test_section_8_1_one_by_one_convolution():
    """32x32x256 -> 32x32x64 with 64 filters of 1x1x256: the matmul fast path, equal to the loops."""
    rng = np.random.default_rng(81)
    x = rng.standard_normal((1, 256, 32, 32))
    w = rng.standard_normal((64, 256, 1, 1))
    b = rng.standard_normal(64)
    out, cache = conv2d_forward(x, w, b)
    assert out.shape == (1, 64, 32, 32)
    assert cache.path == "pointwise"  # no im2col
    # the loop reference on a corner of the image (all of it would take a few seconds)
    corner = conv2d_reference(x[:, :, :4, :5], w, b)
    np.testing.assert_allclose(out[:, :, :4, :5], corner, rtol=1e-12, atol=1e-12)
    # each output pixel is W @ (its 256 channels) + b
    np.testing.assert_allclose(out[0, :, 7, 9], w[:, :, 0, 0] @ x[0, :, 7, 9] + b, rtol=1e-12)
    # §8.1 "reduces computation cost": 1x1x256 filters cost 256 MACs per output value
    assert w[0].size == 256
