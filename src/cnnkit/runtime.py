"""Process tuning for speed: an explicit choice, never a side effect of ``import cnnkit``.

``import cnnkit`` changes nothing in the process: no environment variable, no BLAS or malloc setting, no
fork hook. A program that owns its process (the ``cnnkit`` command, a training script, the benchmark)
turns the tuning on; a library host (a notebook, a server) may leave it off, or scope it:

>>> import cnnkit.runtime
>>> cnnkit.runtime.tune()                      # the whole process, as the ``cnnkit`` command does
>>> with cnnkit.runtime.tuned(threads=2):      # or only for a block; what can be restored is restored
...     model.fit(x, y)                        # doctest: +SKIP

What it tunes:

1. **OpenBLAS's idle spin.** After each GEMM, OpenBLAS's worker threads keep spinning, without yielding
   the CPU, for ``OPENBLAS_THREAD_TIMEOUT`` before they sleep: 2^28 CPU cycles (about 0.1 s) by default.
   A network runs a GEMM every few milliseconds, so the workers never sleep, and while cnnkit's compiled
   kernels run (pooling, col2im, the Winograd transforms, the direct first layer) they hold the other
   cores. :data:`OPENBLAS_THREAD_TIMEOUT` (2^20 cycles, about 0.4 ms) lets them go. Measured on the
   2-core project machine (AMD EPYC, AVX2), in processes alternating the two settings: notes §5's network
   ran inference at batch 64 in 11.3 instead of 14.2 ms and a batch-256 training step in 116-139
   instead of 141-178 ms, and the direct first layer's second thread (:mod:`cnnkit.ops._parallel`) got a
   core at all. Shorter timeouts (2^16 and below) were slower. The variable is set (a value the user set
   is kept), and each OpenBLAS already loaded into the process is asked to re-read it
   (``openblas_read_env``) and to stop its worker threads (``blas_thread_shutdown_``, what OpenBLAS runs
   before every ``fork``); the next GEMM starts them again with the short spin. Where that is not
   possible (another BLAS, no such symbols, not Linux) nothing changes. MKL and Accelerate ignore it.
2. **glibc malloc thresholds.** A training step allocates and frees the same large temporaries every
   step; glibc's default sliding ``mmap`` threshold returns them to the system and the next step faults
   them in again (~3,000 page faults per step). :func:`cnnkit.utils.memory.keep_freed_memory` fixes the
   thresholds so freed blocks are reused (10-20% faster steps, peak memory unchanged). glibc has no way
   to read the previous values back, so this one **cannot be undone**: :func:`tune` sets it,
   :func:`tuned` sets it only when asked (``malloc=True``). ``fit`` itself never calls ``mallopt``.
3. **Threads** (optional, ``threads=N``): the BLAS threads (threadpoolctl) and cnnkit's own kernel
   threads (:func:`cnnkit.ops._parallel.set_threads`). :func:`tuned` puts both back.

:func:`state` reports what is on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .utils import memory as _memory
from .utils.checks import check_int

__all__ = ["OPENBLAS_THREAD_TIMEOUT", "RuntimeState", "openblas_thread_timeout", "state", "tune", "tuned"]

#: log2 of OpenBLAS's idle spin in CPU cycles that the tuning sets (OpenBLAS accepts 4..30).
OPENBLAS_THREAD_TIMEOUT = "20"
_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"


@dataclass(frozen=True)
class RuntimeState:
    """What :func:`state` returns: which tunings are in effect in this process."""

    blas_spin: bool
    malloc: bool
    threads: int | None


_blas_spin_on = False
_threads: int | None = None


# ---------------------------------------------------------------------------------------------- OpenBLAS
def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _openblas_libs() -> list[Any]:
    import ctypes  # here: a program that never tunes never loads ctypes for it

    libs = []
    for path in _loaded_openblas():
        try:
            libs.append(
                ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            )  # the loaded copy, not a new one
        except OSError:
            continue
    return libs


def _reload_openblas() -> bool:
    """Make each loaded OpenBLAS re-read its environment and restart its threads; True if any did."""
    done = False
    for lib in _openblas_libs():
        try:
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except AttributeError:
            continue
        read_env()
        shutdown()
        done = True
    return done


def openblas_thread_timeout() -> int | None:
    """The idle-spin setting the loaded OpenBLAS read (log2 cycles; 0 means its default, 2^28), or
    None when no OpenBLAS with that query is loaded."""
    import ctypes

    for lib in _openblas_libs():
        try:
            query = lib.openblas_thread_timeout
        except AttributeError:
            continue
        query.restype = ctypes.c_int
        return int(query())
    return None


def _set_blas_spin(value: str | None) -> bool:
    """Set (or with None remove) the variable and make a loaded OpenBLAS re-read it."""
    if value is None:
        os.environ.pop(_VARIABLE, None)
    else:
        os.environ[_VARIABLE] = value
    if "numpy" not in sys.modules:  # OpenBLAS is not loaded yet: it reads the variable when it is
        return True
    return _reload_openblas()


def _shorten_blas_spin() -> tuple[bool, str | None]:
    """Turn the short spin on; returns (on, the variable's previous value)."""
    previous = os.environ.get(_VARIABLE)
    if previous:  # the user's own choice wins and stays
        return False, previous
    if _set_blas_spin(OPENBLAS_THREAD_TIMEOUT):
        return True, previous
    os.environ.pop(_VARIABLE, None)  # no OpenBLAS took it: report what runs
    return False, previous


# ---------------------------------------------------------------------------------------------- threads
def _check_threads(threads: Any, where: str) -> int | None:
    if threads is None:
        return None
    return check_int(threads, "threads", where, 1)


def _set_threads(count: int | None) -> Any:
    """Limit BLAS and kernel threads to ``count``; returns an undo callable."""
    from .ops import _parallel

    previous_kernel = _parallel.configured_threads()
    _parallel.set_threads(count)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl BLAS keeps its default
        threadpool_limits = None
    if threadpool_limits is not None:
        limiter = threadpool_limits(limits=count, user_api="blas")

    def undo() -> None:
        if limiter is not None:
            limiter.restore_original_limits()
        _parallel.set_threads(previous_kernel)

    return undo


# ---------------------------------------------------------------------------------------------- public
def state() -> RuntimeState:
    """Which tunings are in effect now."""
    return RuntimeState(blas_spin=_blas_spin_on, malloc=_memory.freed_memory_kept(), threads=_threads)


def tune(*, threads: int | None = None, blas_spin: bool = True, malloc: bool = True) -> RuntimeState:
    """Tune the whole process for training and inference speed (see the module docstring); returns
    :func:`state`. What the ``cnnkit`` command does at start-up. Calling it again is harmless.

    ``threads`` limits BLAS and kernel threads for the rest of the process (None: leave them).
    """
    global _blas_spin_on, _threads
    count = _check_threads(threads, "cnnkit.runtime.tune")
    if blas_spin and not _blas_spin_on:
        _blas_spin_on, _ = _shorten_blas_spin()
    if malloc:
        _memory.keep_freed_memory()
    if count is not None:
        _set_threads(count)
        _threads = count
    return state()


@contextlib.contextmanager
def tuned(
    *, threads: int | None = None, blas_spin: bool = True, malloc: bool = False
) -> Iterator[RuntimeState]:
    """:func:`tune` for the block, then put back what can be put back.

    The BLAS spin variable and OpenBLAS's setting, and the thread limits, are restored on exit. The
    malloc thresholds cannot be (glibc cannot report its previous values), so they are left alone unless
    ``malloc=True``, which sets them for the rest of the process.
    """
    global _blas_spin_on, _threads
    count = _check_threads(threads, "cnnkit.runtime.tuned")
    undo_spin = False
    previous_spin: str | None = None
    if blas_spin and not _blas_spin_on:
        on, previous_spin = _shorten_blas_spin()
        undo_spin = on
        _blas_spin_on = on or _blas_spin_on
    if malloc:
        _memory.keep_freed_memory()
    undo_threads = None
    previous_threads = _threads
    if count is not None:
        undo_threads = _set_threads(count)
        _threads = count
    try:
        yield state()
    finally:
        if undo_threads is not None:
            undo_threads()
            _threads = previous_threads
        if undo_spin:
            _set_blas_spin(previous_spin)
            _blas_spin_on = False
