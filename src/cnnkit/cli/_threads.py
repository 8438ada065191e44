"""``--threads``: how many BLAS and kernel threads a subcommand uses."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator

from ._table import warn


def auto_threads(cores: int, load: float) -> int:
    """Idle cores, rounded, at least 1: ``clip(round(cores - load), 1, cores)``, for ``load`` cores kept
    busy by other processes (:func:`busy_cores`, or the load average where that is not available).

    A multi-threaded BLAS on cores that other processes keep busy waits for its own threads: measured
    10x slower than one thread on a 2-core machine with a load average of 5.
    """
    return max(1, min(cores, int(cores - load + 0.5)))


@contextlib.contextmanager
def blas_threads(threads: int | str | None, cmd: str) -> Iterator[int | None]:
    """Limit BLAS threads (threadpoolctl) and cnnkit's own kernel threads (:mod:`cnnkit.ops._parallel`)
    to ``threads`` or the :func:`auto_threads` choice for the block.

    Yields the limit set, or None when nothing was changed (threadpoolctl missing, no load average).
    """
    from ..ops import _parallel

    limit = _thread_limit(threads, cmd)
    if limit is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    _parallel.set_threads(limit)
    try:
        with threadpool_limits(limits=limit, user_api="blas"):
            yield limit
    finally:
        _parallel.set_threads(None)


def _thread_limit(threads: int | str | None, cmd: str) -> int | None:
    if threads is None:
        return None
    if importlib.util.find_spec("threadpoolctl") is None:
        if threads != "auto":
            warn(cmd, "--threads needs threadpoolctl (pip install threadpoolctl); using NumPy's default")
        return None
    if threads == "auto":
        load = busy_cores()
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (OSError, AttributeError):  # no load average on this platform
                return None
        return auto_threads(os.cpu_count() or 1, load)
    return int(threads)


def _proc_stat_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot, summed over CPUs (Linux ``/proc/stat``:
    user, nice, system, irq, softirq and steal; not idle or iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def busy_cores(
    window: float = 0.25,
    read_busy: Callable[[], float] = _proc_stat_busy_seconds,
    own_seconds: Callable[[], float] = lambda: sum(os.times()[:2]),
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> float | None:
    """How many cores other processes keep busy now: their CPU time over ``window`` seconds of wall time.

    Better than the load average for ``--threads auto``: that average decays over a minute, so
    processes that just finished (a previous training run, a benchmark) still count and the main job
    ran on one thread of two (80.6 s against 73.7 s). None where ``/proc/stat`` is not readable.
    """
    import time

    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    try:
        t0, busy0, own0 = clock(), read_busy(), own_seconds()
        sleep(window)
        t1, busy1, own1 = clock(), read_busy(), own_seconds()
    except (OSError, ValueError):
        return None
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9))
