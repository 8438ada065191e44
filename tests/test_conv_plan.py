"""The convolution planner (cnnkit.ops.conv_plan): one path per convolution, decided from the shapes,
and typed caches that name it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cnnkit.ops.policy as policy
from cnnkit.errors import ConfigError, DTypeError, ShapeError
from cnnkit.ops import conv2d_backward, conv2d_forward
from cnnkit.ops.conv import PATH_MODULES
from cnnkit.ops.conv_plan import PATHS, ConvCache, ConvPlan, conv_plan


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "path"),
    [
        ((2, 5, 4, 4), (7, 5, 1, 1), {}, "pointwise"),
        ((2, 5, 4, 4), (7, 5, 1, 1), {"stride": 2}, "im2col"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": 1}, "planar"),
        ((2, 3, 8, 8), (4, 3, 1, 1), {}, "pointwise"),  # 1x1 wins over planar
        ((2, 4, 8, 8), (4, 4, 3, 3), {"padding": 1}, "im2col"),
        ((2, 6, 8, 8), (6, 2, 3, 3), {"groups": 3}, "grouped"),
        ((1, 16, 8, 8), (16, 16, 3, 3), {"padding": 1}, "im2col"),  # one small image: NumPy only
    ],
)
def test_paths_by_shape(x_shape, w_shape, kwargs, path):
    plan = conv_plan(x_shape, w_shape, dtype=np.float64, **kwargs)
    assert isinstance(plan, ConvPlan) and plan.path == path and plan.path in PATHS
    assert plan.filters == w_shape[0] and plan.dtype == np.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.path = "im2col"  # type: ignore[misc]


def test_winograd_and_compiled_flags_follow_the_policy(monkeypatch):
    x_shape, w_shape = (1, 16, 8, 8), (16, 16, 3, 3)
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)
    if not policy.numba_on():
        pytest.skip("Numba not available")
    assert conv_plan(x_shape, w_shape, padding=1).path == "winograd"
    assert conv_plan(x_shape, w_shape, padding=1, stride=2).path == "im2col"
    assert conv_plan((2, 3, 8, 8), (4, 3, 3, 3)).compiled
    monkeypatch.setattr(policy, "WINOGRAD_MIN_CHANNELS", 32)
    assert conv_plan(x_shape, w_shape, padding=1).path == "im2col"
    monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 1 << 62)
    assert not conv_plan((2, 3, 8, 8), (4, 3, 3, 3)).compiled


def test_planner_errors_match_conv2d_forward():
    with pytest.raises(ShapeError, match="channel mismatch"):
        conv_plan((2, 4, 8, 8), (4, 3, 3, 3))
    with pytest.raises(ConfigError, match="groups=3 must divide the input channels"):
        conv_plan((2, 4, 8, 8), (6, 1, 3, 3), groups=3)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        conv_plan((2, 3, 2, 2), (4, 3, 3, 3))
    with pytest.raises(DTypeError, match="float32 or float64"):
        conv_plan((2, 3, 8, 8), (4, 3, 3, 3), dtype=np.int32)
    with pytest.raises(ShapeError, match="4 dimensions"):
        conv_plan((2, 3, 8), (4, 3, 3, 3))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [
        ((2, 5, 4, 4), (7, 5, 1, 1), {}),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": 1}),
        ((2, 4, 8, 8), (4, 4, 3, 3), {"padding": 1}),
        ((2, 6, 8, 8), (6, 2, 3, 3), {"groups": 3}),
    ],
)
def test_each_cache_names_the_path_that_ran(x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    out, cache = conv2d_forward(x, w, None, **kwargs)
    plan = conv_plan(x_shape, w_shape, dtype=x.dtype, **kwargs)
    assert isinstance(cache, ConvCache) and cache.plan == plan and cache.path == plan.path
    assert type(cache).__module__ == PATH_MODULES[plan.path].__name__


def test_backward_refuses_a_foreign_cache():
    out, cache = conv2d_forward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ConfigError, match="cache must come from conv2d_forward"):
        conv2d_backward(np.ones_like(out), ("cols", "wmat"))
    with pytest.raises(ShapeError, match="dout must have the output's shape"):
        conv2d_backward(np.ones((1, 1, 3, 3)), cache)
