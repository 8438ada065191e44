"""Keep freed memory in the process: fixed glibc malloc thresholds, set once per process.

A training step allocates and frees the same large temporaries (im2col matrices, activations, gradients)
every step. glibc serves blocks above ``M_MMAP_THRESHOLD`` with fresh ``mmap`` pages and returns them to
the system on ``free``; its sliding threshold and ``M_TRIM_THRESHOLD`` make this depend on history, so a
NumPy step takes thousands of page faults (measured: ~3,000 faults and 14 ms of system time per step) and
throughput swings between processes. :func:`keep_freed_memory` fixes both thresholds high, so freed
blocks stay in the heap and the next step reuses them (page faults to 0, 10-20% faster; see
the project's measured speed notes, point 3; see ``benchmarks/README.md``).

Nothing in cnnkit calls it on its own: :func:`cnnkit.runtime.tune` does (the ``cnnkit`` command turns
that on; a Python program chooses it). The setting is process-wide: it affects every allocation of the process (NumPy, other libraries), and
memory a step freed is kept for reuse instead of being returned to the system, so the resident size stays
near the peak of a step. Peak memory does not grow. It is a no-op where glibc's ``mallopt`` is not
available (macOS, Windows, musl).
"""

from __future__ import annotations

import sys

__all__ = ["freed_memory_kept", "keep_freed_memory"]

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: 1 GiB: ``M_MMAP_THRESHOLD`` may not exceed ``HEAP_MAX`` (32 MiB on 64-bit glibc), so that one is
#: capped; trimming is effectively off at 1 GiB.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when they are (now or before) set.

    Process-wide and permanent for the process (see the module docstring). Returns False, doing
    nothing, on platforms without glibc's ``mallopt``. Calling it again does nothing.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only a program that asks for the tuning loads it
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _done = bool(ok)
    return _done


def freed_memory_kept() -> bool:
    """True when :func:`keep_freed_memory` has set the thresholds in this process."""
    return bool(_done)
