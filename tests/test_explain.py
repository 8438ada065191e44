"""cnnkit.explain and `cnnkit explain`: the numbers of every explanation, checked against hand-worked values
from the notes (and against an independent NumPy loop where the inputs are random)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit import explain
from cnnkit.cli import main
from cnnkit.errors import ConfigError, ShapeError

NOTES_IMAGE = [[1, 0, 1, 2], [0, 2, 1, 0], [1, 1, 0, 1], [2, 0, 1, 1]]
NOTES_POOL = [[1, 3, 2, 9], [4, 6, 1, 5], [7, 2, 8, 3], [0, 4, 3, 6]]


def loop_correlation(
    image: np.ndarray, kernel: np.ndarray, stride: int, padding: int, dilation: int
) -> np.ndarray:
    """Independent, obvious cross-correlation (the reference the explanation is held to)."""
    x = np.pad(image, padding)
    kh, kw = kernel.shape
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    oh = (x.shape[0] - span_h) // stride + 1
    ow = (x.shape[1] - span_w) // stride + 1
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            for m in range(kh):
                for n in range(kw):
                    out[i, j] += x[i * stride + m * dilation, j * stride + n * dilation] * kernel[m, n]
    return out


# ----------------------------------------------------------------------------- conv (§3.3)
def test_conv_default_is_the_notes_example_with_the_correct_output():
    r = explain.conv()
    np.testing.assert_array_equal(r.output, [[0, 0], [-1, -1]])
    assert r.notes_defaults and r.matches_notes is False
    np.testing.assert_array_equal(r.notes_printed, [[0, 3], [2, -1]])
    assert "[[0, 3], [2, -1]]" in r.text and "[[0, 0], [-1, -1]]" in r.text
    # the flipped-kernel formula gives neither
    np.testing.assert_array_equal(r.other_output, [[0, 0], [1, 1]])


def test_conv_steps_show_window_products_and_sum():
    r = explain.conv()
    image = np.array(NOTES_IMAGE, float)
    assert [s.position for s in r.steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for step in r.steps:
        i, j = step.position
        np.testing.assert_array_equal(step.window, image[i : i + 3, j : j + 3])
        np.testing.assert_array_equal(step.products, step.window * r.kernel)
        assert step.products.sum() == pytest.approx(step.total)
    # notes §3.3 step 1: -1 + 0 + 1 + 0 + 0 + 1 - 1 + 0 + 0 = 0
    np.testing.assert_array_equal(r.steps[0].products.ravel(), [-1, 0, 1, 0, 0, 1, -1, 0, 0])
    assert "cross-correlation" in r.text


def test_conv_flip_is_the_section_3_2_formula():
    r = explain.conv(flip_kernel=True)
    # I[i - m, j - n] K[m, n] == sliding the 180-degree-turned kernel
    np.testing.assert_array_equal(r.applied_kernel, [[1, 0, -1]] * 3)
    np.testing.assert_array_equal(r.output, [[0, 0], [1, 1]])
    assert "[[0, 3], [2, -1]]" in r.text


def test_conv_custom_inputs_stride_padding():
    # padded 5x5 of 1..9; kernel [[1, 0], [0, -1]]; stride 2: windows by hand
    r = explain.conv("1 2 3; 4 5 6; 7 8 9", "1 0; 0 -1", stride=2, padding=1)
    np.testing.assert_array_equal(r.output, [[0 - 1, 0 - 3], [0 - 7, 5 - 9]])
    assert r.notes_printed is None and "notes print" not in r.text
    assert r.padded.shape == (5, 5) and r.padded[0].sum() == 0


def test_conv_dilation():
    image = np.arange(25.0).reshape(5, 5)
    r = explain.conv(image, np.ones((2, 2)), dilation=2)
    expected = image[:3, :3] + image[:3, 2:] + image[2:, :3] + image[2:, 2:]
    np.testing.assert_array_equal(r.output, expected)
    np.testing.assert_array_equal(r.steps[0].window, [[0, 2], [10, 12]])


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_conv_matches_an_independent_loop(h, w, k, stride, padding, dilation, seed):
    if dilation * (k - 1) + 1 > min(h, w) + 2 * padding:
        return
    rng = np.random.default_rng(seed)
    image = rng.integers(-3, 4, (h, w)).astype(float)
    kernel = rng.integers(-2, 3, (k, k)).astype(float)
    r = explain.conv(image, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(r.output, loop_correlation(image, kernel, stride, padding, dilation))
    for step in r.steps:
        assert step.products.sum() == pytest.approx(step.total)


def test_conv_bad_input():
    with pytest.raises(ShapeError, match="explain.conv"):
        explain.conv("1 2; 3")
    with pytest.raises(ConfigError, match="explain.conv"):
        explain.conv("1 a; 3 4")
    with pytest.raises(ConfigError, match="stride"):
        explain.conv(stride=0)


# ----------------------------------------------------------------------------- pooling (§4.2)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [("max", [[6, 9], [7, 8]]), ("avg", [[3.5, 4.25], [3.25, 5.0]]), ("min", [[1, 1], [0, 3]])],
)
def test_pool_notes_matrix(kind, expected):
    r = explain.pool(kind=kind)
    np.testing.assert_allclose(r.output, expected)
    assert [w.values.ravel().tolist() for w in r.windows] == [
        [1, 3, 4, 6],
        [2, 9, 1, 5],
        [7, 2, 0, 4],
        [8, 3, 3, 6],
    ]
    if kind == "min":
        assert r.matches_notes is None
    else:
        assert r.matches_notes is True


def test_pool_text_lists_windows_like_the_notes():
    text = explain.pool().text
    assert "Window 1 (top-left): max(1, 3, 4, 6) = 6" in text
    assert "(8 + 3 + 3 + 6)/4 = 5" in explain.pool(kind="avg").text


def test_pool_padding_never_wins():
    r = explain.pool("1 2 3; 4 5 6; 7 8 9", size=3, stride=2, padding=1)
    np.testing.assert_array_equal(r.output, [[5, 6], [8, 9]])
    assert np.isneginf(r.windows[0].values[0, 0])
    with pytest.raises(ConfigError):
        explain.pool(kind="median")


# ----------------------------------------------------------------------------- size (§3.4)
@pytest.mark.parametrize(
    ("args", "kwargs", "out", "exact"),
    [
        ((6, 3), {}, 4, 4),
        ((6, 3), {"stride": 2}, 2, 2.5),
        ((100, 3), {"stride": 2, "padding": 1}, 50, 50.5),
        ((32, 3), {"padding": 1}, 32, 32),
        ((7, 3), {"dilation": 2}, 3, 3),
    ],
)
def test_size(args, kwargs, out, exact):
    r = explain.size(*args, **kwargs)
    assert r.output == out
    assert float(r.exact) == exact
    assert r.is_exact == (exact == out)


def test_size_explains_the_rounding():
    r = explain.size(6, 3, stride=2)
    assert r.windows_start == [0, 2]
    assert r.unused == 1  # the last column is never read
    assert "2.5" in r.text and "rounded down to 2" in r.text and "hang" in r.text
    with pytest.raises(ConfigError):
        explain.size(2, 3)


# ----------------------------------------------------------------------------- softmax (§6.2)
def test_softmax_notes_example():
    r = explain.softmax()
    total = math.exp(2.0) + math.exp(1.0) + math.exp(0.1)
    assert r.total == pytest.approx(total, rel=1e-12)
    assert round(r.total, 2) == 11.21
    assert r.rounded_terms_sum == pytest.approx(11.22)
    np.testing.assert_allclose(r.probabilities, [math.exp(z) / total for z in (2.0, 1.0, 0.1)], rtol=1e-12)
    assert [round(p, 2) for p in r.probabilities] == [0.66, 0.24, 0.10]
    assert "11.21" in r.text and "11.22" in r.text


def test_softmax_large_scores_do_not_overflow():
    r = explain.softmax("1000 999")
    np.testing.assert_allclose(r.probabilities, [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    assert r.notes_defaults is False and "overflow" in r.text


# ----------------------------------------------------------------------------- im2col (§11.1)
def test_im2col_symbolic_matrix_is_the_notes():
    r = explain.im2col()
    assert r.symbolic_patches.tolist() == [
        ["x11", "x12", "x21", "x22"],
        ["x12", "x13", "x22", "x23"],
        ["x21", "x22", "x31", "x32"],
        ["x22", "x23", "x32", "x33"],
    ]
    assert r.symbolic_weights.ravel().tolist() == ["w11", "w12", "w21", "w22"]


def test_im2col_numbers_and_product():
    r = explain.im2col()  # exercise 2's image and kernel
    np.testing.assert_array_equal(r.patches, [[2, 4, 3, 1], [4, 1, 1, 5], [3, 1, 0, 2], [1, 5, 2, 1]])
    np.testing.assert_array_equal(r.weights.ravel(), [0, 1, -1, 0])
    np.testing.assert_array_equal(r.output, [[1, 0], [1, 3]])
    assert r.matches_conv and r.exercise2
    assert "x11" in r.text


def test_im2col_padding_marks_padding():
    r = explain.im2col("1 2; 3 4", kernel="1 1; 1 1", padding=1)
    assert r.symbolic_patches[0].tolist() == ["0", "0", "0", "x11"]
    np.testing.assert_array_equal(
        r.output, loop_correlation(np.array([[1.0, 2], [3, 4]]), np.ones((2, 2)), 1, 1, 1)
    )


# ----------------------------------------------------------------------------- exercises (§14)
def test_exercises():
    r = explain.exercises()
    assert r["1.1"].computed == (24, 24)
    assert r["1.2"].computed == (50, 50)
    assert "50.5" in r["1.2"].comment
    assert r["1.3"].computed == (7, 7)
    np.testing.assert_array_equal(r["2"].computed, [[1, 0], [1, 3]])
    np.testing.assert_array_equal(r["3"].computed, [[8, 5], [7, 9]])
    assert all(x.agrees for x in r.results)
    assert "Exercise 1.2" in r.text


# ----------------------------------------------------------------------------- network (§5, §9)
def test_network_simple_cnn():
    r = explain.network("simple_cnn")
    assert [s.output_shape for s in r.steps] == [
        (32, 32, 32),
        (32, 32, 32),
        (32, 16, 16),
        (64, 16, 16),
        (64, 16, 16),
        (64, 8, 8),
        (4096,),
        (128,),
        (128,),
        (10,),
    ]
    assert [s.params for s in r.steps if s.params] == [896, 18_496, 524_416, 1_290]
    assert r.total_params == 896 + 18_496 + 524_416 + 1_290
    assert r.steps[0].macs == 32 * 32 * 32 * 3 * 3 * 3
    assert r.total_macs == sum(s.macs for s in r.steps)
    for text in (
        "3*3*3*32 + 32 = 896",
        "18,496",
        "524,416",
        "1,290",
        "(32 - 3 + 2*1) / 1 + 1 = 32",
        "8*8*64 = 4,096",
    ):
        assert text in r.text


def test_network_cats_dogs_says_padding_is_implied():
    r = explain.network("cats_dogs_cnn")
    assert r.steps[0].output_shape == (32, 128, 128)
    assert [s.output_shape for s in r.steps if s.kind == "Flatten"] == [(32_768,)]
    assert "P = 1" in r.text


def test_network_from_a_model_file_and_nested_models(tmp_path):
    from cnnkit.models import zoo

    model = zoo.get("lenet5", input_shape=(1, 28, 28), seed=1)
    path = tmp_path / "lenet.cnnkit"
    model.save(path)
    r = explain.network(path)
    assert r.total_params == model.count_params()
    assert r.steps[0].output_shape == (6, 28, 28)
    nested = explain.network(zoo.get("resnet18_small", seed=0))
    assert any(s.container for s in nested.steps)
    assert sum(s.params for s in nested.steps) == nested.total_params
    assert "rounded down" in nested.text  # stride-2 3x3 convolutions on even sizes


def test_network_unknown_name():
    with pytest.raises(ConfigError, match="zoo"):
        explain.network("no_such_model")


# ----------------------------------------------------------------------------- backprop (§7.2)
def _independent_loss(image, kernel, bias, w, b, label):
    conv = loop_correlation(image, kernel, 1, 0, 1) + bias
    act = np.maximum(conv, 0)
    pooled = act.reshape(2, 2, 2, 2).max(axis=(1, 3))
    logits = w @ pooled.ravel() + b
    logits = logits - logits.max()
    return -(logits[label] - math.log(np.exp(logits).sum()))


def test_backprop_gradients_match_finite_differences():
    r = explain.backprop()
    args = (r.image, r.kernel, r.conv_bias, r.dense_w, r.dense_b, r.label)
    assert _independent_loss(*args) == pytest.approx(r.loss, rel=1e-12)
    h = 1e-6
    numeric = np.zeros((2, 2))
    for idx in np.ndindex(2, 2):
        plus, minus = r.kernel.copy(), r.kernel.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (
            _independent_loss(r.image, plus, *args[2:]) - _independent_loss(r.image, minus, *args[2:])
        ) / (2 * h)
    np.testing.assert_allclose(r.dkernel, numeric, atol=1e-7)
    np.testing.assert_allclose(r.dkernel_numeric, numeric, atol=1e-7)
    db = (
        _independent_loss(r.image, r.kernel, r.conv_bias + h, *args[3:])
        - _independent_loss(r.image, r.kernel, r.conv_bias - h, *args[3:])
    ) / (2 * h)
    assert r.dconv_bias == pytest.approx(db, abs=1e-7)


def test_backprop_chain_rule_pieces():
    r = explain.backprop(lr=0.1)
    onehot = np.eye(3)[r.label]
    np.testing.assert_allclose(r.dlogits, r.probs - onehot)  # p - y
    np.testing.assert_allclose(r.dense_dw, np.outer(r.dlogits, r.flat))
    np.testing.assert_allclose(r.dflat, r.dense_w.T @ r.dlogits)
    # max pooling routes each gradient to one position only
    assert np.count_nonzero(r.drelu) == 4
    for (row, col), g in zip(r.max_positions, r.dpooled.ravel(), strict=True):
        assert r.drelu[row, col] == g
    np.testing.assert_allclose(r.dconv, r.drelu * (r.conv > 0))
    np.testing.assert_allclose(r.dkernel_by_correlation, r.dkernel)
    np.testing.assert_allclose(r.dimage_by_full_conv, r.dimage)
    np.testing.assert_allclose(r.kernel_new, r.kernel - 0.1 * r.dkernel)
    assert r.loss_after < r.loss
    assert "p - y" in r.text and "W_new = W_old - eta * dL/dW" in r.text
    with pytest.raises(ConfigError):
        explain.backprop(lr=-1)


# ----------------------------------------------------------------------------- CLI
def test_cli_explain_conv(capsys):
    assert main(["explain", "conv", "--image", "1 2 0; 0 1 3; 2 2 1", "--kernel", "1 0; 0 -1"]) == 0
    out = capsys.readouterr().out
    # by hand: [[1-1, 2-3], [0-2, 1-1]]
    assert "[  0  -1 ]" in out and "[ -2   0 ]" in out


def test_cli_explain_conv_defaults_mention_the_notes(capsys):
    assert main(["explain", "conv"]) == 0
    assert "[[0, 3], [2, -1]]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pool", "--kind", "avg"], "4.25"),
        (["size", "6", "3", "--stride", "2"], "2.5"),
        (["softmax"], "11.2125"),
        (["softmax", "-1", "1"], "0.1192"),
        (["im2col"], "x23"),
        (["exercises"], "Exercise 3"),
        (["network", "simple_cnn"], "524,416"),
        (["network", "lenet5", "--input-shape", "1,28,28"], "28x28x6"),
        (["backprop", "--lr", "0.05"], "eta = 0.05"),
    ],
)
def test_cli_explain_topics(capsys, argv, expected):
    assert main(["explain", *argv]) == 0
    assert expected in capsys.readouterr().out


def test_cli_explain_errors_and_help(capsys):
    assert main(["explain", "conv", "--image", "1 2; 3"]) == 2
    assert "explain.conv" in capsys.readouterr().err
    for topic in ("conv", "pool", "size", "softmax", "im2col", "exercises", "network", "backprop"):
        with pytest.raises(SystemExit) as exc:
            main(["explain", topic, "--help"])
        assert exc.value.code == 0
    assert "--flip" in capsys.readouterr().out
