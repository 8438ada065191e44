"""Crafted model files: every value of the architecture JSON changed, one at a time, must give a cnnkit error.

A file from a stranger is validated before anything large is allocated (io/model_file.py: config values,
each layer's constructor, then a shape-only build compared with the tensor table). The reader runs in a
subprocess under an address-space cap (``resource.setrlimit(RLIMIT_AS)``), so a file that asked for
terabytes would show up as a MemoryError, not as a machine that swaps. To stay fast, the worker parses
each zoo model's file once and gives the reader (everything after the safetensors parsing) one mutated
header after another. The default run tries a seeded sample of the mutations of three zoo models'
files, plus the values known to have exhausted memory; ``-m slow`` tries all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import FileFormatError
from cnnkit.io import load_file, save_file
from cnnkit.io.model_file import load_model
from cnnkit.models import zoo

MODELS = ("lenet5", "simple_cnn", "resnet18_small")
CAP_BYTES = 3 << 30  # the reader's address space: imports, BLAS and one model file fit easily

#: Replacement values: huge, overflowing, negative, zero, fractional, wrong types.
VALUES = (10**12, 2**63, -(2**63), -3, 0, 1, 2.5, float("nan"), "x", None, True, [], [10**12, 1], {"a": 1})

WORKER = textwrap.dedent(
    """
    import json, resource, sys
    cap, plan = int(sys.argv[1]), json.loads(sys.stdin.read())
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from cnnkit.errors import CnnkitError
    from cnnkit.io import load_file
    from cnnkit.io.model_file import _checkpoint_from
    bad = []
    for path, architectures in plan.items():
        tensors, meta = load_file(path)
        for k, arch in enumerate(architectures):
            try:
                _checkpoint_from(f"{path}#{k}", tensors, {**meta, "architecture": arch})
            except CnnkitError:
                pass
            except BaseException as err:  # anything else is a failure of the reader
                bad.append([path, k, type(err).__name__, str(err)[:200], arch[:300]])
    print(json.dumps(bad))
    """
)

#: Mutations that exhausted memory or overflowed before the reader validated the architecture.
KNOWN = (("filters", 10**12), ("stride", 2**63), ("units", 10**12), ("kernel_size", [10**6, 10**6]))


def _leaves(spec: object, where: tuple = ()) -> list[tuple]:
    """Paths to every scalar (and list of scalars) inside the architecture's configs."""
    out: list[tuple] = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "class":
                continue
            out.extend(_leaves(value, (*where, key)))
            if not isinstance(value, (dict, list)) or (
                isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)
            ):
                out.append((*where, key))
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            out.extend(_leaves(value, (*where, i)))
    return sorted(set(out), key=str)


def _set(spec: object, path: tuple, value: object) -> object:
    spec = json.loads(json.dumps(spec))
    node = spec
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return spec


def _plan(tmp: Path, sample: int | None, seed: int = 0) -> dict[str, list[str]]:
    """``{model file: [mutated architecture JSON, ...]}``: one value changed in each."""
    plan = {}
    rng = np.random.default_rng(seed)
    for name in MODELS:
        base = tmp / f"{name}.cnnkit"
        zoo.get(name, seed=0).save(base)
        spec = json.loads(load_file(base)[1]["architecture"])
        leaves = _leaves(spec)
        cases = [(leaf, value) for leaf in leaves for value in VALUES]
        if sample is not None:
            cases = [cases[i] for i in rng.choice(len(cases), min(sample, len(cases)), replace=False)]
            for key, value in KNOWN:  # the first place each known killer fits
                leaf = next((leaf for leaf in leaves if leaf[-1] == key), None)
                if leaf is not None:
                    cases.append((leaf, value))
        plan[str(base)] = [json.dumps(_set(spec, leaf, value)) for leaf, value in cases]
    return plan


def _run_reader(plan: dict[str, list[str]]) -> list:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(CAP_BYTES)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sampled_mutations_give_only_cnnkit_errors(tmp_path: Path) -> None:
    plan = _plan(tmp_path, sample=40)
    assert sum(map(len, plan.values())) >= 3 * 40
    assert _run_reader(plan) == []


@pytest.mark.slow
def test_every_single_value_mutation_gives_only_cnnkit_errors(tmp_path: Path) -> None:
    plan = _plan(tmp_path, sample=None)
    assert sum(map(len, plan.values())) > 2000
    assert _run_reader(plan) == []


def _with_architecture(tmp_path: Path, edit) -> Path:
    model = zoo.get("lenet5", seed=0)
    path = tmp_path / "base.cnnkit"
    model.save(path)
    tensors, meta = load_file(path)
    spec = json.loads(meta["architecture"])
    edit(spec)
    out = tmp_path / "crafted.cnnkit"
    save_file(tensors, out, metadata={**meta, "architecture": json.dumps(spec)})
    return out


def _first_conv(spec: dict) -> dict:
    return next(s for s in spec["config"]["layers"].values() if s["class"] == "Conv2D")["config"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("filters", 10**12, "filters = 1000000000000 is out of range"),
        ("stride", 2**63, "stride = 9223372036854775808 is out of range"),
        ("filters", -6, "filters must be an int >= 1"),
        ("filters", 7, "should be float32 of shape \\(7, 1, 5, 5\\)"),
        ("kernel_size", 4096, "kernel"),
    ],
)
def test_crafted_config_names_the_layer_and_the_key(
    tmp_path: Path, key: str, value: int, message: str
) -> None:
    path = _with_architecture(tmp_path, lambda spec: _first_conv(spec).__setitem__(key, value))
    with pytest.raises(FileFormatError, match=message) as info:
        load_model(path)
    assert "conv" in str(info.value).lower()


def test_huge_activation_without_parameters_is_refused(tmp_path: Path) -> None:
    """Padding that blows up the feature maps but no parameter shape: caught by the activation bound."""
    path = _with_architecture(tmp_path, lambda spec: _first_conv(spec).__setitem__("padding", 1 << 20))
    with pytest.raises(FileFormatError, match="out of range|would output"):
        load_model(path)


def test_class_names_must_match_the_outputs(tmp_path: Path) -> None:
    model = zoo.get("lenet5", seed=0)
    path = tmp_path / "m.cnnkit"
    model.save(path)
    tensors, meta = load_file(path)
    for names in (["a", "b"], [str(i) for i in range(11)]):
        save_file(tensors, path, metadata={**meta, "class_names": json.dumps(names)})
        with pytest.raises(
            FileFormatError, match=f"class_names has {len(names)} names, but the model has 10"
        ):
            load_model(path)
