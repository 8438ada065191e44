"""Inverted dropout (notes §10.2, §12 tip 5: "use dropout, prevents overfitting").

In training each element is kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, so the
expected output equals the input and inference needs no rescaling: ``y = x * m / (1 - rate)`` with
``m ~ Bernoulli(1 - rate)``. In inference (or with ``rate == 0``) dropout is the identity.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..utils.random import global_rng
from ._args import check_array, is_int

__all__ = ["dropout", "dropout_forward", "dropout_backward", "check_rate"]

RngLike = np.random.Generator | int | None


def check_rate(rate: Any, op: str = "dropout") -> float:
    """Return ``rate`` as a float after checking it is a real number in [0, 1)."""
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"{op}: rate must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _generator(rng: RngLike) -> np.random.Generator:
    if rng is None:
        return global_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if is_int(rng):
        return np.random.default_rng(int(rng))
    raise ConfigError(
        f"dropout: rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}"
    )


def dropout_forward(
    x: np.ndarray, rate: float, training: bool = True, rng: RngLike = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverted dropout: ``y = x * mask`` with ``mask = [u >= rate] / (1 - rate)``, ``u ~ U[0, 1)``.

    ``rng``: a numpy Generator (advanced by the draw), an int seed (same seed, same mask), or None for
    cnnkit's global generator (:func:`cnnkit.set_seed`). Returns ``(y, cache)``; the cache is the scaled
    mask, or None when dropout is the identity (not training, or ``rate == 0``).
    """
    x = check_array(x, "dropout")
    rate = check_rate(rate)
    if not training or rate == 0.0:
        return x, None
    gen = _generator(rng)
    u = gen.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    mask = np.multiply(u >= rate, 1.0 / (1.0 - rate), dtype=x.dtype)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """dL/dx of dropout: ``dout * mask`` with the same scaled mask (``dout`` itself for the identity)."""
    dout = check_array(dout, "dropout_backward", name="dout")
    if cache is None:
        return dout
    if dout.shape != cache.shape:
        raise ShapeError(
            f"dropout_backward: dout must have the output's shape {cache.shape}, got {dout.shape}"
        )
    return dout * cache


def dropout(x: np.ndarray, rate: float, training: bool = True, rng: RngLike = None) -> np.ndarray:
    """Inverted dropout, forward only. See :func:`dropout_forward`."""
    return dropout_forward(x, rate, training, rng)[0]
