"""Every Python block of README.md runs as written (in order, in one namespace, in a temporary folder).

One documented substitution keeps the default run short: the tour trains on ``x_train[:20000]`` for 3
epochs and evaluates on the whole test split; here it trains on the first 600 images for 1 epoch and
evaluates on 500 (``SHRINK``). Everything else runs exactly as a reader would paste it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

#: (README text, what the test runs instead): fewer images, the same code.
SHRINK = (
    ("[:20000]", "[:600]"),
    ("epochs=3", "epochs=1"),
    ("x_test = data.x_test.astype", "x_test = data.x_test[:500].astype"),
    ("model.evaluate(x_test, data.y_test)", "model.evaluate(x_test, data.y_test[:500])"),
)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_the_blocks_it_documents() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    tour = blocks[0]
    for old, _ in SHRINK:  # a substitution that no longer applies would silently run the full tour
        assert old in tour, old


def test_every_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks(README.read_text(encoding="utf-8"))):
        code = block
        for old, new in SHRINK:
            code = code.replace(old, new)
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "lenet5.cnnkit").is_file()
    assert namespace["probabilities"].shape == (5, 10)
    assert namespace["dx"].shape == namespace["x"].shape
