"""The cnnkit half of the speed benchmark: training-step and inference throughput of zoo models.

A training step is what one iteration of the fit loop does (notes section 7): forward pass in training
mode, mean cross-entropy on the logits (section 7.1), backward pass through every layer (section 7.2) and
the plain gradient-descent update ``W <- W - lr * dL/dW`` (section 7.3). Inference is a forward pass in
inference mode. Both run on fixed random inputs; each step is timed with ``time.perf_counter`` after
``warmup`` untimed steps and the median step time gives images per second (``batch_size / median``).

``cnnkit bench`` prints these numbers; the PyTorch comparison script in ``benchmarks/`` reuses
:func:`time_training_step`, :func:`time_inference`, :func:`blas_info`, :func:`reset_peak_rss` and
:func:`peak_rss_mb`.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

#: The benchmarked models and their batch sizes.
BENCH_MODELS: dict[str, int] = {"simple_cnn": 64, "lenet5": 128, "cats_dogs_cnn": 32, "resnet18_small": 64}


def _check_steps(steps: int, warmup: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"bench: steps must be an int >= 1, got {steps!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"bench: warmup must be an int >= 0, got {warmup!r}")


def _inputs(model: Any, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random batch ``(x, labels)`` matching the model's input shape and classes."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"bench: batch_size must be an int >= 1, got {batch_size!r}")
    if not getattr(model, "built", False) or model.input_shape is None:
        raise ConfigError(
            f"bench: model {getattr(model, 'name', model)!r} must be built (give it an input_shape)"
        )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *model.input_shape)).astype(model.dtype)
    labels = rng.integers(0, int(model.output_shape[-1]), size=batch_size)
    return x, labels


def _summarise(times: Sequence[float], batch_size: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "batch_size": batch_size,
        "steps": len(times),
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch_size / median if median > 0 else float("inf"),
        "times_s": list(times),
    }


def training_step(model: Any, x: np.ndarray, labels: np.ndarray, lr: float = 0.01) -> float:
    """One SGD step in place: forward (training mode), cross-entropy, backward, ``W -= lr * dW``.

    Returns the loss. Layers marked ``trainable = False`` are not updated.
    """
    from .ops.losses import cross_entropy_backward, cross_entropy_forward

    logits = model.forward(x, True)
    loss, cache = cross_entropy_forward(logits, labels)
    previous = getattr(model, "needs_input_grad", None)
    if previous is not None:
        model.needs_input_grad = False  # as fit does: nothing reads dL/d(images)
    try:
        model.backward(cross_entropy_backward(1.0, cache))
    finally:
        if previous is not None:
            model.needs_input_grad = previous
    for _, owner, key in model.named_parameters():
        if owner.trainable:
            param = owner.params[key]
            param -= param.dtype.type(lr) * owner.grads[key]
    return loss


def time_training_step(
    model: Any, batch_size: int, steps: int = 10, *, warmup: int = 2, lr: float = 0.01, seed: int = 0
) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup`` untimed ones) on a fixed random batch.

    Returns ``{"batch_size", "steps", "median_s", "min_s", "images_per_s", "times_s", "loss"}``; the model
    is trained in place (use a fresh model per measurement if the weights matter). The process runs as
    it is: call :func:`cnnkit.runtime.tune` first to measure what the ``cnnkit`` command runs.
    """
    _check_steps(steps, warmup)
    x, labels = _inputs(model, batch_size, seed)
    model.train()
    times, loss = [], float("nan")
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = training_step(model, x, labels, lr)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    out = _summarise(times, batch_size)
    out["loss"] = loss
    return out


def time_inference(
    model: Any, batch_size: int, steps: int = 10, *, warmup: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Time ``steps`` forward passes in inference mode (after ``warmup`` untimed ones).

    Returns ``{"batch_size", "steps", "median_s", "min_s", "images_per_s", "times_s"}``.
    """
    _check_steps(steps, warmup)
    x, _ = _inputs(model, batch_size, seed)
    model.eval()
    times = []
    try:
        for i in range(warmup + steps):
            start = time.perf_counter()
            model.forward(x, False)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
    finally:
        model.train()
    return _summarise(times, batch_size)


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter (Linux: ``5`` into ``/proc/self/clear_refs``); False where impossible.

    After a reset, :func:`peak_rss_mb` reports the peak since then (of what is resident now and later),
    so each model of :func:`run_benchmarks` gets its own peak instead of the process's.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (``resource.getrusage``): since the start or the
    last :func:`reset_peak_rss`."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def blas_info() -> str:
    """Which BLAS NumPy uses and with how many threads (threadpoolctl if installed, else numpy's config)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return "; ".join(
                f"{p.get('internal_api', '?')} {p.get('version') or ''} ({p.get('num_threads', '?')} threads"
                + (f", {p['threading_layer']}" if p.get("threading_layer") else "")
                + (_openblas_spin() if p.get("internal_api") == "openblas" else "")
                + ")"
                for p in pools
            ).replace("  ", " ")
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        name = blas.get("name", "unknown")
        version = blas.get("version", "")
        return f"{name} {version}".strip() + " (numpy build config)"
    except Exception:  # very old NumPy without mode="dicts"
        return "unknown"


def _openblas_spin() -> str:
    """OpenBLAS's idle spin as the loaded OpenBLAS read it (see :mod:`cnnkit.runtime`)."""
    from .runtime import openblas_thread_timeout

    value = openblas_thread_timeout()
    if value is None:
        return ""
    return f", spin 2^{value if value > 0 else '28 (default)'} cycles"


def _runtime_state() -> dict[str, Any]:
    """Which :mod:`cnnkit.runtime` tunings were on."""
    from dataclasses import asdict

    from .runtime import state

    return asdict(state())


def environment() -> dict[str, Any]:
    """Machine and library facts recorded with the results (the CPU's as :func:`cpu_info` gives them,
    every BLAS as :func:`blas_pools`)."""
    import os

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "runtime": _runtime_state(),
        "blas_pools": blas_pools(),
        "cpu": cpu_info(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------- the machine, for reports
#: Vector-extension flags reported (Linux ``/proc/cpuinfo`` names). AVX-512 and AMX are reported with
#: every subset the CPU has (``avx512f`` is the foundation every AVX-512 CPU has).
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx_vnni_int8", "avx_ne_convert")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The CPU facts in the text of Linux's ``/proc/cpuinfo`` (first processor's ``model name`` and
    ``flags``; ARM's ``Features``). Returns ``{"model", "avx2", "avx512f", "avx512", "avx_vnni",
    "amx", "flags"}``: ``avx512`` and ``amx`` list every AVX-512 / AMX subset present (sorted),
    ``flags`` the vector flags of :data:`_VECTOR_FLAGS` present."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = " ".join(value.split())
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {
        "model": model or "unknown",
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "avx_vnni": "avx_vnni" in flags,
        "amx": sorted(f for f in flags if f.startswith("amx")),
        "flags": [f for f in _VECTOR_FLAGS if f in flags],
    }


def cpu_info() -> dict[str, Any]:
    """This machine's CPU: :func:`parse_cpuinfo` of ``/proc/cpuinfo`` on Linux (elsewhere the model
    from :mod:`platform` and no flags), plus ``logical_cpus`` and ``usable_cpus`` (this process's
    affinity) and ``summary``, one line such as ``"AMD EPYC 7B13; AVX2, no AVX-512, no AVX-VNNI, no
    AMX"``."""
    import os

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            info = parse_cpuinfo(handle.read())
    except OSError:
        info = parse_cpuinfo("")
        info["model"] = platform.processor() or platform.machine() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info["logical_cpus"] = os.cpu_count()
    info["usable_cpus"] = usable
    info["summary"] = cpu_summary(info)
    return info


def cpu_summary(info: dict[str, Any]) -> str:
    """One line of :func:`parse_cpuinfo`'s facts: model; AVX2; AVX-512 (with its subsets); AVX-VNNI; AMX."""
    parts = [
        "AVX2" if info["avx2"] else "no AVX2",
        f"AVX-512 ({' '.join(info['avx512'])})" if info["avx512f"] else "no AVX-512",
        "AVX-VNNI" if info["avx_vnni"] else "no AVX-VNNI",
        f"AMX ({' '.join(info['amx'])})" if info["amx"] else "no AMX",
    ]
    return f"{info['model']}; {', '.join(parts)}"


def blas_pools() -> list[dict[str, Any]]:
    """Every BLAS loaded in this process (NumPy's, and PyTorch's MKL once torch is imported) as
    threadpoolctl sees it: ``internal_api`` (openblas, mkl, blis), ``version``, ``architecture`` (the
    kernel OpenBLAS chose at load time: Haswell, SkylakeX, Zen, ...; BLIS's ``architecture``; MKL
    reports none), ``threading_layer``, ``num_threads`` and ``filepath``. Empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads", "filepath")
    return [{k: p.get(k) for k in keys} for p in threadpool_info() if p.get("user_api") == "blas"]


def blas_kernel_line() -> str:
    """One line per :func:`blas_pools`: ``"openblas 0.3.31 kernel Haswell, 2 threads (pthreads)"``."""
    pools = blas_pools()
    if not pools:
        return "BLAS kernel unknown (threadpoolctl not installed)"
    return "; ".join(
        f"{p['internal_api']} {p['version']} kernel {p['architecture'] or 'n/a'}, {p['num_threads']} threads"
        + (f" ({p['threading_layer']})" if p["threading_layer"] else "")
        for p in pools
    )


def run_benchmarks(
    models: Sequence[str] | None = None,
    steps: int = 10,
    *,
    warmup: int = 2,
    batch_sizes: dict[str, int] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark zoo models; one result dict per model.

    ``models`` defaults to :data:`BENCH_MODELS` (with its batch sizes; ``batch_sizes`` overrides them,
    and models outside the table use 64). Each dict has ``model``, ``input_shape``, ``params``,
    ``batch_size``, ``train`` and ``inference`` (the dicts of :func:`time_training_step` and
    :func:`time_inference`), ``peak_rss_mb`` and ``rss_scope``: ``"model"`` when the peak counter could be
    reset before each model (Linux), else ``"process"`` (the peak so far, which never decreases).
    """
    import gc

    from .models import zoo

    _check_steps(steps, warmup)
    names = list(models) if models is not None else list(BENCH_MODELS)
    known = list(zoo.names())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"bench: unknown model(s) {', '.join(unknown)}; zoo models: {', '.join(known)}")
    sizes = {**BENCH_MODELS, **(batch_sizes or {})}
    results = []
    for name in names:
        batch = int(sizes.get(name, 64))
        if progress is not None:
            progress(f"{name}: batch {batch}, {warmup} warm-up + {steps} timed steps")
        gc.collect()
        scope = "model" if reset_peak_rss() else "process"
        model = zoo.get(name, seed=seed)
        train = time_training_step(model, batch, steps, warmup=warmup, seed=seed)
        infer = time_inference(model, batch, steps, warmup=warmup, seed=seed)
        results.append(
            {
                "model": name,
                "input_shape": list(model.input_shape),
                "params": model.count_params(),
                "batch_size": batch,
                "train": train,
                "inference": infer,
                "peak_rss_mb": peak_rss_mb(),
                "rss_scope": scope,
            }
        )
    return results
