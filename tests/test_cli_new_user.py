"""What a new user met (issue 13): outputs checked first, resume, 16-bit images, folder test splits, and the
rough edges of the ``cnnkit`` command. Everything runs on tiny generated image folders (16x16 PNGs)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import main
from cnnkit.io import load_model
from cnnkit.models import zoo
from test_cli import _image, run_cli

CLASSES = ["bars", "dots", "plain"]


def _folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_image(k, rng)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("imgs") / "data", per_class=10)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 file for 28x28 grey images with 3 classes (weights as initialised: predictions still differ)."""
    path = tmp_path_factory.mktemp("model") / "m.cnnkit"
    model = zoo.get("lenet5", num_classes=3, seed=0)
    model.class_names = list(CLASSES)
    model.save(path)
    return path


TRAIN = ("--model", "lenet5", "--image-size", "28", "--grey", "--batch-size", "8", "--threads", "1")


# ------------------------------------------------------------------------------ 1. outputs checked first
@pytest.mark.parametrize("out", ["/sys/cnnkit-x", "/proc/cnnkit-x", "/dev/null", "FILE/sub"])
def test_train_refuses_an_unwritable_out_before_any_work(images: Path, tmp_path: Path, out: str) -> None:
    if out.startswith("FILE"):
        (tmp_path / "some.png").write_bytes(b"x")
        out = str(tmp_path / "some.png" / "sub")
    rc, stdout, err = run_cli("train", "--data", images, "--epochs", "1", "--out", out, *TRAIN)
    assert rc == 2, err
    assert "data:" not in stdout  # nothing was loaded or trained
    assert len(err.strip().splitlines()) == 1 and "--out" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ("show", "filters", "lenet5", "-o", "/proc/cnnkit-x.png"),
        ("show", "filters", "lenet5", "-o", "/dev/null"),
        ("evaluate", "MODEL", "DATA", "--confusion-png", "/proc/cnnkit-x.png"),
        ("evaluate", "MODEL", "DATA", "--confusion-png", "/sys/cnnkit-x.png"),
        ("bench", "--models", "lenet5", "--steps", "1", "--json", "/proc/cnnkit-x.json"),
        ("bench", "--models", "lenet5", "--steps", "1", "--json", "/dev/null"),
    ],
)
def test_other_outputs_are_checked_first(argv: tuple, untrained: Path, images: Path) -> None:
    argv = tuple(str(untrained) if a == "MODEL" else str(images) if a == "DATA" else a for a in argv)
    rc, stdout, err = run_cli(*argv)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "numpy" not in stdout and "accuracy" not in stdout


# ------------------------------------------------------------------------------ 3. resume, SIGTERM
def _weights(path: Path) -> dict:
    return {k: v.copy() for k, v in load_model(path).state_dict().items()}


def test_sigterm_then_resume_is_bit_identical(images: Path, tmp_path: Path, monkeypatch) -> None:
    from cnnkit.training.fit import Trainer

    common = ("--data", images, "--epochs", "3", "--validation-split", "0.2", *TRAIN)
    rc, _, err = run_cli("train", *common, "--out", tmp_path / "whole")
    assert rc == 0, err

    original = Trainer._train_batch

    def interrupting(self, epoch, batch, *rest):
        if epoch == 1 and batch == 1:
            signal.raise_signal(signal.SIGTERM)  # as `timeout` would send it
        return original(self, epoch, batch, *rest)

    monkeypatch.setattr(Trainer, "_train_batch", interrupting)
    rc, out, err = run_cli("train", *common, "--out", tmp_path / "cut")
    assert rc == 130, err
    assert "interrupted after 1 completed epoch" in out and "--resume" in out
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["epochs_run"] == 1  # consistent files: model and metrics
    assert (tmp_path / "cut" / "model.cnnkit").is_file()
    monkeypatch.setattr(Trainer, "_train_batch", original)

    rc, out, err = run_cli("train", "--resume", tmp_path / "cut", "--threads", "1")
    assert rc == 0, err
    assert "resuming after epoch 1" in out
    whole, resumed = (
        _weights(tmp_path / "whole" / "model.cnnkit"),
        _weights(tmp_path / "cut" / "model.cnnkit"),
    )
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert np.array_equal(whole[key], resumed[key]), key
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]["history"]
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]["history"]
    assert a["loss"] == b["loss"] and a["val_loss"] == b["val_loss"]

    rc, out, err = run_cli("train", "--resume", tmp_path / "cut", "--epochs", "4", "--threads", "1")
    assert rc == 0, err
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs_run"] == 4
    rc, _, err = run_cli("train", "--resume", tmp_path / "cut", "--epochs", "2")
    assert rc == 2 and "already done 4 epochs" in err
    rc, _, err = run_cli("train", "--resume", tmp_path / "nothing-here")
    assert rc == 2 and "no checkpoint.cnnkit" in err


def test_a_second_signal_still_leaves_consistent_files(images: Path, tmp_path: Path, monkeypatch) -> None:
    from cnnkit.training.fit import Trainer

    original = Trainer._train_batch

    def twice(self, epoch, batch, *rest):
        if epoch == 1 and batch == 0:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)  # the second one stops at once
        return original(self, epoch, batch, *rest)

    monkeypatch.setattr(Trainer, "_train_batch", twice)
    out_dir = tmp_path / "o"
    rc, out, err = run_cli("train", "--data", images, "--epochs", "3", "--out", out_dir, *TRAIN)
    assert rc == 130, err
    assert "interrupted after 1 completed epoch" in out and "checkpoint.cnnkit" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["epochs_run"] == 1
    assert load_model(out_dir / "model.cnnkit").metadata["training"]["epochs"] == 1
    assert (out_dir / "checkpoint.cnnkit").is_file()


# ------------------------------------------------------------------------------ 4. 16-bit, float, EXIF
def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path: Path, untrained: Path) -> None:
    from cnnkit.data import decode_image

    grey = np.random.default_rng(3).integers(0, 256, (20, 24)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    Image.fromarray(grey.astype(np.int32) * 257).save(tmp_path / "a32.tif")
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "af.tif")
    assert Image.open(tmp_path / "a16.png").mode == "I;16"
    want = decode_image(tmp_path / "a8.png", (20, 24), "grey")
    for name in ("a16.png", "a32.tif", "af.tif"):
        assert np.array_equal(decode_image(tmp_path / name, (20, 24), "grey"), want), name
        assert np.array_equal(decode_image(tmp_path / name, (20, 24), "rgb")[0], want[0]), name

    rc, out, err = run_cli("predict", untrained, tmp_path / "a8.png", tmp_path / "a16.png", "--json")
    assert rc == 0, err
    first, second = json.loads(out)["predictions"]
    assert first["top"] == second["top"]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from cnnkit.data import decode_image

    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # a bright left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    got = decode_image(tmp_path / "turned.jpg", (20, 10), "grey")[0]
    assert got.shape == (20, 10)
    assert got[:4].mean() > 200 and got[-4:].mean() < 50  # the left edge is now at the top


# ------------------------------------------------------------------------------ 5. test splits of folders
def test_train_test_folder_layout_reports_test_accuracy(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _folder(root / "train", per_class=8, seed=1)
    _folder(root / "test", per_class=3, seed=2)
    rc, out, err = run_cli("train", "--data", root, "--epochs", "1", "--out", tmp_path / "o", *TRAIN)
    assert rc == 0, err
    assert "test accuracy" in out and "9 images)" in out
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["final"]["split"] == "test" and metrics["data"]["images"]["test"] == 9
    rc, out, err = run_cli("evaluate", tmp_path / "o" / "model.cnnkit", root, "--json")
    assert rc == 0, err
    assert json.loads(out)["images"] == 9  # only test/


def test_test_split_of_a_single_folder(images: Path, tmp_path: Path) -> None:
    rc, out, err = run_cli(
        "train", "--data", images, "--test-split", "0.2", "--epochs", "1", "--out", tmp_path / "o", *TRAIN
    )
    assert rc == 0, err
    sizes = json.loads((tmp_path / "o" / "metrics.json").read_text())["data"]["images"]
    assert sizes["test"] == 6 and sizes["train"] + sizes["validation"] == 24
    assert "test accuracy" in out
    rc, _, err = run_cli("train", "--data", "shapes", "--test-split", "0.2", "--out", tmp_path / "p")
    assert rc == 2 and "--test-split is for folders" in err


# ------------------------------------------------------------------------------ 6. rough edges
def test_no_subcommand_is_a_usage_error(capsys) -> None:
    assert main([]) == 2
    assert "usage: cnnkit" in capsys.readouterr().err


def test_bad_numbers_are_refused_by_argparse(images: Path) -> None:
    for value in ("nan", "inf", "0", "-1"):
        rc, _, err = run_cli("train", "--data", images, "--lr", value)
        assert rc == 2 and "--lr" in err, value
    rc, _, err = run_cli("train", "--data", images, "--validation-split", "1.5")
    assert rc == 2 and "--validation-split" in err


def test_limit_too_small_for_validation_says_so(tmp_path: Path) -> None:
    rc, _, err = run_cli("train", "--limit", "5", "--epochs", "1", "--out", tmp_path / "o", "--threads", "1")
    assert rc == 2 and "--validation-split" in err and "DataLoader" not in err


def test_summary_of_a_folder_and_evaluate_hint(untrained: Path, images: Path, tmp_path: Path) -> None:
    rc, _, err = run_cli("summary", tmp_path)
    assert rc == 2 and "model file expected, got a folder" in err
    png = tmp_path / "c.png"
    png.write_bytes(b"x")
    rc, _, err = run_cli("evaluate", untrained, images, "--confusion-png", png)
    assert rc == 2 and "--force" in err and "--out" not in err


def test_predict_reports_non_images_and_prints_no_empty_table(untrained: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    rc, out, err = run_cli("predict", untrained, tmp_path)
    assert rc == 1 and out == ""  # no empty table header
    assert "notes.txt" in err and "skipped" in err


def test_opening_counts_leave_out_truncated_files(images: Path, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "d"
    _folder(root, per_class=4)
    data = (root / "bars" / "00.png").read_bytes()
    (root / "bars" / "cut.png").write_bytes(data[: len(data) // 2])  # header fine, pixels missing
    rc, out, err = run_cli(
        "train", "--data", root, "--epochs", "1", "--validation-split", "0", "--out", tmp_path / "o", *TRAIN
    )
    assert rc == 0, err
    assert out.splitlines()[0].startswith("data: d (") and ": 12 train images" in out.splitlines()[0]
    assert "cut.png" in err

    from cnnkit.cli import _data

    monkeypatch.setattr(_data, "FULL_CHECK_FILES", 5)  # a "large" folder: headers only, and it says so
    data = _data.load_data(str(root), image_size=(28, 28), color="grey", on_bad_file=lambda *a: None)
    assert data.sizes()["train"] == 13 and "only their headers were checked" in data.describe()


def test_explain_size_and_network_use_the_notes_numbers() -> None:
    rc, out, _ = run_cli("explain", "size")
    assert rc == 0 and "W = 32, F = 3, P = 1, S = 1" in out
    rc, out, _ = run_cli("explain", "network")
    assert rc == 0 and "simple_cnn" in out and "896" in out


def test_untrained_zoo_pictures_say_so() -> None:
    from cnnkit.cli.show import _model

    assert "untrained: random weights" in _model("lenet5").name


def test_the_first_epoch_note_names_numba(images: Path, tmp_path: Path) -> None:
    from cnnkit.ops._jit import numba_available

    rc, out, err = run_cli("train", "--data", images, "--epochs", "1", "--out", tmp_path / "o", *TRAIN)
    assert rc == 0, err
    assert ("Numba" in out) == numba_available()


# ------------------------------------------------------------------------------ the library pipeline
def test_predict_files_uses_one_path_for_a_model_ending_in_softmax(tmp_path: Path) -> None:
    """Probabilities come from training.predict: a model ending in Softmax is not softmaxed twice."""
    import cnnkit
    from cnnkit.data.preprocess import Preprocess, load_image_for
    from cnnkit.inference import predict_files
    from cnnkit.layers import Conv2D, Dense, Flatten, ReLU, Softmax

    layers = [Conv2D(4, 3), ReLU(), Flatten(), Dense(3)]
    plain = cnnkit.Sequential(layers, input_shape=(1, 12, 12), seed=0)
    ending = cnnkit.Sequential([*layers, Softmax()], input_shape=(1, 12, 12), seed=0)
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 20), dtype=np.uint8)).save(img)
    x = load_image_for(ending, img)
    assert x.shape == (1, 1, 12, 12) and x.dtype == np.float32
    assert np.array_equal(x[0], Preprocess.from_model(ending).prepare(img))
    want = ending.forward(x, False)[0]  # the model's own output: already probabilities
    for model in (plain, ending):
        model.eval()
        results, bad = predict_files(model, [img, tmp_path / "missing.png"], top_k=3)
        assert [Path(b[0]).name for b in bad] == ["missing.png"]
        got = {t["index"]: t["probability"] for t in results[0]["top"]}
        assert np.allclose([got[i] for i in range(3)], want, rtol=1e-5, atol=1e-7)
        assert abs(sum(got.values()) - 1) < 1e-5


def test_saved_preprocessing_has_one_writer(images: Path, tmp_path: Path) -> None:
    """`cnnkit train` writes what Preprocess.to_metadata writes, and Preprocess.from_model reads it back."""
    from cnnkit.data.preprocess import Preprocess

    rc, _, err = run_cli("train", "--data", images, "--epochs", "1", "--out", tmp_path / "o", *TRAIN)
    assert rc == 0, err
    model = load_model(tmp_path / "o" / "model.cnnkit")
    pre = Preprocess.from_model(model)
    assert pre.input_shape == (1, 28, 28) and pre.normalize.mode == "standardize"
    assert model.metadata["preprocess"] == pre.to_metadata()
    bad = dict(model.metadata["preprocess"], image_size=[32, 32])
    model.metadata = {**model.metadata, "preprocess": bad}
    with pytest.raises(Exception, match="makes inputs of shape"):
        Preprocess.from_model(model)
