"""Seeding: one global generator, and deterministic per-layer seeds derived from a parent seed.

``cnnkit.set_seed(n)`` reseeds the global generator; a layer or model created with ``seed=`` uses its own
generator, so the same seed gives the same weights bit for bit whatever else ran before.
"""

from __future__ import annotations

import zlib

import numpy as np

_GLOBAL = np.random.default_rng()


def set_seed(seed: int | None) -> None:
    """Reseed the global generator used by layers and loaders that were given no seed."""
    global _GLOBAL
    _GLOBAL = np.random.default_rng(seed)


def global_rng() -> np.random.Generator:
    """The global generator."""
    return _GLOBAL


def make_rng(seed: int | None) -> np.random.Generator:
    """A fresh generator for ``seed``, or the global generator when ``seed`` is None."""
    return _GLOBAL if seed is None else np.random.default_rng(seed)


def child_seed(seed: int, key: str) -> int:
    """A seed for the child called ``key`` of something seeded with ``seed`` (stable across runs)."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())]).generate_state(1)[0]
    )


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` samples: a permutation drawn from ``(seed, epoch)``.

    The one shuffling recipe of cnnkit: :class:`cnnkit.data.DataLoader` and ``fit`` on arrays both use
    it, so the same seed visits the samples in the same order whichever way the data comes.
    """
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(int(n))
