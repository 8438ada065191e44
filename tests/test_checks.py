"""cnnkit.utils.checks: the one public place for argument checks (ops/_args.py re-exports it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit.errors import ConfigError
from cnnkit.ops import _args
from cnnkit.utils import checks


def test_ops_args_is_the_same_helpers():
    for name in ("check_int", "check_array", "pair", "is_int"):
        assert getattr(_args, name) is getattr(checks, name)


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), np.int64(3)])
def test_check_number_accepts_numbers_in_range(value):
    assert checks.check_number(value, "x", "op", low=0.0, low_open=True) == float(value)


@pytest.mark.parametrize(
    "value, kwargs, match",
    [
        (True, {}, r"^op: x must be a number \(finite\), got True"),
        ("1", {}, "got '1'"),
        (math.nan, {}, "got nan"),
        (math.inf, {"low": 0.0}, r"a number >= 0, got inf"),
        (0.0, {"low": 0.0, "low_open": True}, r"a number > 0, got 0.0"),
        (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, r"a number in \[0, 1\), got 1.0"),
        (None, {"high": 1.0}, r"a number <= 1, got None"),
        (-1, {"low": 0.0, "kind": "a fraction", "optional": True}, r"a fraction >= 0 or None, got -1"),
    ],
)
def test_check_number_names_op_range_and_value(value, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        checks.check_number(value, "x", "op", **kwargs)


def test_check_number_optional_lets_none_through():
    assert checks.check_number(None, "x", "op", optional=True) is None


def test_check_choice():
    assert checks.check_choice(2, "verbose", "fit", (0, 1, 2)) == 2
    with pytest.raises(ConfigError, match=r"^fit: verbose must be one of 0, 1, 2, got True"):
        checks.check_choice(True, "verbose", "fit", (0, 1, 2))
    with pytest.raises(ConfigError, match="got \\[1\\]"):
        checks.check_choice([1], "verbose", "fit", (0, 1, 2))
