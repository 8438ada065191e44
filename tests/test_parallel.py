"""Work split across threads (cnnkit.ops._parallel) and OpenBLAS's idle spin (cnnkit.runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from cnnkit.ops import _parallel


@pytest.fixture
def restore_threads():
    yield
    _parallel.set_threads(None)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_run_split_covers_every_image_once(restore_threads, count, n):
    _parallel.set_threads(count)
    seen = np.zeros(n, dtype=int)
    calls = []
    lock = threading.Lock()

    def kernel(tag, n0, n1):
        assert tag == "x" and 0 <= n0 < n1 <= n
        with lock:
            calls.append((n0, n1))
        seen[n0:n1] += 1

    _parallel.run_split(kernel, n, "x")
    assert np.all(seen == 1)
    if count == 1 or n == 1:
        assert calls == [(0, n)]
    else:
        assert len(calls) > 1


def test_run_split_uses_other_threads(restore_threads):
    _parallel.set_threads(2)
    names = set()
    barrier = threading.Barrier(2, timeout=10)

    def kernel(n0, n1):
        names.add(threading.current_thread().name)
        if n0 < 2:  # the first chunk of each thread meets the other: proof both ran at once
            barrier.wait()

    _parallel.run_split(kernel, 4, chunk=1)
    assert len(names) == 2


def test_run_split_raises_a_helper_error_after_all_finish(restore_threads):
    _parallel.set_threads(2)
    barrier = threading.Barrier(2, timeout=10)
    done = []

    def kernel(n0, n1):
        if n0 < 2:
            barrier.wait()  # both threads hold a chunk
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"images {n0}:{n1} failed")
        done.append(n0)

    with pytest.raises(RuntimeError, match="failed"):
        _parallel.run_split(kernel, 8, chunk=1)
    assert done  # the main thread went on with the other chunks


def test_set_threads_checks_its_argument(restore_threads):
    with pytest.raises(ValueError, match="must be >= 1"):
        _parallel.set_threads(0)
    _parallel.set_threads(3)
    assert _parallel.threads() == 3
    _parallel.set_threads(None)
    assert _parallel.threads() >= 1


def _spin_after(code: str, env: dict[str, str] | None = None) -> str:
    probe = f"{code}\nimport os\nprint(os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'))"
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environ.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environ
    )
    return result.stdout.strip()


def test_import_cnnkit_leaves_openblas_spin_alone_and_tune_shortens_it():
    from cnnkit.runtime import OPENBLAS_THREAD_TIMEOUT

    assert _spin_after("import cnnkit") == "unset"
    assert _spin_after("import cnnkit.runtime\ncnnkit.runtime.tune()") == OPENBLAS_THREAD_TIMEOUT
    tuned = "import cnnkit.runtime\ncnnkit.runtime.tune()"
    assert _spin_after(tuned, {"OPENBLAS_THREAD_TIMEOUT": "26"}) == "26"  # the user's value wins


def test_numpy_imported_first_gets_its_openblas_reloaded():
    """NumPy's OpenBLAS is already loaded: tune() makes it re-read the variable and restart its threads,
    and it still multiplies correctly on as many threads as before."""
    from cnnkit.runtime import OPENBLAS_THREAD_TIMEOUT

    code = (
        "import numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "a = np.random.default_rng(0).standard_normal((300, 300))\n"
        "before, threads = a @ a, [p['num_threads'] for p in threadpool_info()]\n"
        "import cnnkit.runtime\n"
        "from cnnkit.runtime import _loaded_openblas, openblas_thread_timeout\n"
        "assert _loaded_openblas(), 'NumPy has no OpenBLAS here'\n"
        "assert openblas_thread_timeout() == 0\n"
        "cnnkit.runtime.tune()\n"
        "assert openblas_thread_timeout() == int(cnnkit.runtime.OPENBLAS_THREAD_TIMEOUT)\n"
        "assert np.array_equal(a @ a, before)\n"
        "assert [p['num_threads'] for p in threadpool_info()] == threads\n"
    )
    assert _spin_after(code) == OPENBLAS_THREAD_TIMEOUT


def test_cli_threads_limit_the_kernel_threads_too():
    from cnnkit.cli._threads import blas_threads

    with blas_threads(1, "test") as limit:
        assert limit == 1 and _parallel.threads() == 1
    assert _parallel.threads() == _parallel._cpus()


def test_a_forked_child_makes_its_own_pool(restore_threads):
    """The helpers do not survive fork: a child that splits work must not wait on its parent's pool."""
    _parallel.set_threads(2)
    _parallel.run_split(lambda n0, n1: None, 4)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            seen = []
            _parallel.run_split(lambda n0, n1: seen.append((n0, n1)), 4, chunk=1)
            code = 0 if sorted(seen) == [(0, 1), (1, 2), (2, 3), (3, 4)] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
