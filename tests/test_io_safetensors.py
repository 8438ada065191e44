"""cnnkit.io.safetensors: the safetensors layout written and read with NumPy, and its defences."""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.io.safetensors as stmod
from cnnkit.errors import ConfigError, DTypeError, FileFormatError
from cnnkit.io import load_file, read_header, save_file

# Every dtype the format names that NumPy represents, with the spec's item size.
SPEC_DTYPES = {
    "BOOL": ("?", 1),
    "U8": ("u1", 1),
    "I8": ("i1", 1),
    "U16": ("u2", 2),
    "I16": ("i2", 2),
    "U32": ("u4", 4),
    "I32": ("i4", 4),
    "U64": ("u8", 8),
    "I64": ("i8", 8),
    "F16": ("f2", 2),
    "F32": ("f4", 4),
    "F64": ("f8", 8),
    "C64": ("c8", 8),
}
SHAPES = [(), (0,), (2, 0, 3), (5,), (3, 4), (2, 3, 4, 5)]


def _random(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _file(header: dict | bytes, data: bytes = b"", length: int | None = None, pad: bool = True) -> bytes:
    """Hand-built file bytes per the spec: u64 LE length, JSON header (space padded), data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _write(tmp_path, content: bytes, name: str = "x.safetensors"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("code", sorted(SPEC_DTYPES))
def test_round_trip_every_dtype_and_shape(tmp_path, code):
    rng = np.random.default_rng(0)
    dtype = np.dtype(SPEC_DTYPES[code][0])
    tensors = {f"t{i}": _random(dtype, shape, rng) for i, shape in enumerate(SHAPES)}
    save_file(tensors, tmp_path / "a.safetensors")
    loaded, metadata = load_file(tmp_path / "a.safetensors")
    assert metadata == {}
    assert list(loaded) == list(tensors)
    for key, value in tensors.items():
        out = loaded[key]
        assert out.dtype == dtype and out.shape == value.shape
        np.testing.assert_array_equal(out, value)
        assert out.flags.writeable and out.flags.c_contiguous and out.flags.aligned
    header, _ = read_header(tmp_path / "a.safetensors")
    assert {entry["dtype"] for entry in header.values()} == {code}


def test_mixed_dtypes_keep_order_and_alignment(tmp_path):
    tensors = {
        "a.u8": np.arange(3, dtype=np.uint8),
        "b.f64": np.linspace(0, 1, 5),
        "c.f32": np.ones((2, 2), np.float32),
        "d.i16": np.array([-1, 2], np.int16),
    }
    save_file(tensors, tmp_path / "m.safetensors", metadata={"k": "v", "format": "np"})
    loaded, metadata = load_file(tmp_path / "m.safetensors")
    assert list(loaded) == list(tensors)
    assert metadata == {"k": "v", "format": "np"}
    header, _ = read_header(tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    for key, entry in header.items():
        begin = entry["data_offsets"][0]
        assert (8 + n + begin) % tensors[key].dtype.itemsize == 0, key
        np.testing.assert_array_equal(loaded[key], tensors[key])


def test_big_endian_and_non_contiguous_inputs(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    tensors = {
        "be": base.astype(">f8"),
        "be_int": np.arange(5, dtype=">i4"),
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "fortran": np.asfortranarray(base.astype(np.float32)),
    }
    save_file(tensors, tmp_path / "b.safetensors")
    loaded, _ = load_file(tmp_path / "b.safetensors")
    for key, value in tensors.items():
        assert loaded[key].dtype.isnative
        assert loaded[key].dtype == value.dtype.newbyteorder("=")
        np.testing.assert_array_equal(loaded[key], value)
    # Stored bytes are little-endian whatever the input order.
    header, _ = read_header(tmp_path / "b.safetensors")
    raw = (tmp_path / "b.safetensors").read_bytes()
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    b, e = header["be_int"]["data_offsets"]
    assert raw[start + b : start + e] == struct.pack("<5i", 0, 1, 2, 3, 4)


def test_empty_dict_round_trips(tmp_path):
    save_file({}, tmp_path / "e.safetensors")
    assert load_file(tmp_path / "e.safetensors") == ({}, {})


def test_loaded_arrays_are_independent_copies(tmp_path):
    save_file({"a": np.zeros(4, np.float32), "b": np.zeros(4, np.float32)}, tmp_path / "c.safetensors")
    loaded, _ = load_file(tmp_path / "c.safetensors")
    loaded["a"][:] = 7
    assert not np.shares_memory(loaded["a"], loaded["b"])
    np.testing.assert_array_equal(loaded["b"], 0)
    np.testing.assert_array_equal(load_file(tmp_path / "c.safetensors")[0]["a"], 0)


def test_save_rejects_bad_input(tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(DTypeError, match="'obj'"):
        save_file({"obj": np.array([object()])}, path)
    with pytest.raises(DTypeError, match="float128|longdouble|complex128"):
        save_file({"c": np.zeros(2, np.complex128)}, path)
    with pytest.raises(ConfigError, match="strings"):
        save_file({"a": np.zeros(1)}, path, metadata={"k": 1})
    with pytest.raises(ConfigError, match="reserved"):
        save_file({"__metadata__": np.zeros(1)}, path)
    with pytest.raises(ConfigError, match="names must be strings"):
        save_file({1: np.zeros(1)}, path)
    assert not path.exists()


# ------------------------------------------------------------------------------------- format compatibility
def test_our_header_follows_the_spec(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, -2], dtype=np.int64)
    save_file({"w": a, "idx": b}, tmp_path / "s.safetensors", metadata={"format": "pt"})
    raw = (tmp_path / "s.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    header_text = raw[8 : 8 + n].decode("utf-8")
    assert header_text.startswith("{")
    assert header_text.rstrip(" ").endswith("}")
    assert set(header_text[len(header_text.rstrip(" ")) :]) <= {" "}
    header = json.loads(header_text)
    assert header["__metadata__"] == {"format": "pt"}
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": header["w"]["data_offsets"]}
    assert header["idx"]["dtype"] == "I64" and header["idx"]["shape"] == [2]
    data = raw[8 + n :]
    spans = sorted(tuple(header[k]["data_offsets"]) for k in ("w", "idx"))
    assert spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[1][1] == len(data)
    wb, we = header["w"]["data_offsets"]
    ib, ie = header["idx"]["data_offsets"]
    assert data[wb:we] == struct.pack("<6f", 0, 1, 2, 3, 4, 5)
    assert data[ib:ie] == struct.pack("<2q", 1, -2)


@pytest.mark.parametrize("pad", [True, False])
def test_hand_built_file_loads(tmp_path, pad):
    # Two tensors listed in the opposite order of their bytes, a 0-d and an empty one, as another writer
    # might produce them.
    data = struct.pack("<3d", 1.5, -2.0, 3.25) + struct.pack("<4h", 1, -1, 300, -300) + struct.pack("<f", 9.5)
    header = {
        "__metadata__": {"format": "pt", "note": "héllo"},
        "scalar": {"dtype": "F32", "shape": [], "data_offsets": [32, 36]},
        "ints": {"dtype": "I16", "shape": [2, 2], "data_offsets": [24, 32]},
        "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [36, 36]},
        "doubles": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]},
    }
    path = _write(tmp_path, _file(json.dumps(header, ensure_ascii=False).encode(), data, pad=pad))
    tensors, metadata = load_file(path)
    assert metadata == {"format": "pt", "note": "héllo"}
    assert list(tensors) == ["scalar", "ints", "empty", "doubles"]
    np.testing.assert_array_equal(tensors["doubles"], np.array([1.5, -2.0, 3.25]))
    np.testing.assert_array_equal(tensors["ints"], np.array([[1, -1], [300, -300]], np.int16))
    assert tensors["scalar"].shape == () and tensors["scalar"] == np.float32(9.5)
    assert tensors["empty"].shape == (0, 4) and tensors["empty"].dtype == np.float32


def test_hand_built_bool_tensor(tmp_path):
    header = {"mask": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}
    tensors, _ = load_file(_write(tmp_path, _file(header, bytes([0, 1, 0, 255]))))
    np.testing.assert_array_equal(tensors["mask"], [False, True, False, True])


def test_null_metadata_is_empty(tmp_path):
    header = {"__metadata__": None, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    assert load_file(_write(tmp_path, _file(header, b"\x07")))[1] == {}


def test_real_safetensors_package_reads_our_file(tmp_path):
    """Both ways with the reference implementation (the `safetensors` package, a test dependency)."""
    import safetensors.numpy as st_numpy

    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    save_file(tensors, tmp_path / "r.safetensors", metadata={"format": "np"})
    theirs = st_numpy.load_file(str(tmp_path / "r.safetensors"))
    for key, value in tensors.items():
        np.testing.assert_array_equal(theirs[key], value)
    st_numpy.save_file(tensors, str(tmp_path / "theirs.safetensors"))
    ours, _ = load_file(tmp_path / "theirs.safetensors")
    for key, value in tensors.items():
        np.testing.assert_array_equal(ours[key], value)


def test_read_header_does_not_read_data(tmp_path):
    save_file({"w": np.zeros((3, 4), np.float32)}, tmp_path / "h.safetensors", metadata={"a": "b"})
    header, metadata = read_header(tmp_path / "h.safetensors")
    assert header == {"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}}
    assert metadata == {"a": "b"}


# ----------------------------------------------------------------------------------------------- corruption
def _valid_bytes(tmp_path) -> bytes:
    tensors = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1.0, 2.0]),
        "s": np.array(5, np.int64),
        "e": np.zeros((0,), np.float32),
    }
    save_file(tensors, tmp_path / "valid.safetensors", metadata={"k": "v"})
    return (tmp_path / "valid.safetensors").read_bytes()


def test_every_truncation_raises_file_format_error(tmp_path):
    raw = _valid_bytes(tmp_path)
    path = tmp_path / "t.safetensors"
    for cut in range(len(raw)):
        path.write_bytes(raw[:cut])
        with pytest.raises(FileFormatError, match="t.safetensors"):
            load_file(path)


def test_trailing_bytes_raise(tmp_path):
    path = _write(tmp_path, _valid_bytes(tmp_path) + b"\0" * 8)
    with pytest.raises(FileFormatError, match="cover"):
        load_file(path)


T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
CORRUPT = {
    "empty file": (b"", "fewer than the 8-byte"),
    "seven bytes": (b"\x01" * 7, "fewer than the 8-byte"),
    "length larger than file": (_file({"a": T}, b"\0" * 8, length=10_000), "header claims 10,000 bytes"),
    "absurd length": (_file({"a": T}, b"\0" * 8, length=2**60), "truncated or not a safetensors"),
    "invalid json": (_file(b'{"a": {"dtype": "F32",', b""), "not valid JSON"),
    "trailing garbage": (_file(b'{"a": 1} xx', b""), "not valid JSON"),
    "not utf-8": (_file(b'{"\xff\xfe": 1}', b""), "not valid UTF-8"),
    "list not object": (_file(b"[1, 2, 3]", b""), "JSON object"),
    "string not object": (_file(b'"hello"', b""), "JSON object"),
    "zero-length header": (_file(b"", b"", pad=False), "JSON object"),
    "entry not object": (_file({"a": [1, 2]}, b""), "JSON object"),
    "missing key": (_file({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), "missing \\['data_offsets'\\]"),
    "extra key": (_file({"a": {**T, "offsets": [0, 8]}}, b"\0" * 8), "unexpected \\['offsets'\\]"),
    "bad dtype": (_file({"a": {**T, "dtype": "F128"}}, b"\0" * 8), "unknown dtype 'F128'"),
    "non-string dtype": (_file({"a": {**T, "dtype": 4}}, b"\0" * 8), "unknown dtype 4"),
    "fp8": (_file({"a": {**T, "dtype": "F8_E4M3", "shape": [8]}}, b"\0" * 8), "NumPy cannot represent"),
    "negative dim": (_file({"a": {**T, "shape": [-2]}}, b"\0" * 8), "non-negative integers"),
    "float dim": (_file({"a": {**T, "shape": [2.0]}}, b"\0" * 8), "non-negative integers"),
    "bool dim": (_file({"a": {**T, "shape": [True, 2]}}, b"\0" * 8), "non-negative integers"),
    "shape not list": (_file({"a": {**T, "shape": 2}}, b"\0" * 8), "non-negative integers"),
    "too many dims": (
        _file({"a": {**T, "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4),
        "65 dimensions",
    ),
    "offsets one value": (
        _file({"a": {**T, "data_offsets": [0]}}, b"\0" * 8),
        "data_offsets \\[begin, end\\]",
    ),
    "negative offset": (_file({"a": {**T, "data_offsets": [-8, 0]}}, b"\0" * 8), "non-negative"),
    "begin after end": (_file({"a": {**T, "data_offsets": [8, 0]}}, b"\0" * 8), "begin after end"),
    "offsets outside buffer": (_file({"a": {**T, "data_offsets": [4, 12]}}, b"\0" * 8), "past the end"),
    "size mismatch": (_file({"a": {**T, "data_offsets": [0, 4]}}, b"\0" * 8), "needs 8 bytes"),
    "overlap": (
        _file({"a": T, "b": {**T, "data_offsets": [4, 12]}}, b"\0" * 12),
        "overlaps tensor 'a'",
    ),
    "duplicate offsets": (_file({"a": T, "b": T}, b"\0" * 8), "overlaps"),
    "gap": (_file({"a": T, "b": {**T, "data_offsets": [12, 20]}}, b"\0" * 20), "gap in the data: bytes 8-12"),
    "gap at start": (_file({"a": {**T, "data_offsets": [4, 12]}}, b"\0" * 12), "gap in the data: bytes 0-4"),
    "uncovered tail": (_file({"a": T}, b"\0" * 16), "cover 8 bytes of data but the file has 16"),
    "metadata not strings": (_file({"__metadata__": {"a": 1}}, b""), "__metadata__ should be"),
    "metadata a list": (_file({"__metadata__": ["a"]}, b""), "__metadata__ should be"),
    "duplicate key": (
        _file(b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}'),
        "duplicate",
    ),
    "nan constant": (_file(b'{"__metadata__": {"a": NaN}}'), "NaN"),
    "deep nesting": (_file(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not valid JSON"),
    "huge shape": (
        _file({"a": {"dtype": "F64", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
        "too large",
    ),
    "huge shape with zero": (
        _file({"a": {"dtype": "F64", "shape": [2**62, 2**62, 0], "data_offsets": [0, 0]}}),
        "too large",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_raise_file_format_error(tmp_path, case):
    content, message = CORRUPT[case]
    path = _write(tmp_path, content, "model.cnnkit")
    with pytest.raises(FileFormatError, match=message) as info:
        load_file(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(FileFormatError):
        read_header(path)


def test_petabyte_claim_fails_before_allocation(tmp_path):
    petabyte = 2**50
    header = {"fc.weight": {"dtype": "F32", "shape": [petabyte // 4], "data_offsets": [0, petabyte]}}
    path = _write(tmp_path, _file(header, b"\0" * 1234), "model.cnnkit")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(
            FileFormatError, match="claims 1,125,899,906,842,624 bytes .* has 1,234 bytes of data"
        ):
            load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert time.perf_counter() - start < 1.0


def test_file_format_error_is_value_error_and_names_file(tmp_path):
    path = _write(tmp_path, b"\0" * 4, "weights.bin")
    with pytest.raises(ValueError, match="weights.bin"):
        load_file(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(FileFormatError, match="directory"):
        load_file(tmp_path)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255), extra=st.binary(max_size=16))
def test_random_damage_raises_only_file_format_error(tmp_path_factory, position, value, extra):
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = bytearray(_valid_bytes(tmp))
    raw[position % len(raw)] = value
    path = _write(tmp, bytes(raw) + (extra if position % 3 == 0 else b""))
    try:
        tensors, _ = load_file(path)
    except FileFormatError:
        return
    # Whatever survived validation must account for exactly the data region of the damaged file.
    content = path.read_bytes()
    data_size = len(content) - 8 - struct.unpack("<Q", content[:8])[0]
    assert sum(t.nbytes for t in tensors.values()) == data_size


# ------------------------------------------------------------------------------------------------ atomicity
def test_crash_mid_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_file({"w": np.ones(1000, np.float32)}, path)
    before = path.read_bytes()

    def crashing_write(handle, header, arrays):
        handle.write(struct.pack("<Q", len(header)) + header[:10])
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(stmod, "_write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        save_file({"w": np.zeros(5000, np.float32)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    np.testing.assert_array_equal(load_file(path)[0]["w"], 1)
