"""The ops' argument helpers: a re-export of :mod:`cnnkit.utils.checks` (their public home)."""

from ..utils.checks import Padding4, Pair, check_array, check_int, is_int, pair

__all__ = ["Padding4", "Pair", "check_array", "check_int", "is_int", "pair"]
