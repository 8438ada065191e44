"""Optional compiled kernels: Numba when it is installed, plain NumPy otherwise.

Numba pays where NumPy leaves time on the table (col2im, pooling backward: see ``benchmarks/README.md``).
It is imported lazily, the first time a kernel is needed, so inference-only programs (``cnnkit predict``)
never pay its import time. Kernels are compiled serially (``parallel=False``: Numba's thread pool
spin-waits and fights OpenBLAS for the cores) and cached on disk (``cache=True``), so the compile cost
is paid once per machine.

Set ``CNNKIT_NO_NUMBA=1`` to force the NumPy paths (the tests run both).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def numba_available() -> bool:
    """True when Numba can be imported and ``CNNKIT_NO_NUMBA`` is not set."""
    if os.environ.get("CNNKIT_NO_NUMBA", "") not in ("", "0"):
        return False
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a broken install (llvmlite mismatch)
        return False
    return True


def lazy_kernel(build: Callable[[Any], Callable[..., Any]]) -> Callable[[], Callable[..., Any] | None]:
    """Decorate a function ``build(numba) -> compiled_kernel``; calling the result gives the kernel.

    The kernel is compiled on first use and remembered; the call returns None when Numba is not
    available, and the caller falls back to its NumPy path::

        @lazy_kernel
        def _col2im_kernel(numba):
            @numba.njit(cache=True, nogil=True)
            def kernel(...): ...
            return kernel

        k = _col2im_kernel()
        if k is not None: k(...)
        else: numpy version
    """

    @cache
    def get() -> Callable[..., Any] | None:
        if not numba_available():
            return None
        import numba

        return build(numba)

    get.__doc__ = build.__doc__
    return get
