"""Split a compiled kernel's images across threads (the kernels release the GIL).

Most of cnnkit's work is BLAS, which brings its own threads. Compiled kernels that take an image range
``(n0, n1)`` run here: the direct first-layer convolution (:mod:`._direct_kernels`) and the 2x2 max
pooling (:mod:`._pool_kernels`). :func:`run_split` hands out chunks of images from a shared counter to
this thread and ``threads() - 1`` helpers, so a thread that gets less CPU simply takes fewer chunks.

A helper only gets a core when OpenBLAS's idle worker threads let it go: they spin after each GEMM for
``OPENBLAS_THREAD_TIMEOUT`` (2^28 cycles, about 0.1 s, by default) without yielding, so in a network,
where GEMMs run every few milliseconds, the helper found no free core and the split ran no faster.
:func:`cnnkit.runtime.tune` (which the ``cnnkit`` command calls) shortens that spin. Measured on the 2-core project
machine, alternating in one process: notes §5's forward pass at batch 64 16.3 -> 13.3 ms with the direct
layer split; the pooling split gained 2-5% on LeNet-5's training step and nothing measurable on §5's.
Splitting the Winograd transforms gained nothing (each runs for ~0.25 ms right after a GEMM, inside the
shortened spin), so they stay serial.

Threads: every CPU this process may run on, or what :func:`set_threads` says (the CLI's
``--threads`` sets it together with the BLAS threads). The pool is made on first use and dropped in
a forked child (its threads do not survive ``fork``); the fork hook that drops it is registered when the
first pool is made, so importing this module changes nothing in the process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["configured_threads", "run_split", "set_threads", "threads"]

_threads: int | None = None  # None: every CPU this process may run on
_pool: ThreadPoolExecutor | None = None
_fork_hook = False


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads() -> int:
    """Threads :func:`run_split` uses (this one included)."""
    return _threads if _threads is not None else _cpus()


def configured_threads() -> int | None:
    """What :func:`set_threads` last set (None: every available CPU)."""
    return _threads


def set_threads(count: int | None) -> None:
    """Use ``count`` threads (>= 1) from now on; None goes back to every available CPU."""
    global _threads, _pool
    if count is not None and count < 1:
        raise ValueError(f"set_threads: count must be >= 1 or None, got {count}")
    _threads = count
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None


def _drop_pool_in_child() -> None:
    global _pool
    _pool = None


def _register_fork_hook() -> None:
    """Drop the pool in a forked child; registered once, with the first pool."""
    global _fork_hook
    if not _fork_hook and hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
        os.register_at_fork(after_in_child=_drop_pool_in_child)
    _fork_hook = True


def run_split(kernel: Callable[..., Any], n: int, *args: Any, chunk: int | None = None) -> None:
    """Call ``kernel(*args, n0, n1)`` over consecutive ranges covering ``[0, n)``, in parallel.

    ``chunk`` images per call (default: a quarter of each thread's share, at least 1). With one
    thread, or one image, it is a single call ``kernel(*args, 0, n)``. A helper's exception is
    raised here, after every helper has finished.
    """
    global _pool
    workers = min(threads(), n)
    if workers <= 1:
        kernel(*args, 0, n)
        return
    size = chunk if chunk is not None else max(1, -(-n // (4 * workers)))
    starts = itertools.count(0, size)  # next() on a count is atomic under the GIL

    def work() -> None:
        for n0 in starts:
            if n0 >= n:
                return
            kernel(*args, n0, min(n, n0 + size))

    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor  # here: ~9 ms of start-up otherwise

        _register_fork_hook()
        _pool = ThreadPoolExecutor(max_workers=threads() - 1, thread_name_prefix="cnnkit")
    futures = [_pool.submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
