"""cnnkit beside PyTorch: the same network, the same weights, the same batches, one process.

Run it with the BLAS-slowing variables unset (tests and CI leave them alone; this script does not):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_vs_torch.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_vs_torch.py --models lenet5 --rounds 7

For each network it builds the cnnkit zoo model, its PyTorch twin with a copy of the weights
(``torch_bridge.py``), and times, on the same fixed batch and with the same number of threads:

- a training step (forward, mean cross-entropy, backward, plain SGD update ``W -= lr * dW``),
- inference (a forward pass in inference mode; ``torch.inference_mode`` for PyTorch),

for cnnkit and for PyTorch in both NCHW and ``channels_last`` layouts. Timing alternates between the
libraries in rounds so that both see the same machine conditions (this host is shared and noisy), each
turn starting with one untimed step (the other library's worker threads are still spinning then), and
reports medians. The ratio is cnnkit / PyTorch at its faster layout (> 1 means cnnkit is faster).

Peak memory of a training step is measured in a fresh subprocess per library: after one warm-up step
the kernel's peak-RSS counter is reset, and the figure is the peak over three steps minus the RSS before
them (so library import size, model weights and one-off start-up costs are not counted). A 1024^3 float32 GEMM is
timed before and after the run: if it fell below ``STARVED_GFLOPS`` the host starved a CPU and the run
is flagged. The header and the JSON (``machine``) name the CPU model and its vector extensions
(AVX2, AVX-512 with its subsets, AVX-VNNI, AMX), every BLAS with the kernel that ran (threadpoolctl's
``internal_api``, ``version``, ``architecture``) and the thread counts (``machine.py``), with OpenBLAS's
idle spin, which :func:`cnnkit.runtime.tune` shortens (``OPENBLAS_THREAD_TIMEOUT``), called here where
the ``cnnkit`` command calls it, before any timing, so cnnkit runs tuned exactly as the command runs it
(the spin and glibc's malloc thresholds, process-wide, so PyTorch gets the same allocator settings);
PyTorch's MKL and OpenMP threads do not read the spin.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

import cnnkit
import cnnkit.runtime

cnnkit.runtime.tune()  # as the `cnnkit` command does, before any timing (see the docstring)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: (zoo name, batch size): the rows of the speed issue's table.
NETWORKS = [
    ("simple_cnn", 64),
    ("simple_cnn", 256),
    ("lenet5", 128),
    ("cats_dogs_cnn", 32),
    ("resnet18_small", 64),
]
INPUT_SHAPES = {"lenet5": (1, 28, 28)}
LR = 0.01
#: A 2-thread 1024^3 float32 GEMM below this means the host starved a CPU during the run. OpenBLAS's
#: Haswell kernel on the 2-core AMD EPYC development machine reaches 115-160 GFLOP/s when it is quiet.
STARVED_GFLOPS = 80.0


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GEMM throughput of NumPy's BLAS, GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(name: str, batch: int, seed: int = 0):
    """The cnnkit model, a fixed batch, and the PyTorch twins (NCHW and channels_last)."""
    import torch

    from cnnkit.models import zoo
    from torch_bridge import to_torch

    model = zoo.get(name, input_shape=INPUT_SHAPES.get(name), seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], size=batch)
    twin = to_torch(model)
    twin_cl = to_torch(model).to(memory_format=torch.channels_last)
    return model, x, y, twin, twin_cl


def cnnkit_steps(model, x, y):
    from cnnkit.bench import training_step

    def train() -> None:
        training_step(model, x, y, LR)

    def infer() -> None:
        model.forward(x, False)

    return train, infer


def torch_steps(module, x, y, channels_last: bool):
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(x)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y)
    opt = torch.optim.SGD(module.parameters(), lr=LR)

    def train() -> None:
        module.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(xt), yt)
        loss.backward()
        opt.step()

    def infer() -> None:
        module.eval()
        with torch.inference_mode():
            module(xt)

    return train, infer


def measure(name: str, batch: int, rounds: int, steps: int) -> dict:
    model, x, y, twin, twin_cl = build(name, batch)
    contenders = {
        "cnnkit": cnnkit_steps(model, x, y),
        "torch_nchw": torch_steps(twin, x, y, channels_last=False),
        "torch_cl": torch_steps(twin_cl, x, y, channels_last=True),
    }
    times: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in contenders}
    for fns in contenders.values():  # warm-up: first calls allocate and (for Numba) compile
        for fn in fns:
            fn()
            fn()
    for _ in range(rounds):
        for key, (train, infer) in contenders.items():
            model.train()
            # one untimed step first: the library that ran before leaves worker threads spinning
            # (OpenMP's, OpenBLAS's) for a while, and the first step after a switch ran up to 2x
            # slower for either library (measured: PyTorch 10.5 -> 21.9 ms right after cnnkit)
            train()
            times[key]["train"] += [_timed(train) for _ in range(steps)]
            times[key]["infer"] += [_timed(infer) for _ in range(steps)]
    model.train()
    row: dict = {"model": name, "batch": batch}
    for key, per_mode in times.items():
        for mode, values in per_mode.items():
            row[f"{key}_{mode}_ips"] = batch / statistics.median(values)
    for mode in ("train", "infer"):
        best_torch = max(row[f"torch_nchw_{mode}_ips"], row[f"torch_cl_{mode}_ips"])
        row[f"torch_best_{mode}_ips"] = best_torch
        row[f"ratio_{mode}"] = row[f"cnnkit_{mode}_ips"] / best_torch
    return row


# ----------------------------------------------------------------------------- memory (subprocesses)
def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    """The kernel's peak RSS (VmHWM) since the last reset, MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(lib: str, name: str, batch: int) -> None:
    """Run in a subprocess: RSS growth over 3 training steps of one library, printed as JSON."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model, x, y, twin, twin_cl = build(name, batch)
    if lib == "cnnkit":
        train, _ = cnnkit_steps(model, x, y)  # tuned at import of this script, as the command runs
    else:
        del model
        train, _ = torch_steps(twin_cl if lib == "torch_cl" else twin, x, y, lib == "torch_cl")
    train()  # warm-up: first-call allocations, and compiled kernels loaded from Numba's cache
    before = _rss_mb()
    from cnnkit.bench import reset_peak_rss

    reset_peak_rss()  # so the peak is that of the steps below, not of imports or the warm-up
    for _ in range(3):
        train()
    print(json.dumps({"peak_growth_mb": max(_hwm_mb() - before, 0.0)}))


def measure_memory(name: str, batch: int) -> dict:
    out = {}
    for lib in ("cnnkit", "torch_nchw", "torch_cl"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", lib, name, str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[f"{lib}_step_mem_mb"] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth_mb"]
    out["torch_best_step_mem_mb"] = min(out["torch_nchw_step_mem_mb"], out["torch_cl_step_mem_mb"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="zoo names (default: the issue's table)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--json", type=Path, default=HERE / "results" / f"{date.today()}.json")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        lib, name, batch = args.memory_child
        memory_child(lib, name, int(batch))
        return 0

    import torch
    from threadpoolctl import threadpool_info

    from cnnkit.bench import blas_info
    from machine import describe, header_lines

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    facts = describe(torch)  # CPU model and vector extensions, BLAS kernels, threads (see machine.py)
    print("\n".join(header_lines(facts)), flush=True)
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    gemm_before = gemm_gflops()
    networks = [(n, b) for n, b in NETWORKS if not args.models or n in args.models]
    rows = []
    for name, batch in networks:
        row = measure(name, batch, args.rounds, args.steps)
        if not args.no_memory:
            row.update(measure_memory(name, batch))
        rows.append(row)
        print(
            f"{name:>15} b{batch:<4} train {row['cnnkit_train_ips']:8.0f} vs {row['torch_best_train_ips']:8.0f}"
            f" ({row['ratio_train']:.2f})   infer {row['cnnkit_infer_ips']:8.0f} vs "
            f"{row['torch_best_infer_ips']:8.0f} ({row['ratio_infer']:.2f})",
            flush=True,
        )
    gemm_after = gemm_gflops()
    report = {
        "date": str(date.today()),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "threads": threads,
        "machine": facts,
        "blas": blas_info(),
        "blas_kernel": [p.get("architecture") for p in blas],
        "gemm_gflops_before": gemm_before,
        "gemm_gflops_after": gemm_after,
        "starved": min(gemm_before, gemm_after) < STARVED_GFLOPS,
        "rows": rows,
    }
    print()
    print(markdown_table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    return 0


def markdown_table(report: dict) -> str:
    cpu = report["machine"]["cpu"]["summary"] if "machine" in report else "CPU not recorded"
    lines = [
        f"CPU: {cpu}",
        f"BLAS: {report['blas']} (kernel {', '.join(map(str, report['blas_kernel']))}); "
        f"GEMM 1024^3 before/after: {report['gemm_gflops_before']:.0f}/{report['gemm_gflops_after']:.0f} GFLOP/s"
        + (" — STARVED, discard" if report["starved"] else ""),
        "",
        "| network | batch | cnnkit train | PyTorch train (NCHW / CL) | ratio | cnnkit infer | "
        "PyTorch infer (NCHW / CL) | ratio | step memory MB cnnkit / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        mem = (
            f"{r['cnnkit_step_mem_mb']:.0f} / {r['torch_best_step_mem_mb']:.0f}"
            if "cnnkit_step_mem_mb" in r
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['cnnkit_train_ips']:,.0f} | "
            f"{r['torch_nchw_train_ips']:,.0f} / {r['torch_cl_train_ips']:,.0f} | {r['ratio_train']:.2f} | "
            f"{r['cnnkit_infer_ips']:,.0f} | {r['torch_nchw_infer_ips']:,.0f} / {r['torch_cl_infer_ips']:,.0f} | "
            f"{r['ratio_infer']:.2f} | {mem} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
