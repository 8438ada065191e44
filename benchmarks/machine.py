"""What a benchmark ran on: CPU model and vector extensions, BLAS kernels, threads (printed and stored).

Every script here prints :func:`header_lines` before its table and stores :func:`describe` in its JSON,
so a figure always comes with the kind of CPU it was measured on (one table per kind of CPU in
benchmarks/README.md: a CPU with AVX-512 runs other BLAS and oneDNN kernels than one with AVX2 only).
"""

from __future__ import annotations

import os
from typing import Any

#: Variables that can force OpenBLAS onto another kernel or cache size than it picks for this CPU.
#: The benchmarks' documented command unsets them (``env -u ...``); tests and CI leave them alone.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def describe(torch: Any = None) -> dict[str, Any]:
    """The machine facts: ``cpu`` (:func:`cnnkit.bench.cpu_info`), ``blas`` (every BLAS pool, with the
    kernel OpenBLAS chose), ``threads`` (BLAS, cnnkit's compiled kernels, PyTorch's intra- and
    inter-op pools), PyTorch's ATen vector ISA (``torch_cpu_capability``: DEFAULT, AVX2, AVX512) and
    which of :data:`OPENBLAS_OVERRIDES` are set. Pass the imported ``torch`` module, or None."""
    from cnnkit.bench import blas_pools, cpu_info
    from cnnkit.ops import _parallel

    pools = blas_pools()
    facts: dict[str, Any] = {
        "cpu": cpu_info(),
        "blas": pools,
        "threads": {
            "blas": [p["num_threads"] for p in pools],
            "cnnkit_kernels": _parallel.threads(),
        },
        "openblas_overrides": {k: os.environ[k] for k in OPENBLAS_OVERRIDES if k in os.environ},
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
    }
    if torch is not None:
        facts["torch"] = torch.__version__
        facts["threads"]["torch"] = torch.get_num_threads()
        facts["threads"]["torch_interop"] = torch.get_num_interop_threads()
        try:
            facts["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except AttributeError:  # older PyTorch
            facts["torch_cpu_capability"] = None
    return facts


def header_lines(facts: dict[str, Any]) -> list[str]:
    """The facts of :func:`describe` as a few printable lines."""
    cpu = facts["cpu"]
    threads = facts["threads"]
    lines = [
        f"CPU: {cpu['summary']} ({cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs usable)",
    ]
    for p in facts["blas"]:
        lines.append(
            f"BLAS: {p['internal_api']} {p['version']}, kernel {p['architecture'] or 'n/a'}, "
            f"{p['num_threads']} threads ({p['threading_layer']}), {p['filepath']}"
        )
    if not facts["blas"]:
        lines.append("BLAS: unknown (install threadpoolctl to see the kernel)")
    thread_line = f"threads: BLAS {threads['blas']}, cnnkit kernels {threads['cnnkit_kernels']}"
    if "torch" in threads:
        thread_line += f", PyTorch {threads['torch']} (inter-op {threads['torch_interop']})"
    lines.append(thread_line)
    if "torch" in facts:
        lines.append(f"PyTorch {facts['torch']}, ATen CPU capability {facts['torch_cpu_capability']}")
    for key, value in facts["openblas_overrides"].items():
        lines.append(
            f"WARNING: {key}={value} is set and can force a slower BLAS kernel; run with env -u {key}"
        )
    return lines
