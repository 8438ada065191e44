"""``import cnnkit`` stays lean: heavy optional modules are imported on first use, not at start-up."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numba", "matplotlib", "tqdm", "torch", "PIL", "scipy", "threadpoolctl", "onnx", "onnxruntime")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_import_cnnkit_imports_no_heavy_module():
    assert _imported_after("import cnnkit") == set()


def test_public_names_still_exported():
    code = "import cnnkit\nfor n in cnnkit.__all__:\n    getattr(cnnkit, n)\n"
    loaded = _imported_after(code + "import sys\nsys.modules.pop('cnnkit', None)")
    assert "torch" not in loaded and "numba" not in loaded


def test_building_and_running_a_model_needs_no_numba_or_plotting():
    code = (
        "import numpy as np, cnnkit\n"
        "from cnnkit.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense\n"
        "m = cnnkit.Sequential([Conv2D(16, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3)], input_shape=(1, 8, 8))\n"
        "m.predict(np.zeros((1, 1, 8, 8), np.float32))\n"
    )
    assert not ({"matplotlib", "torch", "tqdm", "numba"} & _imported_after(code))


def test_cnnkit_onnx_imports_no_onnx_until_used():
    assert not ({"onnx", "onnxruntime", "torch"} & _imported_after("import cnnkit, cnnkit.onnx"))
