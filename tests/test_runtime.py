"""``import cnnkit`` changes nothing in the process; :mod:`cnnkit.runtime` tunes it when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code: str, env: dict[str, str] | None = None) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("first", ["", "import numpy\n"])
def test_import_cnnkit_leaves_the_environment_alone(first):
    _run(first + "import os\ne = dict(os.environ)\nimport cnnkit\nassert dict(os.environ) == e\n")


@pytest.mark.parametrize("first", ["", "import numpy\n"])
def test_import_cnnkit_touches_no_blas_malloc_or_fork_setting(first):
    code = (
        first + "import cnnkit, cnnkit.runtime, cnnkit.training, sys\n"
        "from cnnkit.ops import _parallel\n"
        "from cnnkit.runtime import openblas_thread_timeout\n"
        "s = cnnkit.runtime.state()\n"
        "assert not s.blas_spin and not s.malloc and s.threads is None, s\n"
        "assert openblas_thread_timeout() in (0, None)\n"  # OpenBLAS's default spin
        "assert not _parallel._fork_hook\n"
    )
    _run(code)


def test_fit_alone_does_not_tune_malloc():
    code = (
        "import numpy as np, cnnkit, cnnkit.runtime\n"
        "from cnnkit.layers import Flatten, Dense\n"
        "m = cnnkit.Sequential([Flatten(), Dense(2)], input_shape=(1, 2, 2), seed=0)\n"
        "m.fit(np.zeros((4, 1, 2, 2), np.float32), np.array([0, 1, 0, 1]), verbose=0)\n"
        "assert not cnnkit.runtime.state().malloc\n"
    )
    _run(code)


def test_the_fork_hook_is_registered_with_the_first_pool():
    code = (
        "from cnnkit.ops import _parallel\n"
        "assert not _parallel._fork_hook\n"
        "_parallel.set_threads(2)\n"
        "_parallel.run_split(lambda n0, n1: None, 4)\n"
        "assert _parallel._fork_hook\n"
    )
    _run(code)


def test_tune_sets_what_openblas_reads_back():
    code = (
        "import numpy, os, cnnkit.runtime as r\n"
        "s = r.tune()\n"
        "assert s.blas_spin and s.malloc, s\n"
        "assert r.openblas_thread_timeout() == int(r.OPENBLAS_THREAD_TIMEOUT)\n"
        "assert os.environ['OPENBLAS_THREAD_TIMEOUT'] == r.OPENBLAS_THREAD_TIMEOUT\n"
    )
    _run(code)


def test_tuned_restores_spin_variable_and_threads():
    code = (
        "import numpy, os, cnnkit.runtime as r\n"
        "from cnnkit.ops import _parallel\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "with r.tuned(threads=1) as s:\n"
        "    assert s.blas_spin and s.threads == 1 and _parallel.threads() == 1\n"
        "    assert r.openblas_thread_timeout() == int(r.OPENBLAS_THREAD_TIMEOUT)\n"
        "    assert [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'] == [1] * len(blas)\n"
        "assert 'OPENBLAS_THREAD_TIMEOUT' not in os.environ\n"
        "assert r.openblas_thread_timeout() == 0\n"
        "assert _parallel.configured_threads() is None\n"
        "assert [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'] == blas\n"
        "assert r.state() == r.RuntimeState(False, False, None)\n"
    )
    _run(code)


def test_the_users_own_spin_setting_is_kept():
    code = "import cnnkit.runtime as r\nassert not r.tune().blas_spin\nimport os\nprint(os.environ['OPENBLAS_THREAD_TIMEOUT'])\n"
    assert _run(code, {"OPENBLAS_THREAD_TIMEOUT": "26"}) == "26"


def test_bad_thread_counts_are_refused():
    from cnnkit.errors import ConfigError
    from cnnkit.runtime import tune, tuned

    with pytest.raises(ConfigError, match="threads must be an int >= 1"):
        tune(threads=0)
    with pytest.raises(ConfigError, match="got True"), tuned(threads=True):
        pass


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two BLAS threads to spin")
def test_tuning_still_pays_idle_blas_workers_stop_burning_cpu():
    """The point of the short spin: between GEMMs OpenBLAS's idle workers give their core back. CPU time
    burnt during a pause after a GEMM, default spin against tuned (a CPU-time count, not a speed)."""
    code = (
        "import time, numpy as np, cnnkit.runtime as r\n"
        "from threadpoolctl import threadpool_limits\n"
        "a = np.ones((400, 400))\n"
        "def idle_cpu():\n"
        "    a @ a\n"
        "    t0 = time.process_time(); time.sleep(0.2); return time.process_time() - t0\n"
        "with threadpool_limits(2, user_api='blas'):\n"
        "    default = max(idle_cpu() for _ in range(3))\n"
        "    with r.tuned():\n"
        "        tuned = max(idle_cpu() for _ in range(3))\n"
        "print(default, tuned)\n"
    )
    default, tuned = map(float, _run(code).split())
    assert tuned < 0.02, (default, tuned)
    assert default > 4 * tuned + 0.005, (default, tuned)


def test_cli_turns_the_tuning_on(monkeypatch):
    from cnnkit import cli, runtime

    calls = []
    monkeypatch.setattr(runtime, "tune", lambda **kw: calls.append(kw))
    assert cli.main(["explain", "size", "32", "3"]) == 0
    assert calls == [{}]
