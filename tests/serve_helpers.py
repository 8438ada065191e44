"""Shared by the ``cnnkit serve`` tests: a LeNet-5 model file as ``cnnkit train`` writes it, test images, and
a server process started with ``cnnkit serve --port 0``."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cnnkit.data.datasets import FASHION_MNIST_CLASSES

FASHION_CLASSES = list(FASHION_MNIST_CLASSES)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def write_lenet_file(path: Path, seed: int = 0) -> Path:
    """A seeded LeNet-5 saved with the metadata ``cnnkit train`` writes (preprocessing, data name)."""
    from cnnkit.models import zoo

    model = zoo.get("lenet5", num_classes=10, input_shape=(1, 28, 28), seed=seed)
    model.class_names = list(FASHION_CLASSES)
    metadata = {
        "preprocess": {
            "image_size": [28, 28],
            "color": "grey",
            "normalize": {"mode": "standardize", "mean": [0.286], "std": [0.353], "max_value": 255.0},
        },
        "data": {"name": "fashion-mnist"},
    }
    model.metadata = metadata
    model.save(path, metadata=metadata)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def blob_png(seed: int = 0, size: tuple[int, int] = (40, 32)) -> bytes:
    """A grey PNG with a bright blob (not 28x28, so the resize runs too)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 255 * np.exp(-(((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 3) / (w / 5)) ** 2))
    noise = rng.integers(0, 40, size=(h, w))
    return png_bytes(np.clip(blob + noise, 0, 255).astype(np.uint8))


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = SRC + os.pathsep + out.get("PYTHONPATH", "")
    out["PYTHONUNBUFFERED"] = "1"
    return out


class ServerProcess:
    """``cnnkit serve MODEL --port 0 ...`` in a subprocess; ``url`` from its first line."""

    def __init__(self, *args: str, cwd: str | None = None, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "cnnkit", "serve", *args, "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=cwd
        )
        deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self.url = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(r"http://\S+/", line)
            if found:
                self.url = found.group(0)
                break
        if not self.url:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"cnnkit serve did not start: {''.join(self.lines)}{out}{err}")

    def interrupt(self, timeout: float = 20.0) -> tuple[int, str, str]:
        """Ctrl-C: SIGINT, then wait; returns ``(returncode, stdout, stderr)``."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
