"""cnnkit.viz and `cnnkit show`: the PNG files are valid, of the figure's size, and hold what they claim
(one panel per filter, one row per conv/pool layer, two panels of two lines, labelled heat maps)."""

from __future__ import annotations

import json
import sys

import matplotlib  # noqa: F401  (a dependency: fail loudly if missing)
import numpy as np
import pytest
from PIL import Image

from cnnkit import viz  # noqa: E402
from cnnkit.cli import main  # noqa: E402
from cnnkit.errors import CnnkitError, ConfigError, ShapeError  # noqa: E402
from cnnkit.models import zoo  # noqa: E402
from cnnkit.ops.conv import conv2d  # noqa: E402
from cnnkit.viz._mpl import pixel_size  # noqa: E402

HISTORY = {
    "loss": [2.0, 1.2, 0.9, 0.8],
    "accuracy": [0.3, 0.55, 0.7, 0.75],
    "val_loss": [1.8, 1.1, 1.0, 1.05],
    "val_accuracy": [0.35, 0.6, 0.66, 0.65],
}


@pytest.fixture(scope="module")
def simple_cnn():
    return zoo.get("simple_cnn", seed=0)


@pytest.fixture(scope="module")
def lenet():
    return zoo.get("lenet5", input_shape=(1, 28, 28), seed=0)


def assert_png(path, fig):
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == pixel_size(fig)
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def panels(fig, label):
    return [ax for ax in fig.axes if ax.get_label() == label]


# ----------------------------------------------------------------------------- filters
def test_filters_rgb_one_panel_per_filter(simple_cnn, tmp_path):
    fig = viz.filters_figure(simple_cnn)
    axes = panels(fig, "filter")
    assert len(axes) == 32
    for ax in axes[:3]:
        data = np.asarray(ax.images[0].get_array())
        assert data.shape == (3, 3, 3)  # RGB, normalised per filter
        assert data.min() == pytest.approx(0.0) and data.max() == pytest.approx(1.0)
    assert "weight 32x3x3x3" in fig._suptitle.get_text()
    path = viz.plot_filters(simple_cnn, tmp_path / "filters.png")
    assert path == tmp_path / "filters.png"
    assert_png(path, fig)


def test_filters_grey_layer_choice_and_limit(simple_cnn, lenet):
    fig = viz.filters_figure(simple_cnn, layer="3", max_filters=10)
    assert len(panels(fig, "filter")) == 10
    assert "first 10 of 64" in fig._suptitle.get_text()
    assert len(fig.axes) == 11  # ten panels and the colour bar of the shared grey scale
    grey = viz.filters_figure(lenet)
    axes = panels(grey, "filter")
    assert len(axes) == 6
    np.testing.assert_allclose(np.asarray(axes[2].images[0].get_array()), lenet[0].params["weight"][2, 0])
    with pytest.raises(ConfigError, match="no convolution layer called"):
        viz.filters_figure(simple_cnn, layer="7")


# ----------------------------------------------------------------------------- feature maps
def test_feature_maps_rows_and_values(lenet, tmp_path):
    image = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    rows = viz.feature_maps(lenet, image)
    assert [(name, out.shape) for name, _, out in rows] == [
        ("0", (6, 28, 28)),
        ("2", (6, 14, 14)),
        ("3", (16, 10, 10)),
        ("5", (16, 5, 5)),
    ]
    first = conv2d(image[None, None], lenet[0].params["weight"], lenet[0].params["bias"], padding=2)[0]
    np.testing.assert_allclose(rows[0][2], first, rtol=1e-5, atol=1e-6)
    fig = viz.feature_maps_figure(lenet, image, max_maps=8)
    assert len(panels(fig, "map:input")) == 1
    assert [len(panels(fig, f"map:{name}")) for name in ("0", "2", "3", "5")] == [6, 6, 8, 8]
    path = viz.plot_feature_maps(lenet, image, tmp_path / "maps.png", max_maps=8)
    assert_png(path, fig)


def test_feature_maps_rgb_and_bad_shape(simple_cnn):
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # H x W x C pixels
    fig = viz.feature_maps_figure(simple_cnn, image, max_maps=4)
    assert len(panels(fig, "map:input")) == 1
    assert len(panels(fig, "map:0")) == 4
    with pytest.raises(ShapeError, match="input shape"):
        viz.feature_maps_figure(simple_cnn, np.zeros((3, 28, 28)))


# ----------------------------------------------------------------------------- curves
def _check_curves(fig, n_lines=2):
    assert len(fig.axes) == 2
    loss, acc = fig.axes
    assert loss.get_title().startswith("Loss") and acc.get_title() == "Accuracy"
    for ax in (loss, acc):
        assert len(ax.get_lines()) == n_lines
        assert ax.get_xlabel() == "epoch"
        assert ax.get_legend() is not None
        np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(loss.get_lines()[0].get_ydata(), HISTORY["loss"])


def test_curves_from_dict_and_history(tmp_path):
    from cnnkit.training.history import History

    fig = viz.curves_figure(HISTORY)
    _check_curves(fig)
    history = History()
    for epoch in range(4):
        history.append(epoch, {k: v[epoch] for k, v in HISTORY.items()})
    _check_curves(viz.curves_figure(history))
    _check_curves(viz.curves_figure(history.to_dict()))
    _check_curves(viz.curves_figure([{k: v[e] for k, v in HISTORY.items()} for e in range(4)]))
    _check_curves(viz.curves_figure({"loss": HISTORY["loss"], "accuracy": HISTORY["accuracy"]}), n_lines=1)
    path = viz.plot_curves(history, tmp_path / "curves.png")
    assert_png(path, fig)


def test_curves_bad_input():
    with pytest.raises(ConfigError, match="no 'loss' or 'accuracy'"):
        viz.curves_figure({"lr": [0.1]})
    with pytest.raises(ConfigError, match="one value per epoch"):
        viz.curves_figure({"loss": [1.0, 0.5], "val_loss": [1.0]})


# ----------------------------------------------------------------------------- confusion
def test_confusion_labels_and_annotations(tmp_path):
    matrix = [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    fig = viz.confusion_figure(matrix, ["cat", "dog", "bird"])
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heat map and colour bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "bird"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    assert [t.get_text() for t in ax.texts] == ["5", "1", "0", "2", "7", "1", "0", "0", "9"]
    assert "accuracy 84.0%" in ax.get_title()
    norm = viz.confusion_figure(matrix, None, normalize=True).axes[0]
    assert [t.get_text() for t in norm.texts][:3] == ["0.83", "0.17", "0.00"]
    assert [t.get_text() for t in norm.get_xticklabels()] == ["0", "1", "2"]
    path = viz.plot_confusion(matrix, ["cat", "dog", "bird"], tmp_path / "cm.png")
    assert_png(path, fig)


def test_confusion_bad_input():
    with pytest.raises(ShapeError, match="square"):
        viz.confusion_figure([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ShapeError, match="class names"):
        viz.confusion_figure([[1, 0], [0, 1]], ["a"])


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(CnnkitError, match=r"pip install cnnkit\[viz\]"):
        viz.confusion_figure([[1]])


# ----------------------------------------------------------------------------- CLI
def test_cli_show_all_pictures(tmp_path, lenet, capsys):
    from cnnkit.training.history import History

    model_path = tmp_path / "m.cnnkit"
    lenet.save(model_path)
    Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)).save(
        tmp_path / "x.png"
    )
    history = History()
    for epoch in range(4):
        history.append(epoch, {k: v[epoch] for k, v in HISTORY.items()})
    history.to_json(tmp_path / "history.json")
    (tmp_path / "cm.json").write_text(
        json.dumps({"test": {"confusion_matrix": [[3, 1], [0, 4]], "class_names": ["a", "b"]}})
    )
    runs = [
        ["filters", str(model_path)],
        ["maps", str(model_path), str(tmp_path / "x.png"), "--max-maps", "4"],
        ["curves", str(tmp_path / "history.json")],
        ["confusion", str(tmp_path / "cm.json"), "--normalize"],
    ]
    for k, argv in enumerate(runs):
        out = tmp_path / f"out{k}.png"
        assert main(["show", *argv, "--out", str(out)]) == 0, argv
        with Image.open(out) as img:
            assert img.format == "PNG" and img.size[0] > 300
    assert "wrote" in capsys.readouterr().out


def test_cli_show_does_not_overwrite_without_force(tmp_path, capsys):
    (tmp_path / "cm.json").write_text(json.dumps([[1, 2], [3, 4]]))
    out = tmp_path / "cm.png"
    out.write_bytes(b"keep me")
    assert main(["show", "confusion", str(tmp_path / "cm.json"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["show", "confusion", str(tmp_path / "cm.json"), "--out", str(out), "--force"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_cli_show_bad_inputs(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["show", "curves", str(tmp_path / "bad.json"), "--out", str(tmp_path / "c.png")]) == 2
    assert main(["show", "confusion", str(tmp_path / "missing.json"), "--out", str(tmp_path / "c.png")]) == 2
    (tmp_path / "nocm.json").write_text(json.dumps({"accuracy": 0.9}))
    assert main(["show", "confusion", str(tmp_path / "nocm.json"), "--out", str(tmp_path / "c.png")]) == 2
    assert "no confusion matrix" in capsys.readouterr().err
    for picture in ("filters", "maps", "curves", "confusion"):
        with pytest.raises(SystemExit) as exc:
            main(["show", picture, "--help"])
        assert exc.value.code == 0


def test_cli_show_confusion_reads_the_evaluate_report(tmp_path):
    report = {"accuracy": 0.75, "classes": ["cat", "dog"], "confusion_matrix": [[2, 1], [0, 1]]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    from cnnkit.cli.show import _find_confusion

    assert _find_confusion(report, "report.json") == ([[2, 1], [0, 1]], ["cat", "dog"])
    out = tmp_path / "cm.png"
    assert main(["show", "confusion", str(tmp_path / "report.json"), "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG"
