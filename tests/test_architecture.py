"""The floors of docs/architecture.md hold: each imports only the floors below it, and no module of
src/cnnkit takes part in an import cycle (imports inside functions and ``TYPE_CHECKING`` blocks count).

The floors are the import-linter ``layers`` contract in pyproject.toml (``[tool.importlinter]``); this
test runs ``lint-imports`` on it, and finds cycles with grimp, the graph import-linter builds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

grimp = pytest.importorskip("grimp")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def test_each_floor_imports_only_floors_below_it():
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(
        [*command, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_cnnkit():
    sys.path.insert(0, str(SRC))
    try:
        graph = grimp.build_graph("cnnkit", cache_dir=None)
    finally:
        sys.path.remove(str(SRC))
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert len(edges) > 50  # the whole package was read
    assert _cycles(edges) == []


def _doc_block(heading: str) -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_new_layer_example_runs_and_passes_gradcheck(tmp_path):
    import numpy as np

    import cnnkit
    from cnnkit.layers import Dense, Flatten

    namespace: dict = {}
    exec(_doc_block("How to add a new layer"), namespace)
    layer = namespace["ScaledReLU"](alpha=3.0)
    assert type(layer).registry_name == "example>ScaledReLU"
    x64 = np.random.default_rng(0).normal(size=(2, 3, 4, 4)) + 0.05  # away from the kink at 0
    cnnkit.gradcheck(namespace["ScaledReLU"](alpha=3.0, dtype=np.float64), x64)
    model = cnnkit.Sequential([Flatten(), layer, Dense(2)], input_shape=(3, 4, 4), seed=0)
    model.save(tmp_path / "m.cnnkit")
    loaded = cnnkit.load_model(tmp_path / "m.cnnkit")
    assert loaded[1].alpha == 3.0 and type(loaded[1]) is namespace["ScaledReLU"]


def test_the_new_callback_example_runs():
    import numpy as np

    import cnnkit
    from cnnkit.layers import Dense, Flatten
    from cnnkit.optim import SGD

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 2, 2)).astype(np.float32)
    y = (x[:, 0, 0, 0] > 0).astype(np.int64)
    model = cnnkit.Sequential([Flatten(), Dense(2)], input_shape=(1, 2, 2), seed=0)
    code = _doc_block("How to add a new callback").replace(
        "callbacks=[StopAtLoss(0.05)])", "callbacks=[StopAtLoss(0.3)], optimizer=SGD(0.5), verbose=0, seed=0)"
    )
    namespace = {"model": model, "x": x, "y": y, "SGD": SGD}
    exec(code, namespace)
    history = cnnkit.training.fit(
        cnnkit.Sequential([Flatten(), Dense(2)], input_shape=(1, 2, 2), seed=0), x, y, epochs=50,
        callbacks=[namespace["StopAtLoss"](0.3)], optimizer=SGD(0.5), verbose=0, seed=0,
    )  # fmt: skip
    assert history.history["loss"][-1] < 0.3 and len(history) < 50
