"""The ``cnnkit`` command end to end on a tiny generated image folder, and its helpers.

One small LeNet-5 is trained once per module (2 epochs on 33 images of 28x28 grey); predict, evaluate and
summary then run on the file it wrote and are checked against the Python API.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import build_parser, main
from cnnkit.cli._args import parse_augment, parse_image_size, parse_shape
from cnnkit.cli._table import format_table
from cnnkit.cli._threads import auto_threads, busy_cores
from cnnkit.errors import ConfigError

CLASSES = ["bars", "dots", "plain"]
PER_CLASS = 12
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``cnnkit argv...`` in this process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def _image(kind: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
    if kind == 0:
        img[:, ::4] = 230  # vertical bars
    elif kind == 1:
        img[::4, ::4] = 255  # a grid of dots
    else:
        img[4:12, 4:12] = 128  # a grey square
    return img


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            Image.fromarray(_image(k, rng)).save(root / name / f"{i:02d}.png")
    (root / "dots" / "broken.png").write_bytes(b"this is not a PNG file")
    return root


@pytest.fixture(scope="module")
def trained(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("run") / "lenet"
    rc, stdout, stderr = run_cli(
        "train", "--model", "lenet5", "--data", image_root, "--image-size", "28", "--grey",
        "--epochs", "2", "--lr", "0.01", "--batch-size", "16", "--out", out, "--threads", "1",
    )  # fmt: skip
    assert rc == 0, stderr
    return {"out": out, "stdout": stdout, "stderr": stderr, "model": out / "model.cnnkit"}


def _readable_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if p.name != "broken.png")


# ----------------------------------------------------------------------------------------- train
def test_train_writes_a_loadable_model_with_its_preprocessing(trained: dict) -> None:
    from cnnkit.io import load_model

    model = load_model(trained["model"])
    assert model.class_names == CLASSES
    assert model.input_shape == (1, 28, 28)
    assert model.output_shape == (3,)
    pre = model.metadata["preprocess"]
    assert pre["image_size"] == [28, 28]
    assert pre["color"] == "grey"
    assert pre["normalize"]["mode"] == "standardize"
    assert len(pre["normalize"]["mean"]) == 1 and 0.0 < pre["normalize"]["mean"][0] < 1.0


def test_train_writes_metrics_json(trained: dict) -> None:
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    for key in ("history", "final", "timing", "data", "bad_files", "preprocess", "model", "params"):
        assert key in metrics, key
    assert metrics["epochs_run"] == 2
    assert len(metrics["history"]["history"]["loss"]) == 2
    assert metrics["final"]["split"] == "validation"  # a folder has no test split
    assert 0.0 <= metrics["final"]["accuracy"] <= 1.0
    # 36 readable images, 10% per class held out for validation: 3 of them.
    assert metrics["data"]["images"] == {"train": 33, "validation": 3, "test": None}
    assert metrics["timing"]["images_per_s"] > 0
    assert len(metrics["timing"]["epoch_s"]) == 2
    assert [Path(b["file"]).name for b in metrics["bad_files"]] == ["broken.png"]
    from cnnkit.io import load_model

    assert metrics["preprocess"] == load_model(trained["model"]).metadata["preprocess"]


def test_train_reports_the_corrupt_file_and_the_accuracy(trained: dict) -> None:
    assert "broken.png" in trained["stderr"]
    assert "validation accuracy:" in trained["stdout"]
    assert "Epoch 2/2" in trained["stderr"]


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_train_writes_curves_png(trained: dict) -> None:
    data = (trained["out"] / "curves.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(trained["out"] / "curves.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_train_refuses_to_overwrite_without_force(trained: dict, image_root: Path) -> None:
    before = {p.name: p.read_bytes() for p in trained["out"].iterdir()}
    rc, _, err = run_cli("train", "--data", image_root, "--image-size", "28", "--out", trained["out"])
    assert rc == 2
    assert "already exist" in err and "--force" in err and "model.cnnkit" in err
    assert {p.name: p.read_bytes() for p in trained["out"].iterdir()} == before


def test_train_with_force_overwrites(image_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    rc, stdout, err = run_cli(
        "train", "--data", image_root, "--image-size", "28", "--epochs", "1", "--limit", "9",
        "--validation-split", "0", "--out", out, "--force", "--threads", "1",
    )  # fmt: skip
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["images"]["train"] == 9
    assert metrics["final"] == {"split": "validation"}  # no held-out images: nothing to report
    assert "training accuracy" in stdout


def test_train_without_matplotlib_skips_the_png(
    image_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnnkit.viz

    def missing(*args: object, **kwargs: object) -> None:
        raise cnnkit.viz.MissingDependencyError("cnnkit.viz needs matplotlib, which is not installed")

    monkeypatch.setattr(cnnkit.viz, "plot_curves", missing)
    out = tmp_path / "run"
    rc, stdout, err = run_cli(
        "train", "--data", image_root, "--image-size", "28", "--epochs", "1", "--limit", "9", "--out", out,
        "--threads", "1",
    )  # fmt: skip
    assert rc == 0, err
    assert "curves.png skipped" in stdout
    assert not (out / "curves.png").exists()
    assert json.loads((out / "metrics.json").read_text())["curves_png"] is None
    assert (out / "model.cnnkit").exists()


def test_train_strict_fails_on_the_corrupt_file(image_root: Path, tmp_path: Path) -> None:
    rc, _, err = run_cli("train", "--data", image_root, "--strict", "--out", tmp_path / "x")
    assert rc == 2
    assert "broken.png" in err
    assert not (tmp_path / "x" / "model.cnnkit").exists()


def test_train_errors_are_clear(image_root: Path, tmp_path: Path) -> None:
    rc, _, err = run_cli("train", "--data", tmp_path / "missing", "--out", tmp_path / "o")
    assert rc == 2 and "data folder not found" in err and "missing" in err

    rc, _, err = run_cli("train", "--model", "lenet9", "--data", image_root, "--out", tmp_path / "o")
    assert rc == 2 and "unknown model 'lenet9'" in err and "lenet5" in err and "resnet18_small" in err

    rc, _, err = run_cli("train", "--data", image_root, "--image-size", "8", "--out", tmp_path / "o")
    assert rc == 2 and "lenet5" in err and "1x8x8" in err

    rc, _, err = run_cli("train", "--data", image_root, "--early-stopping", "2", "--validation-split", "0")
    assert rc == 2 and "--early-stopping" in err

    rc, _, err = run_cli("train", "--augment", "spin=3")
    assert rc == 2 and "spin" in err  # argparse rejects it before anything runs


def test_train_defaults_are_the_main_job() -> None:
    args = build_parser().parse_args(["train"])
    assert (args.model, args.data, args.optimizer) == ("lenet5", "fashion-mnist", "adam")
    assert args.out is None and not args.force and args.augment is None


# ----------------------------------------------------------------------------------------- predict
def _api_probabilities(model_path: Path, files: list[Path]) -> np.ndarray:
    """What the Python API gives with the preprocessing saved in the model file."""
    from cnnkit.data import Normalize, decode_image
    from cnnkit.io import load_model

    model = load_model(model_path)
    pre = model.metadata["preprocess"]
    norm = Normalize.from_config(pre["normalize"])
    x = np.stack([decode_image(f, tuple(pre["image_size"]), pre["color"]) for f in files])
    return model.predict(norm(x))


def test_predict_matches_the_python_api(trained: dict, image_root: Path) -> None:
    rc, out, err = run_cli("predict", trained["model"], image_root, "--json", "--top-k", "3")
    assert rc == 0, err
    report = json.loads(out)
    files = _readable_images(image_root)
    assert [Path(p["file"]) for p in report["predictions"]] == files
    expected = _api_probabilities(trained["model"], files)
    for pred, probs in zip(report["predictions"], expected, strict=True):
        assert pred["top"][0]["class"] == CLASSES[int(np.argmax(probs))]
        got = {t["class"]: t["probability"] for t in pred["top"]}
        want = {CLASSES[i]: float(probs[i]) for i in range(3)}
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-7)
        ps = [t["probability"] for t in pred["top"]]
        assert ps == sorted(ps, reverse=True)
    assert [Path(e["file"]).name for e in report["errors"]] == ["broken.png"]
    assert "broken.png" in err


def test_predict_table_and_bad_inputs_are_reported(trained: dict, image_root: Path, tmp_path: Path) -> None:
    one = image_root / "bars" / "00.png"
    rc, out, err = run_cli("predict", trained["model"], one, tmp_path / "nope.png", "--top-k", "5")
    assert rc == 0
    header = out.splitlines()[0].split()
    assert header == ["file", "top1", "p1", "top2", "p2", "top3", "p3"]  # --top-k 5 on 3 classes
    assert "--top-k 5 > the model's 3 classes" in err
    row = out.splitlines()[2]
    assert row.startswith(str(one)) and sum(name in row for name in CLASSES) == 3  # k clipped to 3 classes
    assert "nope.png" in err and "no such file" in err

    rc, _, err = run_cli("predict", trained["model"], image_root / "dots" / "broken.png")
    assert rc == 1 and "no image could be read" in err


def test_predict_preprocessing_is_the_data_module(image_root: Path, tmp_path: Path) -> None:
    """``cnnkit predict`` decodes and normalises with cnnkit.data itself (no copies to drift apart)."""
    from cnnkit.data import Normalize, decode_image
    from cnnkit.data.preprocess import Preprocess

    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(big)
    palette = tmp_path / "palette.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P").save(palette, transparency=0)
    files = [*_readable_images(image_root)[:3], big, palette]
    for size, color in (((28, 28), "grey"), ((12, 20), "rgb")):
        pre = Preprocess(size, color, Normalize("unit"))
        ours = np.stack([pre.read(f) for f in files])
        theirs = np.stack([decode_image(f, size, color) for f in files])
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs)
        for norm in (Normalize("unit"), Normalize("symmetric"), Normalize("standardize").fit(theirs)):
            saved = Preprocess(size, color, norm).to_metadata()
            got = Preprocess.from_metadata(json.loads(json.dumps(saved)))
            assert got.normalize.get_config() == norm.get_config() and got.image_size == size
            assert np.array_equal(got(ours), norm(theirs))
            assert np.array_equal(got.prepare(files[0]), norm(theirs[0]))
    meta = {"image_size": [28, 28], "color": "grey"}
    with pytest.raises(ConfigError, match="normalize mode"):
        Preprocess.from_metadata({**meta, "normalize": {"mode": "whiten"}})
    with pytest.raises(ConfigError, match="standardize needs std"):
        Preprocess.from_metadata({**meta, "normalize": {"mode": "standardize", "mean": [0.5], "std": None}})
    with pytest.raises(ConfigError, match="image_size"):
        Preprocess.from_metadata({**meta, "image_size": [28, -1]})


def test_predict_imports_stay_lean(trained: dict, image_root: Path) -> None:
    code = (
        "import sys; from cnnkit.cli import main; "
        f"rc = main(['predict', {str(trained['model'])!r}, {str(image_root / 'bars' / '00.png')!r}]); "
        # cnnkit.training.fit is the one path to probabilities (it knows a model ending in Softmax)
        "heavy = [m for m in ('torch', 'matplotlib', 'tqdm', 'numba', 'cnnkit.data.loader', "
        "'cnnkit.data.augment', 'cnnkit.data.datasets', 'cnnkit.data.idx', 'gzip') "
        "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_predict_missing_model_file(tmp_path: Path, image_root: Path) -> None:
    rc, _, err = run_cli("predict", tmp_path / "none.cnnkit", image_root)
    assert rc == 2 and "model file not found" in err


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_json_counts_every_readable_image(trained: dict, image_root: Path) -> None:
    rc, out, err = run_cli("evaluate", trained["model"], image_root, "--json")
    assert rc == 0, err
    report = json.loads(out)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == report["images"] == 3 * PER_CLASS
    assert matrix.sum(axis=1).tolist() == [PER_CLASS] * 3
    # The same accuracy as the Python API on the same images.
    files = _readable_images(image_root)
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    probs = _api_probabilities(trained["model"], files)
    assert report["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == labels)))
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for k, row in enumerate(report["per_class"]):
        assert row["recall"] == pytest.approx(matrix[k, k] / matrix[k].sum())
        if matrix[:, k].sum():
            assert row["precision"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
    assert [Path(s["file"]).name for s in report["skipped_files"]] == ["broken.png"]


def test_evaluate_table(trained: dict, image_root: Path, tmp_path: Path) -> None:
    png = tmp_path / "cm.png"
    rc, out, err = run_cli("evaluate", trained["model"], image_root, "--confusion-png", png)
    assert rc == 0, err
    assert "accuracy:" in out and "confusion matrix" in out and "precision" in out
    rows = [line for line in out.splitlines() if line[:2] in ("0 ", "1 ", "2 ")]
    assert len(rows) == 3
    assert sum(int(v) for line in rows for v in line.split()[2:]) == 3 * PER_CLASS
    if not HAS_MPL:
        assert "skipped" in out
        return
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    rc, _, err = run_cli("evaluate", trained["model"], image_root, "--confusion-png", png)
    assert rc == 2 and "--force" in err


def test_evaluate_errors(trained: dict, tmp_path: Path) -> None:
    rc, _, err = run_cli("evaluate", trained["model"], tmp_path / "nowhere")
    assert rc == 2 and "data folder not found" in err
    other = tmp_path / "other"
    for name in ("cats", "dogs"):
        (other / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(other / name / "a.png")
    rc, _, err = run_cli("evaluate", trained["model"], other)
    assert rc == 2 and "cats" in err and "bars" in err


# ----------------------------------------------------------------------------------------- summary
def test_summary_of_a_zoo_name() -> None:
    rc, out, _ = run_cli("summary", "lenet5", "--input-shape", "1,28,28", "--classes", "10")
    assert rc == 0
    # LeNet-5: 6*25+6 + 16*6*25+16 + 400*120+120 + 120*84+84 + 84*10+10 = 61,706 parameters.
    assert "61,706" in out and "(6, 28, 28)" in out


def test_summary_of_a_model_file(trained: dict) -> None:
    rc, out, _ = run_cli("summary", trained["model"])
    assert rc == 0
    # The 3-class head has 84*3+3 = 255 parameters instead of 850: 61,706 - 850 + 255 = 61,111.
    assert "61,111" in out
    assert "bars, dots, plain" in out


def test_summary_errors(tmp_path: Path) -> None:
    rc, _, err = run_cli("summary", "lenet")
    assert rc == 2 and "unknown model 'lenet'" in err and "lenet5" in err
    rc, _, err = run_cli("summary", str(tmp_path / "gone.cnnkit"))
    assert rc == 2 and "not found" in err
    rc, _, err = run_cli("summary", "lenet5", "--input-shape", "1,28")
    assert rc == 2 and "C,H,W" in err


# ----------------------------------------------------------------------------------------- bench
def test_bench_prints_images_per_second(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    rc, out, err = run_cli(
        "bench", "--models", "lenet5", "--steps", "2", "--warmup", "1", "--json", path, "--threads", "1"
    )
    assert rc == 0, err
    assert "train img/s" in out and "lenet5" in out and "BLAS" in out
    data = json.loads(path.read_text())
    (result,) = data["results"]
    assert result["model"] == "lenet5" and result["batch_size"] == 128
    assert result["train"]["steps"] == 2 and len(result["train"]["times_s"]) == 2
    for part in ("train", "inference"):
        r = result[part]
        assert r["images_per_s"] == pytest.approx(128 / r["median_s"])
    assert result["peak_rss_mb"] > 10
    rc, _, err = run_cli("bench", "--models", "nonet", "--steps", "1")
    assert rc == 2 and "nonet" in err and "lenet5" in err


def test_training_step_is_plain_gradient_descent() -> None:
    """One step changes every weight by exactly -lr * its gradient (notes section 7.3)."""
    from cnnkit.bench import training_step
    from cnnkit.models import zoo

    model = zoo.get("lenet5", num_classes=4, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 32, 32)).astype(np.float32)
    y = np.array([0, 3, 1])
    before = {k: v.copy() for k, v in model.state_dict().items()}
    loss = training_step(model, x, y, lr=0.5)
    assert loss == pytest.approx(np.log(4), rel=0.2)  # near-uniform scores of a fresh model
    for name, owner, key in model.named_parameters():
        expected = before[name] - np.float32(0.5) * owner.grads[key]
        np.testing.assert_allclose(owner.params[key], expected, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------- helpers
def test_python_m_cnnkit_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("train", "evaluate", "predict", "summary", "bench"):
        assert name in proc.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "summary", "bench"])
def test_every_subcommand_has_help(command: str) -> None:
    rc, out, _ = run_cli(command, "--help")
    assert rc == 0 and f"usage: cnnkit {command}" in out


def test_parse_augment() -> None:
    assert parse_augment("none") == {}
    assert parse_augment("rotation=10,flip") == {"rotation": 10.0, "flip": True}
    assert parse_augment("zoom, translate=3") == {"zoom": 0.1, "translate": 3.0}
    assert parse_augment("standard")["flip"] is True
    for bad in ("zoom=1.5", "rotation=-1", "flip=maybe", "shear", "zoom=x"):
        with pytest.raises(ConfigError):
            parse_augment(bad)


def test_parse_sizes() -> None:
    assert parse_image_size("28") == (28, 28)
    assert parse_image_size("32x48") == (32, 48)
    assert parse_shape("3,32,32") == (3, 32, 32)
    for bad in ("0", "a", "1,2,3"):
        with pytest.raises(ConfigError):
            parse_image_size(bad)
    with pytest.raises(ConfigError):
        parse_shape("3,32")


def test_auto_threads() -> None:
    assert auto_threads(2, 0.1) == 2  # idle machine: every core
    assert auto_threads(2, 1.0) == 1
    assert auto_threads(2, 5.0) == 1  # oversubscribed: one thread
    assert auto_threads(16, 3.2) == 13


def _fake(*values):
    it = iter(values)
    return lambda *_: next(it)


def test_busy_cores_counts_other_processes_only() -> None:
    # 1.5 CPU-seconds busy machine-wide over 1 s of wall time, 0.5 of them this process's own
    busy = busy_cores(
        read_busy=_fake(10.0, 11.5), own_seconds=_fake(2.0, 2.5), clock=_fake(0.0, 1.0), sleep=_fake(None)
    )
    assert busy == pytest.approx(1.0)
    idle = busy_cores(
        read_busy=_fake(10.0, 10.1), own_seconds=_fake(2.0, 2.2), clock=_fake(0.0, 1.0), sleep=_fake(None)
    )
    assert idle == 0.0  # never negative (clock ticks are coarse)


def test_busy_cores_without_proc_stat_is_none() -> None:
    def missing() -> float:
        raise OSError("no /proc/stat")

    assert busy_cores(read_busy=missing, sleep=_fake(None)) is None


def test_busy_cores_reads_this_machine() -> None:
    busy = busy_cores(window=0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 0.5


def test_format_table_aligns_columns() -> None:
    text = format_table(["name", "n"], [("a", 1), ("long name", 0.5)])
    lines = text.splitlines()
    assert lines[0] == "name" + " " * 12 + "n"
    assert lines[1] == "---------  ------"
    assert lines[3] == "long name  0.5000"
    assert len({len(line) for line in lines}) == 1
