"""The summary table: the notes' shapes (sections 5 and 9), counts, totals and nesting."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cnnkit.models as models
from cnnkit import ConfigError
from cnnkit.layers import Conv2D, Dense, Flatten, ReLU
from cnnkit.models import Sequential
from cnnkit.models.summary import format_shape, layer_rows, notes_shape, summary


def _table(text: str) -> list[list[str]]:
    """The table's body rows, split into cells (cells are separated by 3+ spaces)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"="}]
    return [re.split(r"\s{3,}", line.strip()) for line in lines[rules[1] + 1 : rules[2]]]


def _total(text: str, label: str) -> int:
    match = re.search(rf"^{label}: ([\d,]+)", text, flags=re.M)
    assert match, label
    return int(match.group(1).replace(",", ""))


def test_shape_formats():
    assert format_shape((32, 16, 16)) == "(32, 16, 16)"
    assert notes_shape((32, 16, 16)) == "16x16x32"
    assert notes_shape((4096,)) == "4,096"
    assert format_shape((10,)) == "(10,)"
    assert notes_shape(None) == format_shape(None) == "?"


def test_section_5_shapes_params_and_mult_adds():
    model = models.get("simple_cnn", seed=0)
    rows = [r for r in _table(summary(model)) if "ReLU" not in r[0]]
    # notes 5.2-5.8, written H x W x C as the notes do
    assert [r[2] for r in rows] == ["32x32x32", "16x16x32", "16x16x64", "8x8x64", "4,096", "128", "10"]
    assert [r[1] for r in rows] == [
        "(32, 32, 32)",
        "(32, 16, 16)",
        "(64, 16, 16)",
        "(64, 8, 8)",
        "(4096,)",
        "(128,)",
        "(10,)",
    ]
    params = [int(r[3].replace(",", "")) for r in rows]
    # conv: F*C*3*3 + F; dense: in*out + out
    assert params == [32 * 27 + 32, 0, 64 * 288 + 64, 0, 0, 4096 * 128 + 128, 128 * 10 + 10]
    macs = {r[0]: int(r[4].replace(",", "")) for r in rows}
    assert macs["0 (Conv2D)"] == 32 * 32 * 32 * 27  # positions * filters * taps
    assert macs["3 (Conv2D)"] == 16 * 16 * 64 * 288
    assert macs["7 (Dense)"] == 4096 * 128
    assert macs["9 (Dense)"] == 128 * 10


def test_section_9_shapes():
    text = summary(models.get("cats_dogs_cnn", seed=0))
    shapes = [r[2] for r in _table(text) if "ReLU" not in r[0]]
    assert shapes == [
        "128x128x32",
        "64x64x32",
        "64x64x64",
        "32x32x64",
        "32x32x128",
        "16x16x128",
        "32,768",
        "512",
        "2",
    ]
    assert _total(text, "Total params") == 16_872_002


def test_totals_equal_count_params_and_row_sums():
    model = models.get("simple_cnn", seed=0)
    text = summary(model)
    rows = _table(text)
    assert sum(int(r[3].replace(",", "")) for r in rows) == model.count_params() == 545_098
    assert _total(text, "Total params") == _total(text, "Trainable params") == 545_098
    assert _total(text, "Non-trainable params") == 0
    assert (
        _total(text, "Mult-adds per sample") == sum(int(r[4].replace(",", "")) for r in rows) == model.macs()
    )
    assert _total(text, "Weights memory") == 545_098 * 4


def test_header_states_the_layout():
    text = summary(models.get("simple_cnn", seed=0))
    head = "\n".join(text.splitlines()[:3])
    assert "simple_cnn" in head and "(3, 32, 32)" in head
    assert "(C, H, W)" in head and "H x W x C" in head


def test_frozen_layers_are_non_trainable():
    model = models.get("simple_cnn", seed=0)
    model[7].trainable = False  # the 4096 -> 128 dense layer
    text = summary(model)
    assert _total(text, "Trainable params") == model.count_params() == 545_098 - 524_416
    assert _total(text, "Non-trainable params") == 524_416
    assert _total(text, "Total params") == 545_098


def test_buffers_are_counted_apart_from_parameters():
    model = models.get("resnet18_small", seed=0)
    text = summary(model)
    buffers = sum(
        v.size for n, v in model.state_dict().items() if n.rsplit(".", 1)[-1].startswith(("running", "num"))
    )
    assert buffers > 0
    assert _total(text, "Buffers") == buffers
    assert _total(text, "Total params") == 11_173_962
    assert _total(text, "Weights memory") == sum(v.nbytes for v in model.state_dict().values())


def test_nested_names_and_container_rows():
    model = models.get("resnet18_small", seed=0)
    rows = _table(summary(model))
    names = [r[0].split(" (")[0] for r in rows]
    assert "layer1" in names and "layer1.0" in names and "layer1.0.conv1" in names
    assert "layer2.0.downsample.0" in names
    block = rows[names.index("layer2.0")]
    assert block[1] == "(128, 16, 16)" and len(block) == 3  # container: shape, no own params or mult-adds
    leaf_params = sum(int(r[3].replace(",", "")) for r in rows if len(r) == 5)
    assert leaf_params == model.count_params()


def test_max_depth_collapses_containers():
    model = models.get("resnet18_small", seed=0)
    rows = layer_rows(model, max_depth=1)
    assert [r.name for r in rows] == [
        "conv1",
        "bn1",
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
    ]
    layer3 = rows[5]
    assert (
        layer3.collapsed
        and layer3.params == model["layer3"].count_params()
        and layer3.output_shape == (256, 8, 8)
    )
    assert sum(r.params for r in rows) == model.count_params()
    assert "collapsed" in summary(model, max_depth=1)
    with pytest.raises(ConfigError):
        layer_rows(model, max_depth=0)


def test_unbuilt_model_needs_an_input_shape():
    model = Sequential([Conv2D(4, 3), ReLU(), Flatten(), Dense(2)])
    with pytest.raises(ConfigError, match="input_shape"):
        summary(model)
    text = summary(model, input_shape=(1, 5, 5))
    assert model.built and _total(text, "Total params") == 4 * 9 + 4 + 36 * 2 + 2


def test_leaf_layer_summary():
    layer = Conv2D(8, 3, seed=0)
    layer.build((3, 10, 10))
    rows = _table(summary(layer))
    assert len(rows) == 1 and rows[0][2] == "8x8x8" and rows[0][3] == "224"


def test_model_summary_method_prints_and_returns():
    model = models.get("lenet5", seed=0)
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text] == [summary(model)]
    assert model.summary(print_fn=None) == text


def test_float64_weights_memory():
    model = models.get("lenet5", seed=0, dtype=np.float64)
    assert _total(summary(model), "Weights memory") == 61_706 * 8
