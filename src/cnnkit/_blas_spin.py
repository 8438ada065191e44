"""Shorten OpenBLAS's idle spin, when cnnkit is imported before NumPy (standard library only).

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

OpenBLAS reads the variable once, when NumPy loads it, so this module sets it when imported, which
``import cnnkit`` does first; it works only if cnnkit is imported before NumPy (the ``cnnkit`` command
always is), and a value the user set is kept. Otherwise set it yourself:
``OPENBLAS_THREAD_TIMEOUT=20 python train.py``. Other BLAS libraries (MKL, Accelerate) ignore it.
"""

from __future__ import annotations

import os
import sys

#: log2 of the spin in CPU cycles (OpenBLAS accepts 4..30).
OPENBLAS_THREAD_TIMEOUT = "20"


def shorten_openblas_spin() -> bool:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` unless NumPy (hence OpenBLAS) is loaded or the user set it.

    Returns True when the setting will take effect (NumPy not imported yet)."""
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
    return True


shorten_openblas_spin()
