"""IDX reading/writing: hand-built files, round trips, and every kind of corruption."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    encode_idx,
    read_idx,
    read_idx_images,
    read_idx_labels,
    read_idx_pair,
    write_idx,
)
from cnnkit.errors import FileFormatError


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand: big-endian magic, dims, then the payload."""
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def write(path, data: bytes, compress: bool) -> None:
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_hand_built_images_and_labels(tmp_path, compress):
    pixels = bytes(range(2 * 3 * 4))
    img = tmp_path / ("img.gz" if compress else "img")
    lbl = tmp_path / ("lbl.gz" if compress else "lbl")
    write(img, idx_bytes(0x00000803, (2, 3, 4), pixels), compress)
    write(lbl, idx_bytes(0x00000801, (2,), bytes([7, 2])), compress)
    x, y = read_idx_pair(img, lbl, num_classes=10)
    assert x.shape == (2, 1, 3, 4) and x.dtype == np.uint8
    assert x[1, 0, 2, 3] == 23 and x[0, 0, 1, 0] == 4  # row-major: index = n*12 + r*4 + c
    assert y.tolist() == [7, 2] and y.dtype == np.int64


def test_big_endian_int16_payload(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(0x00000B02, (1, 2), struct.pack(">hh", -2, 300)))
    out = read_idx(path)
    assert out.tolist() == [[-2, 300]] and out.dtype == np.int16


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    compress=st.booleans(),
)
def test_write_read_round_trip(tmp_path_factory, shape, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 50).astype(dtype)
    path = tmp_path_factory.mktemp("rt") / ("a.gz" if compress else "a")
    write_idx(path, array, compress=compress)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and np.array_equal(back, array)


def test_gzip_output_is_reproducible(tmp_path):
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "1.gz", a)
    write_idx(tmp_path / "2.gz", a)
    assert (tmp_path / "1.gz").read_bytes() == (tmp_path / "2.gz").read_bytes()
    assert gzip.decompress((tmp_path / "1.gz").read_bytes()) == encode_idx(a)


# ---------------------------------------------------------------------------------------------- corruption


def expect_error(path, match, reader=read_idx, *args):
    with pytest.raises(FileFormatError, match=match) as info:
        reader(path, *args)
    assert str(path) in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_bad_magic(tmp_path, compress):
    path = tmp_path / "bad"
    write(path, b"\x12\x34\x08\x03" + bytes(100), compress)
    expect_error(path, "magic")


def test_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(idx_bytes(0x00000701, (2,), b"\x00\x00"))
    expect_error(path, "magic")


def test_labels_read_as_images_names_both_magics(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(LABELS_MAGIC, (2,), b"\x01\x02"))
    message = expect_error(path, "0x00000803", read_idx_images)
    assert "0x00000801" in message


def test_zero_dimension(tmp_path):
    path = tmp_path / "zero"
    path.write_bytes(idx_bytes(IMAGES_MAGIC, (3, 0, 28), b""))
    expect_error(path, "dim")


def test_header_cut_inside_dims(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(struct.pack(">II", IMAGES_MAGIC, 5))  # 3 dims announced, 1 present
    expect_error(path, "dimension fields")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path, compress):
    path = tmp_path / "trunc"
    write(path, idx_bytes(IMAGES_MAGIC, (4, 2, 2), bytes(15)), compress)  # needs 16 bytes
    message = expect_error(path, "16")
    assert "15" in message


@pytest.mark.parametrize("compress", [False, True])
def test_payload_longer_than_header_says(tmp_path, compress):
    path = tmp_path / "long"
    write(path, idx_bytes(LABELS_MAGIC, (3,), bytes(5)), compress)
    expect_error(path, "3-byte payload")


@pytest.mark.parametrize("compress", [False, True])
def test_absurd_header_is_rejected_without_allocating(tmp_path, compress):
    path = tmp_path / "absurd"
    write(path, idx_bytes(IMAGES_MAGIC, (2**31, 2**31, 2**31), bytes(64)), compress)
    expect_error(path, "at most")


def test_truncated_gzip(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, 50 * 784, dtype=np.uint8).tobytes()
    data = gzip.compress(idx_bytes(IMAGES_MAGIC, (50, 28, 28), pixels))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "gzip")


@pytest.mark.parametrize("level", [0, 9])  # level 0 stores the bytes: only the CRC can catch the flip
def test_corrupt_gzip(tmp_path, level):
    payload = np.random.default_rng(0).integers(0, 10, 1000, dtype=np.uint8).tobytes()
    data = bytearray(gzip.compress(idx_bytes(LABELS_MAGIC, (1000,), payload), compresslevel=level))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flip.gz"
    path.write_bytes(bytes(data))
    expect_error(path, "corrupt")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    expect_error(tmp_path / "empty", "magic")
    expect_error(tmp_path / "nope", "not found")


def test_label_out_of_range(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(LABELS_MAGIC, (3,), bytes([1, 10, 2])))
    message = expect_error(path, r"\[0, 10\)", read_idx_labels, 10)
    assert "found 10 at index 1" in message


def test_count_mismatch(tmp_path):
    img, lbl = tmp_path / "img", tmp_path / "lbl"
    img.write_bytes(idx_bytes(IMAGES_MAGIC, (3, 2, 2), bytes(12)))
    lbl.write_bytes(idx_bytes(LABELS_MAGIC, (2,), bytes(2)))
    with pytest.raises(FileFormatError, match="3 images and 2 labels") as info:
        read_idx_pair(img, lbl)
    assert str(img) in str(info.value) and str(lbl) in str(info.value)


def test_wrong_image_size(tmp_path):
    img, lbl = tmp_path / "img", tmp_path / "lbl"
    img.write_bytes(idx_bytes(IMAGES_MAGIC, (1, 2, 2), bytes(4)))
    lbl.write_bytes(idx_bytes(LABELS_MAGIC, (1,), bytes(1)))
    with pytest.raises(FileFormatError, match="28x28"):
        read_idx_pair(img, lbl, image_shape=(28, 28))
