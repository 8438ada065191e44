"""Latency of ``cnnkit serve`` under load: N concurrent ``POST /api/predict`` against a real server.

Starts ``cnnkit serve MODEL --port 0`` in a subprocess (uvicorn on 127.0.0.1, inference in its bounded
worker pool), sends one warm-up request, then N requests at once from one httpx client (one connection
each), and prints every request's latency percentiles, the wall time and the requests per second. Every
answer must be a 200 with the same probabilities, else the script fails.

    python benchmarks/bench_serve.py                       # a seeded LeNet-5, 200 requests
    python benchmarks/bench_serve.py --model runs/lenet5-fashion-mnist/model.cnnkit --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seeded_lenet(path: Path) -> Path:
    """A LeNet-5 file with the metadata ``cnnkit train`` writes (untrained: speed does not care)."""
    from cnnkit.models import zoo

    model = zoo.get("lenet5", num_classes=10, input_shape=(1, 28, 28), seed=0)
    meta = {"preprocess": {"image_size": [28, 28], "color": "grey", "normalize": {"mode": "unit"}}}
    model.metadata = meta
    model.save(path, metadata=meta)
    return path


def image_bytes() -> bytes:
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def start(model: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", str(model), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    found = re.search(r"http://\S+/", line)
    if not found:
        proc.kill()
        raise SystemExit(f"cnnkit serve did not start: {line}")
    return proc, found.group(0)


async def hammer(url: str, data: bytes, n: int) -> tuple[list[float], float]:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        files = {"file": ("image.png", data, "image/png")}
        first = (await client.post("api/predict", files=files)).json()

        async def one() -> float:
            t0 = time.perf_counter()
            r = await client.post("api/predict", files=files)
            dt = time.perf_counter() - t0
            if r.status_code != 200 or r.json() != first:
                raise SystemExit(f"a request failed: {r.status_code} {r.text[:200]}")
            return dt

        t0 = time.perf_counter()
        latencies = await asyncio.gather(*(one() for _ in range(n)))
        return list(latencies), time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a .cnnkit file (default: a seeded LeNet-5 written to a temp folder)")
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests (200)")
    parser.add_argument("--repeats", type=int, default=3, help="bursts; the medians are reported (3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else seeded_lenet(Path(tmp) / "lenet5.cnnkit")
        proc, url = start(model)
        try:
            data = image_bytes()
            runs = [asyncio.run(hammer(url, data, args.requests)) for _ in range(args.repeats)]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    p50s, p95s, walls = [], [], []
    for latencies, wall in runs:
        q = statistics.quantiles(latencies, n=100)
        p50s.append(q[49] * 1000)
        p95s.append(q[94] * 1000)
        walls.append(wall)
        print(
            f"{len(latencies)} concurrent requests: p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms, wall {wall:.2f} s, {len(latencies) / wall:.0f} requests/s"
        )
    print(
        f"median of {len(runs)}: p50 {statistics.median(p50s):.0f} ms, p95 {statistics.median(p95s):.0f} ms, "
        f"{args.requests / statistics.median(walls):.0f} requests/s; "
        f"all {args.requests * len(runs)} answered 200, identical; "
        f"{cpu_name()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
