"""Float32 accuracy: cnnkit's fast paths against a float64 reference, beside PyTorch's float32.

Errors are norm-wise, ``||a32 - a64|| / ||a64||`` (an element-wise relative error is meaningless for
gradients that are zero in exact arithmetic, see benchmarks/bench_accuracy.py). The whole-model check
uses the benchmark's own functions, on real, normalised data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cnnkit.ops.policy as policy
import cnnkit.ops.winograd as winograd
from cnnkit.ops import conv2d_backward, conv2d_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

torch = pytest.importorskip("torch")


def _rel(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(approx.astype(np.float64) - exact) / np.linalg.norm(exact))


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _layer_errors(x, w, dy, monkeypatch, *, winograd_on: bool) -> tuple[list[float], bool]:
    """Norm-wise errors of (out, dx, dw) in float32 against the same convolution in float64."""
    monkeypatch.setattr(policy, "WINOGRAD_MIN_CHANNELS", 16 if winograd_on else 1 << 30)
    out, cache = conv2d_forward(x, w, None, padding=1)
    dx, dw, _ = conv2d_backward(dy, cache)
    monkeypatch.setattr(policy, "WINOGRAD_MIN_CHANNELS", 1 << 30)  # the reference: float64 im2col
    out64, cache64 = conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, padding=1)
    dx64, dw64, _ = conv2d_backward(dy.astype(np.float64), cache64)
    return [_rel(out, out64), _rel(dx, dx64), _rel(dw, dw64)], cache.path == "winograd"


@pytest.mark.parametrize(("n", "c", "f", "size"), [(8, 32, 32, 16), (8, 64, 128, 8)])
def test_winograd_float32_error_is_close_to_im2col(n, c, f, size, monkeypatch):
    """F(4x4, 3x3)'s transforms grow the values ~10x before the 36 GEMMs, so float32 products cost
    ~8x im2col's error (measured 1.4e-6 against 2e-7 forward, 1.7e-6 against 1.5e-7 for dx, 2.3e-6
    against 2.2e-7 for dw); with everything between input and output in float64 (MIXED_PRECISION) the
    result is rounded once and beats im2col's float32 sums (4.6e-8, 8.4e-8, 6.9e-8)."""
    rng = np.random.default_rng(7)
    x = _channels_last(np.maximum(rng.standard_normal((n, c, size, size)), 0).astype(np.float32))
    w = (rng.uniform(-1, 1, (f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    dy = _channels_last(rng.standard_normal((n, f, size, size)).astype(np.float32))
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    fast, used = _layer_errors(x, w, dy, monkeypatch, winograd_on=True)
    assert used, "the convolution did not take the Winograd path"
    direct, used = _layer_errors(x, w, dy, monkeypatch, winograd_on=False)
    assert not used
    for name, e_fast, e_direct in zip(("forward", "dx", "dw"), fast, direct, strict=True):
        assert e_fast <= e_direct, f"{name}: Winograd {e_fast:.2e} against im2col {e_direct:.2e}"


def test_float32_products_are_less_accurate(monkeypatch):
    """The switch does what it says: without mixed precision the forward error is several times larger
    (so the test above would fail without it)."""
    rng = np.random.default_rng(8)
    x = _channels_last(np.maximum(rng.standard_normal((8, 32, 16, 16)), 0).astype(np.float32))
    w = (rng.uniform(-1, 1, (32, 32, 3, 3)) / np.sqrt(9 * 32)).astype(np.float32)
    dy = _channels_last(rng.standard_normal((8, 32, 16, 16)).astype(np.float32))
    monkeypatch.setattr(winograd, "MIXED_PRECISION", False)
    single, used = _layer_errors(x, w, dy, monkeypatch, winograd_on=True)
    assert used
    monkeypatch.setattr(winograd, "MIXED_PRECISION", True)
    mixed, _ = _layer_errors(x, w, dy, monkeypatch, winograd_on=True)
    assert all(a > 4 * b for a, b in zip(single, mixed, strict=True)), (single, mixed)


def test_products_dtype():
    assert winograd.product_dtype(np.float32) == (np.float64 if winograd.MIXED_PRECISION else np.float32)
    assert winograd.product_dtype(np.float64) == np.float64


@pytest.mark.parametrize(("name", "batch"), [("simple_cnn", 16), ("lenet5", 16)])
def test_model_gradients_within_10x_of_pytorch(name, batch):
    """The speed issue's bound: cnnkit's float32 parameter gradients are within 10x of PyTorch's float32
    error against a float64 reference, on real normalised data (shapes; Fashion-MNIST for LeNet-5).
    simple_cnn's second convolution runs Winograd (fused with ReLU and pooling) at this batch size."""
    from bench_accuracy import FLIP_LEVEL, INPUT_SHAPES, measure_errors, normalised_batch
    from cnnkit.models import zoo

    model = zoo.get(name, input_shape=INPUT_SHAPES.get(name), seed=0)
    x, y = normalised_batch(name, model.input_shape, batch, seed=3, data="real")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its OpenMP workers otherwise spin against OpenBLAS's
    try:
        errors = measure_errors(model, x, y, check_f64=True)
    finally:
        torch.set_num_threads(threads)
    assert errors.f64_check < 1e-10, "cnnkit's float64 pass disagrees with PyTorch's"
    assert not errors.zero
    # a flip (float32 and float64 taking other ReLU / pooling branches) would show as ~1e-3
    assert errors.median_torch < FLIP_LEVEL and errors.median_cnnkit < FLIP_LEVEL
    assert errors.median_cnnkit <= 10 * errors.median_torch, (errors.median_cnnkit, errors.median_torch)
    assert errors.logits_cnnkit <= 10 * errors.logits_torch
    worst = max(errors.grads_cnnkit.values())
    assert worst <= 10 * max(errors.grads_torch.values()), errors.grads_cnnkit
