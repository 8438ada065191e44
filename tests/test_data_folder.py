"""image_folder: lazy decoding, bad-file reporting, stratified split, and errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import BadFileWarning, DataLoader, ImageFolder, image_folder
from cnnkit.errors import DataError

COLOURS = {"bird": (0, 0, 255), "cat": (255, 0, 0), "dog": (0, 255, 0)}


def solid(colour, size=(20, 12), mode="RGB"):
    return Image.new("RGB", size, colour).convert(mode)


def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.fixture
def folder(tmp_path):
    """Three classes of solid-colour images (PNG and JPEG, several modes) plus three bad files."""
    root = tmp_path / "pets"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(5):
            solid(colour, size=(20 + i, 12 + 2 * i)).save(root / name / f"{i}.png")
        solid(colour, mode="P").save(root / name / "p.png")
        solid(colour, mode="RGBA").save(root / name / "rgba.png")
        solid(colour).save(root / name / "photo.jpg", quality=95)
    (root / "cat" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "cat" / "notes.txt").write_text("not an image\n")
    (root / "dog" / "cut.jpg").write_bytes(truncated_jpeg())
    (root / "dog" / ".hidden.png").write_bytes(b"ignored")
    return root


BAD = {"corrupt.png", "notes.txt", "cut.jpg"}


def names(entries):
    return sorted(p.rsplit("/", 1)[-1] for p, _ in entries)


def bad_paths_in(caught):
    return [line.split(":")[0].strip() for w in caught for line in str(w.message).splitlines()[1:]]


def test_header_scan_then_decode_time_detection(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = image_folder(folder, image_size=(16, 16), validation_split=0)
    assert val is None
    assert train.class_names == ["bird", "cat", "dog"]
    # The header scan finds the text file and the garbage PNG, in one warning; the cut JPEG has a valid header.
    assert len(caught) == 1 and issubclass(caught[0].category, BadFileWarning)
    assert names(train.bad_files) == ["corrupt.png", "notes.txt"]
    assert len(train) == 3 * 8 + 1
    loader = DataLoader(train, batch_size=4, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = [sum(len(yb) for _, yb in loader) for _ in range(2)]
    assert seen == [24, 24]  # the cut JPEG is skipped in both epochs
    assert names(train.bad_files) == sorted(BAD)
    reported = bad_paths_in(caught)
    assert len(reported) == 1 and reported[0].endswith("cut.jpg")  # reported once, not once per epoch
    assert all(str(folder) in p for p, _ in train.bad_files)


def test_full_scan_reports_everything_once_up_front(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = image_folder(folder, image_size=8, check="full", validation_split=0.25)
        train.to_arrays()
        val.to_arrays()
    assert len(caught) == 1
    assert sorted(p.rsplit("/", 1)[-1] for p in bad_paths_in(caught)) == sorted(BAD)
    assert names(val.bad_files) == sorted(BAD) and len(train) + len(val) == 24


def test_callback_instead_of_warning(folder):
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may be issued
        train, _ = image_folder(folder, 8, validation_split=0, on_bad_file=lambda p, r: got.append((p, r)))
        train.to_arrays()
        train.to_arrays()
    assert names(got) == sorted(BAD)
    assert all(reason for _, reason in got)


def test_no_scan_finds_everything_at_decode_time(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _ = image_folder(folder, 8, validation_split=0, check="none")
        assert len(train) == 27 and train.bad_files == []
        x, y = train.to_arrays()
    assert len(x) == 24 and names(train.bad_files) == sorted(BAD)


@pytest.mark.parametrize("check", ["header", "full"])
def test_strict_raises_listing_the_files(folder, check):
    with pytest.raises(DataError) as info:
        image_folder(folder, 8, check=check, strict=True)
    message = str(info.value)
    expected = {"corrupt.png", "notes.txt"} | ({"cut.jpg"} if check == "full" else set())
    assert all(name in message for name in expected)


def test_strict_raises_at_decode_time_with_header_check(folder):
    (folder / "cat" / "corrupt.png").unlink()
    (folder / "cat" / "notes.txt").unlink()
    train, _ = image_folder(folder, 8, validation_split=0, strict=True)
    with pytest.raises(DataError, match="cut.jpg"):
        list(DataLoader(train, batch_size=5))


def test_decoding_colours_and_sizes(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb, _ = image_folder(folder, image_size=(6, 10), validation_split=0, check="full")
        grey, _ = image_folder(folder, image_size=(6, 10), color="grey", validation_split=0, check="full")
    x, y = rgb.to_arrays()
    assert x.shape == (24, 3, 6, 10) and x.dtype == np.uint8 and y.dtype == np.int64
    for k, name in enumerate(rgb.class_names):
        expected = np.array(COLOURS[name])
        pixels = x[y == k].transpose(0, 2, 3, 1).reshape(-1, 3).astype(int)
        assert np.abs(pixels - expected).max() <= 3  # JPEG may shift a solid colour by a little
    xg, yg = grey.to_arrays()
    assert xg.shape == (24, 1, 6, 10) and np.array_equal(yg, y)
    red_luma = 0.299 * 255
    assert np.abs(xg[yg == 1].astype(float) - red_luma).max() <= 3
    image, label = rgb[0]
    assert image.shape == (3, 6, 10) and label == 0


def test_getitem_on_a_bad_file_raises(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _ = image_folder(folder, 8, validation_split=0)
        i = next(i for i, f in enumerate(train.files) if f.endswith("cut.jpg"))
        with pytest.raises(DataError, match="cut.jpg"):
            train[i]
        with pytest.raises(DataError, match="cut.jpg"):
            train[i]


def test_validation_split_is_stratified_and_seeded(tmp_path):
    root = tmp_path / "d"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(10):
            solid(colour).save(root / name / f"{i}.png")
    train, val = image_folder(root, 8, validation_split=0.2, seed=0)
    assert isinstance(train, ImageFolder) and isinstance(val, ImageFolder)
    assert val.class_counts().tolist() == [2, 2, 2] and train.class_counts().tolist() == [8, 8, 8]
    assert not set(train.files) & set(val.files) and len(set(train.files) | set(val.files)) == 30
    again = image_folder(root, 8, validation_split=0.2, seed=0).validation
    other = image_folder(root, 8, validation_split=0.2, seed=5).validation
    assert again.files == val.files and other.files != val.files
    for part in (train, val):  # labels follow the folder each file is in
        assert all(
            f.split("/")[-2] == part.class_names[k] for f, k in zip(part.files, part.labels, strict=True)
        )


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing"):
        image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        image_folder(tmp_path / "file.png")
    flat = tmp_path / "flat"
    flat.mkdir()
    solid((1, 2, 3)).save(flat / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        image_folder(flat)
    single = tmp_path / "single"
    (single / "cats").mkdir(parents=True)
    solid((1, 2, 3)).save(single / "cats" / "a.png")
    with pytest.raises(DataError, match="single class"):
        image_folder(single)
    (single / "dogs").mkdir()
    with pytest.raises(DataError, match="dogs"):
        image_folder(single)  # an empty class folder
    (single / "dogs" / "readme.txt").write_text("no images here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="no readable images.*dogs"):
            image_folder(single)
