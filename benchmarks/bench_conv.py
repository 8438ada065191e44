"""Time cnnkit's conv2d (forward + backward) beside PyTorch on the notes' convolution layers.

Run it as::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv.py

(the two variables, when set, can force OpenBLAS onto a slower kernel than the one it would pick for
this CPU; tests and CI leave them alone). The header prints the CPU model and its vector extensions
(AVX2, AVX-512 and its subsets, AVX-VNNI, AMX), the BLAS kernel that actually ran (``threadpoolctl``)
and the thread counts (``machine.py``); ``--json PATH`` stores them with the times.

Layers (float32, 3x3, stride 1, padding 1):

- notes §5 (batch 64): 32x32x3 -> 32 filters; 16x16x32 -> 64 filters
- notes §9 (batch 32): 128x128x3 -> 32; 64x64x32 -> 64; 32x32x64 -> 128

One training step of a layer is timed: forward, then backward giving dx, dw and db. Both libraries
run in this process on the same arrays with the same number of threads. cnnkit gets its input in
the memory layout it has inside a cnnkit network: a first layer reads C-ordered NCHW images; later
layers read the channels-last arrays cnnkit's conv and pool produce. PyTorch is timed in both its
NCHW and ``channels_last`` layouts and the ratio uses the faster. Each figure is the median of
about ``--repeats`` runs, taken in two rounds of blocks (see ``bench_layer``).
A 1024^3 float32 GEMM is timed before and after: if it slowed down a lot the machine was busy and the
run should be repeated (see benchmarks/README.md).

``--keep-memory`` tells glibc's malloc (through ``mallopt``) never to hand big blocks back to the
kernel, so the large temporaries of every step reuse pages instead of faulting in fresh zeroed ones
(PERF-NOTES point 3). It speeds up both libraries, each differently; it applies to the whole process.

This is a script, not a test; it needs ``torch`` and ``threadpoolctl`` (the ``test``/``bench``
extras).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from cnnkit.ops import conv2d_backward, conv2d_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, header_lines  # noqa: E402

LAYERS = [
    # (label, batch, channels in, size, filters)
    ("§5 conv1", 64, 3, 32, 32),
    ("§5 conv2", 64, 32, 16, 64),
    ("§9 conv1", 32, 3, 128, 32),
    ("§9 conv2", 32, 32, 64, 64),
    ("§9 conv3", 32, 64, 32, 128),
]


def blas_threads() -> tuple[int, str]:
    """(threads, description) of the BLAS that NumPy uses."""
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            desc = (
                f"{lib.get('internal_api')} {lib.get('version')}, kernel "
                f"{lib.get('architecture', '?')}, {lib.get('num_threads')} threads"
            )
            return int(lib.get("num_threads") or 1), desc
    return 1, "no BLAS found by threadpoolctl"


def gemm_gflops(repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * 1024**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def channels_last(a: np.ndarray) -> np.ndarray:
    """The same values, NCHW shape, NHWC memory (what cnnkit's conv and pool return)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def bench_layer(torch, batch: int, c: int, size: int, filters: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, size, size), dtype=np.float32)
    w = (rng.standard_normal((filters, c, 3, 3), dtype=np.float32) / np.sqrt(9 * c)).astype(np.float32)
    b = np.zeros(filters, np.float32)
    dout = rng.standard_normal((batch, filters, size, size), dtype=np.float32)
    x_ck = x if c <= 4 else channels_last(x)  # images for a first layer, else a layer's output
    dout_ck = channels_last(dout)

    def cnnkit_forward():
        return conv2d_forward(x_ck, w, b, padding=1)

    def cnnkit_step():
        out, cache = conv2d_forward(x_ck, w, b, padding=1)
        return conv2d_backward(dout_ck, cache)

    fn = torch.nn.functional

    def torch_step(memory_format):
        xt = torch.from_numpy(x).contiguous(memory_format=memory_format).requires_grad_()
        wt = torch.from_numpy(w).contiguous(memory_format=memory_format).requires_grad_()
        bt = torch.from_numpy(b).requires_grad_()
        dt = torch.from_numpy(dout).contiguous(memory_format=memory_format)

        def step():
            xt.grad = wt.grad = bt.grad = None
            fn.conv2d(xt, wt, bt, padding=1).backward(dt)

        return step

    def torch_forward():
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        wt = torch.from_numpy(w).contiguous(memory_format=torch.channels_last)
        bt = torch.from_numpy(b)

        def run():
            with torch.no_grad():
                fn.conv2d(xt, wt, bt, padding=1)

        return run

    variants = {
        "cnnkit fwd": cnnkit_forward,
        "cnnkit step": cnnkit_step,
        "torch fwd (cl)": torch_forward(),
        "torch step (nchw)": torch_step(torch.contiguous_format),
        "torch step (cl)": torch_step(torch.channels_last),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    # Each variant runs in a block (one warm-up run, then the timed ones): PyTorch's OpenMP workers
    # spin for a while after each op and would slow a NumPy call interleaved right after them.
    # Two rounds, so slow drift of the machine's load affects both libraries alike.
    for _ in range(2):
        for key, fn_ in variants.items():
            fn_()
            times[key].extend(_timed(fn_) for _ in range((repeats + 1) // 2))
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def keep_freed_memory() -> bool:
    """Ask glibc to serve every allocation from its heap and never trim it (whole process)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**62))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant")
    parser.add_argument("--keep-memory", action="store_true", help="mallopt: reuse freed pages (see above)")
    parser.add_argument("--json", type=Path, help="also write the times and the machine facts here")
    args = parser.parse_args()
    if args.keep_memory and not keep_freed_memory():
        print("--keep-memory: mallopt is not available here; running without it")
        args.keep_memory = False

    import torch

    threads, blas = blas_threads()
    torch.set_num_threads(threads)
    facts = describe(torch)  # CPU model and vector extensions, BLAS kernels, threads (see machine.py)
    print("\n".join(header_lines(facts)))
    print(f"numpy {np.__version__}, BLAS: {blas}")
    print(f"malloc: {'keep freed memory (mallopt)' if args.keep_memory else 'glibc defaults'}")
    before = gemm_gflops()
    print(f"float32 GEMM 1024^3 before: {before:.0f} GFLOP/s")
    print()
    head = (
        f"{'layer':<10} {'input (N,C,H,W) -> F':<26} {'cnnkit fwd':>10} {'torch fwd':>10} "
        f"{'cnnkit step':>11} {'torch nchw':>10} {'torch cl':>9} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    ratios, rows = [], []
    for label, batch, c, size, filters in LAYERS:
        r = bench_layer(torch, batch, c, size, filters, args.repeats)
        rows.append({"layer": label, "batch": batch, "channels": c, "size": size, "filters": filters, **r})
        best_torch = min(r["torch step (nchw)"], r["torch step (cl)"])
        ratio = r["cnnkit step"] / best_torch
        ratios.append(ratio)
        shape = f"({batch},{c},{size},{size}) -> {filters}"
        print(
            f"{label:<10} {shape:<26} {r['cnnkit fwd']:>10.1f} {r['torch fwd (cl)']:>10.1f} "
            f"{r['cnnkit step']:>11.1f} {r['torch step (nchw)']:>10.1f} "
            f"{r['torch step (cl)']:>9.1f} {ratio:>6.2f}",
            flush=True,
        )
    after = gemm_gflops()
    print()
    print("times in ms (median); step = forward + backward (dx, dw, db);")
    print("ratio = cnnkit step / faster PyTorch step (below 1: cnnkit is faster)")
    print(f"geometric mean ratio: {float(np.exp(np.mean(np.log(ratios)))):.2f}")
    print(f"float32 GEMM 1024^3 after: {after:.0f} GFLOP/s")
    if after < 0.6 * before:
        print("WARNING: GEMM throughput fell during the run (a busy machine); run it again.")
    if args.json:
        report = {
            "date": str(date.today()),
            "machine": facts,
            "keep_memory": args.keep_memory,
            "gemm_gflops_before": before,
            "gemm_gflops_after": after,
            "rows_ms": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
