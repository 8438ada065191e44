"""Shorten OpenBLAS's idle spin (standard library only; run by ``import cnnkit``).

After each GEMM, OpenBLAS's worker threads keep spinning, without yielding the CPU, for
``OPENBLAS_THREAD_TIMEOUT`` before they sleep: 2^28 CPU cycles (about 0.1 s) by default. A network runs
a GEMM every few milliseconds, so the workers never sleep, and while cnnkit's compiled kernels run
(pooling, col2im, the Winograd transforms, the direct first layer) they hold the other cores. Measured
on the 2-core project machine, in processes alternating the two settings (``benchmarks/README.md``):
with 2^20 cycles (about 0.4 ms) notes §5's network ran inference at batch 64 in 11.3 instead of 14.2 ms
and a batch-256 training step in 116-139 instead of 141-178 ms, and the direct first layer's second
thread (:mod:`cnnkit.ops._parallel`) got a core at all (its block 5.3 -> 3.2 ms). Shorter timeouts
(2^16 and below) were slower: each of the Winograd convolution's 36 small GEMMs then waits for the
workers to wake up.

OpenBLAS reads the variable when NumPy loads it. Imported before NumPy, this module only sets it (a
value the user set is kept; child processes inherit it). Imported after, on Linux, it also asks the
loaded OpenBLAS to read its environment again (``openblas_read_env``) and stops its worker threads
(``blas_thread_shutdown_``, what OpenBLAS itself runs before every ``fork``); the next GEMM starts them
again with the short spin (measured the same: §5 inference 10.4 -> 8.7 ms, training step 33.1 -> 28.7
ms, NumPy imported first). Where that is not possible (another BLAS, no such symbols, not Linux) the
variable is left unset and nothing changes; set it yourself: ``OPENBLAS_THREAD_TIMEOUT=20 python
train.py``. Other BLAS libraries (MKL, Accelerate) ignore it.
"""

from __future__ import annotations

import os
import sys

#: log2 of the spin in CPU cycles (OpenBLAS accepts 4..30).
OPENBLAS_THREAD_TIMEOUT = "20"
_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"


def shorten_openblas_spin() -> bool:
    """Give OpenBLAS a short idle spin unless the user chose one; True when it takes effect.

    Before NumPy's import: sets the variable, which OpenBLAS reads when NumPy loads it. After: sets it
    and makes every loaded OpenBLAS re-read it (:func:`_reload_openblas`); if none could, the variable
    is removed again, so that what is reported (:func:`cnnkit.bench.blas_info`) is what runs.
    """
    if os.environ.get(_VARIABLE):
        return False
    os.environ[_VARIABLE] = OPENBLAS_THREAD_TIMEOUT
    if "numpy" not in sys.modules:
        return True
    if _reload_openblas():
        return True
    del os.environ[_VARIABLE]
    return False


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _reload_openblas() -> bool:
    """Make each loaded OpenBLAS re-read its environment and restart its threads; True if any did."""
    import ctypes  # here: only a program that imported NumPy first pays for it

    done = False
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the loaded copy, not a new one
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except (OSError, AttributeError):
            continue
        read_env()
        shutdown()
        done = True
    return done


shorten_openblas_spin()
