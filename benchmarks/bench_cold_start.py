"""Cold start: predicting one image in a fresh process, cnnkit's command beside the same job in PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cold_start.py [--repeats 7]

Both sides start a new Python process that loads a LeNet-5 with the same weights from disk, decodes the
same 28x28 PNG with Pillow, runs one forward pass and prints the class probabilities:

- cnnkit: ``python -m cnnkit predict model.cnnkit image.png`` (the user's command);
- PyTorch: ``python -c "import torch, ..."`` building the twin ``nn.Module``, ``load_state_dict`` from a
  ``torch.save`` file, the same preprocessing, ``softmax(model(x))``.

The two are run alternately ``--repeats`` times; the table gives the median wall time of each and the
ratio (the issue's target: cnnkit at least 5x sooner).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TORCH_SCRIPT = """
import sys, numpy as np, torch
from PIL import Image
from torch import nn
model = nn.Sequential(
    nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
    nn.Linear(84, 10))
model.load_state_dict(torch.load(sys.argv[1]))
model.eval()
img = np.asarray(Image.open(sys.argv[2]).convert("L").resize((28, 28)), dtype=np.float32) / 255
with torch.inference_mode():
    p = torch.softmax(model(torch.from_numpy(img)[None, None]), dim=1)[0]
print(" ".join(f"{v:.4f}" for v in p.tolist()))
"""


def prepare(folder: Path) -> tuple[Path, Path, Path]:
    """A saved cnnkit LeNet-5, the same weights as a torch state dict, and a PNG image."""
    import torch
    from PIL import Image

    from cnnkit.models import zoo
    from torch_bridge import to_torch

    model = zoo.get("lenet5", input_shape=(1, 28, 28), seed=0)
    model.class_names = [f"class{i}" for i in range(10)]
    model.metadata = {"preprocess": {"image_size": [28, 28], "color": "grey", "normalize": {"mode": "unit"}}}
    cnnkit_file = folder / "lenet5.cnnkit"
    model.save(cnnkit_file)
    net = to_torch(model)
    # the flat nn.Sequential in TORCH_SCRIPT has the zoo model's child keys
    torch_file = folder / "lenet5.pt"
    torch.save(net.state_dict(), torch_file)
    image = folder / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(image)
    return cnnkit_file, torch_file, image


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cnnkit_file, torch_file, image = prepare(Path(tmp))
        cnnkit_cmd = [sys.executable, "-m", "cnnkit", "predict", str(cnnkit_file), str(image)]
        torch_cmd = [sys.executable, "-c", TORCH_SCRIPT, str(torch_file), str(image)]
        timed(cnnkit_cmd)  # first run: byte-compiles; not counted
        timed(torch_cmd)
        times: dict[str, list[float]] = {"cnnkit": [], "torch": []}
        for _ in range(args.repeats):
            times["cnnkit"].append(timed(cnnkit_cmd))
            times["torch"].append(timed(torch_cmd))
    c, t = statistics.median(times["cnnkit"]), statistics.median(times["torch"])
    print(
        f"cnnkit predict: {c:.3f} s   PyTorch: {t:.3f} s   PyTorch / cnnkit = {t / c:.1f}x (median of {args.repeats})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
