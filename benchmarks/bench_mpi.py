"""Training on two MPI processes against one process with two threads, on this machine.

    python benchmarks/bench_mpi.py [--steps 30] [--repeats 3] [--json results/mpi.json]

For ``simple_cnn`` and ``resnet18_small`` (32x32 RGB inputs, random data, SGD, global batch 64) it
starts, alternately, ``--repeats`` times each:

- one process with 2 threads (OpenBLAS, OpenMP and Numba limited to 2), ``fit`` as usual;
- ``mpiexec -n 2`` processes with 1 thread each, ``fit(..., distributed="mpi")``: each process computes
  the gradient of 32 images, and the gradients are summed over the processes every step.

It reports training images/s (steps after the first three, which include compilation and warm-up; the
median over the repeats) and, for MPI, the time per step spent summing the gradients (the flat-buffer
Allreduce, rank 0's clock) and the bytes each process sends per step. The machine must be otherwise
quiet; as root, Open MPI needs ``OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` (set here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
MODELS = ("simple_cnn", "resnet18_small")
WARMUP = 3


def worker(model_name: str, batch: int, steps: int, distributed: bool) -> None:
    """Train ``steps`` steps and print one JSON line (rank 0) with the timings."""
    import numpy as np

    from cnnkit.models import zoo
    from cnnkit.optim import SGD
    from cnnkit.training import Callback, fit

    n = batch * steps
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = zoo.get(model_name, num_classes=10, input_shape=(3, 32, 32), seed=0)
    marks: list[float] = []
    reduce_marks: list[float] = []

    class Clock(Callback):
        def on_batch_end(self, batch_index, logs=None):
            marks.append(time.perf_counter())
            comm = getattr(self.trainer, "comm", None)
            reduce_marks.append(comm.reduce_seconds if comm is not None else 0.0)

    fit(
        model,
        x,
        y,
        epochs=1,
        batch_size=batch,
        optimizer=SGD(0.01, momentum=0.9),
        verbose=0,
        seed=0,
        shuffle=False,
        callbacks=[Clock()],
        distributed="mpi" if distributed else False,
    )
    rank = 0
    if distributed:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    if rank == 0:
        timed = len(marks) - WARMUP
        seconds = marks[-1] - marks[WARMUP - 1]
        out = {
            "images_per_s": timed * batch / seconds,
            "step_ms": 1e3 * seconds / timed,
            "reduce_ms_per_step": 1e3 * (reduce_marks[-1] - reduce_marks[WARMUP - 1]) / timed,
            "gradient_bytes": 4 * model.count_params(),
        }
        print("RESULT " + json.dumps(out), flush=True)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    src = str(HERE.parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(cmd: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"bench_mpi: {' '.join(cmd[:4])} ... failed:\n{proc.stderr[-2000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default: 30)")
    parser.add_argument("--batch", type=int, default=64, help="global batch (default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, alternated (default: 3)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="zoo models (default: both)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODEL", "BATCH", "STEPS", "MPI"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        name, batch, steps, mpi = args.worker
        worker(name, int(batch), int(steps), mpi == "1")
        return
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    results: dict[str, dict] = {}
    for name in args.models:
        runs: dict[str, list[dict]] = {"1 process x 2 threads": [], "2 processes x 1 thread": []}
        for _ in range(args.repeats):
            base = [sys.executable, str(HERE), "--worker", name, str(args.batch), str(args.steps)]
            runs["1 process x 2 threads"].append(_run([*base, "0"], _env(2)))
            cmd = [mpiexec, "-n", "2", "--oversubscribe", "--bind-to", "core", *base, "1"]
            runs["2 processes x 1 thread"].append(_run(cmd, _env(1)))
        results[name] = {
            kind: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for kind, rs in runs.items()
        }
    print(f"global batch {args.batch}, {args.steps} steps ({WARMUP} warm-up), median of {args.repeats} runs")
    print(
        f"{'model':<16} {'setup':<24} {'images/s':>9} {'ms/step':>8} {'Allreduce ms/step':>18} {'MB/step':>8}"
    )
    for name, kinds in results.items():
        for kind, r in kinds.items():
            mpi = kind.startswith("2")
            reduce_ms = f"{r['reduce_ms_per_step']:.2f}" if mpi else "-"
            mb = f"{r['gradient_bytes'] / 1e6:.1f}" if mpi else "-"
            print(
                f"{name:<16} {kind:<24} {r['images_per_s']:>9.0f} {r['step_ms']:>8.1f} {reduce_ms:>18} {mb:>8}"
            )
        one, two = kinds["1 process x 2 threads"], kinds["2 processes x 1 thread"]
        print(f"{'':<16} {'ratio (2 proc / 1 proc)':<24} {two['images_per_s'] / one['images_per_s']:>9.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
