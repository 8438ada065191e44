"""Inverted dropout (notes §10.2, §12 tip 5: "use dropout, prevents overfitting").

In training each element is kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, so the
expected output equals the input and inference needs no rescaling: ``y = x * m / (1 - rate)`` with
``m ~ Bernoulli(1 - rate)``. In inference (or with ``rate == 0``) dropout is the identity.

**Keyed masks.** With ``key=(k0, k1)``, ``step`` and ``offset``, the uniform draws of sample ``i`` of the
batch are a pure function of ``(key, step, offset + i)``: a counter-based generator (Philox4x64) keyed
by ``key`` whose 256-bit counter starts at ``(offset + i) * blocks`` in its low word and ``step`` in its
third word. A batch split into parts (``offset`` = the index of the part's first sample in the whole
batch) then gets, sample by sample, the masks the whole batch gets: what training on several processes
needs (:mod:`cnnkit.training.distributed`), and what :class:`cnnkit.layers.Dropout` uses.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..utils.random import global_rng
from ._args import check_array, is_int

__all__ = ["dropout", "dropout_forward", "dropout_backward", "check_rate", "keyed_uniform"]

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


def _check_key(key: Any) -> np.ndarray:
    ok = isinstance(key, (tuple, list, np.ndarray)) and len(key) == 2
    ok = ok and all(is_int(k) and 0 <= int(k) < 2**64 for k in key)
    if not ok:
        raise ConfigError(f"dropout: key must be a pair of ints in [0, 2**64), got {key!r:.80}")
    return np.array([int(k) for k in key], dtype=np.uint64)


def keyed_uniform(shape: tuple[int, ...], dtype: Any, key: Any, step: int, offset: int = 0) -> np.ndarray:
    """Uniform ``[0, 1)`` draws of ``shape`` (``shape[0]`` samples) keyed by ``(key, step, offset + i)``.

    Row ``i`` is the same whatever the batch it is drawn in: ``keyed_uniform((n, ...), dt, k, s, o)[i]``
    equals ``keyed_uniform((1, ...), dt, k, s, o + i)[0]`` bit for bit. Each sample takes a whole number
    of Philox blocks (4 x 64 bits: 8 float32 or 4 float64 draws), so one vectorised draw covers them all.
    """
    dtype = np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)
    if not (is_int(step) and 0 <= int(step) < 2**64 and is_int(offset) and 0 <= int(offset) < 2**40):
        raise ConfigError(f"dropout: step and offset must be ints >= 0, got step={step!r}, offset={offset!r}")
    n = int(shape[0])
    per_sample = int(np.prod(shape[1:], dtype=np.int64))
    per_block = 8 if dtype == np.float32 else 4
    padded = -(-per_sample // per_block) * per_block
    blocks = padded // per_block
    bitgen = np.random.Philox(key=_check_key(key), counter=[int(offset) * blocks, 0, int(step), 0])
    u = np.random.Generator(bitgen).random((n, padded), dtype=dtype)
    if padded != per_sample:
        u = u[:, :per_sample]
    return u.reshape(shape)


def dropout_forward(
    x: np.ndarray,
    rate: float,
    training: bool = True,
    rng: RngLike = None,
    *,
    key: Any = None,
    step: int = 0,
    offset: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverted dropout: ``y = x * mask`` with ``mask = [u >= rate] / (1 - rate)``, ``u ~ U[0, 1)``.

    ``rng``: a numpy Generator (advanced by the draw), an int seed (same seed, same mask), or None for
    cnnkit's global generator (:func:`cnnkit.set_seed`). Or ``key`` (two 64-bit ints) with ``step`` and
    ``offset``: per-sample keyed masks (:func:`keyed_uniform`, see the module docstring), which depend
    on the sample's index ``offset + i`` and not on how the batch was split; ``rng`` must then be None.
    Returns ``(y, cache)``; the cache is the scaled mask, or None when dropout is the identity (not
    training, or ``rate == 0``).
    """
    x = check_array(x, "dropout")
    rate = check_rate(rate)
    if key is not None and rng is not None:
        raise ConfigError("dropout: give either rng or key (keyed per-sample masks), not both")
    if not training or rate == 0.0:
        return x, None
    if key is not None:
        if x.ndim < 1:
            raise ShapeError(f"dropout: keyed masks need a batch axis, got shape {x.shape}")
        u = keyed_uniform(x.shape, x.dtype, key, step, offset)
    else:
        u = _generator(rng).random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
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


def dropout(
    x: np.ndarray,
    rate: float,
    training: bool = True,
    rng: RngLike = None,
    *,
    key: Any = None,
    step: int = 0,
    offset: int = 0,
) -> np.ndarray:
    """Inverted dropout, forward only. See :func:`dropout_forward`."""
    return dropout_forward(x, rate, training, rng, key=key, step=step, offset=offset)[0]
