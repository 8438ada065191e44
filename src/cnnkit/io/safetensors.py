"""The safetensors file layout, written and read with NumPy alone (no pickle, no code execution).

A safetensors file (https://github.com/huggingface/safetensors) is three regions::

    [8 bytes]  N, the header length, an unsigned 64-bit little-endian integer
    [N bytes]  the header: a UTF-8 JSON object, padded with spaces so that 8 + N is a multiple of 8
    [rest]     the data buffer: every tensor's raw bytes, little-endian, C order

The header maps each tensor name to ``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}``,
offsets counted from the start of the data buffer, and may hold ``"__metadata__"``, a map of strings to
strings. A valid file has ``end - begin == prod(shape) * itemsize`` for every tensor and its tensors tile
the buffer exactly: no gaps, no overlaps, nothing left over.

Reading is defensive, because a model file may come from anywhere: the header length, the JSON and every
tensor's dtype, shape and offsets are checked against the file's real size *before* any tensor memory is
allocated, so a corrupt or malicious file raises :class:`~cnnkit.errors.FileFormatError` (naming the file,
the expected and the found value) instead of crashing, allocating a petabyte or running code.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from ..errors import ConfigError, DTypeError, FileFormatError
from ..utils.atomic import atomic_write

__all__ = ["DTYPES", "MAX_HEADER_SIZE", "load_file", "read_header", "save_file"]

#: Largest header accepted when reading (the reference implementation's limit, 100 MB).
MAX_HEADER_SIZE = 100_000_000

#: safetensors dtype names and the NumPy dtypes they are read into (little-endian).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}

#: bfloat16 has no NumPy type: its 16-bit patterns are read as this and widened to float32 (the top half
#: of a float32's bits, exactly), so PyTorch checkpoints saved in bfloat16 load.
_BF16 = np.dtype([("bf16", "<u2")])

#: dtypes the format defines but NumPy has no native type for (BF16 is widened, see above).
_UNREADABLE = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}

_NAME_OF = {dt.newbyteorder("<"): name for name, dt in DTYPES.items()}
_MAX_NDIM = 64  # NumPy's limit
_MAX_BYTES = 2**62  # far beyond any real file; keeps every size computation inside int64


# ---------------------------------------------------------------------------------------------- writing
def _dtype_name(array: np.ndarray, key: str) -> str:
    name = _NAME_OF.get(array.dtype.newbyteorder("<"))
    if name is None:
        known = ", ".join(str(dt) for dt in _NAME_OF)
        raise DTypeError(
            f"save_file: tensor {key!r} has dtype {array.dtype}, which safetensors cannot store; "
            f"supported: {known}"
        )
    return name


def _prepare(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Little-endian, C-contiguous copies (or the arrays themselves when already so), checked."""
    if not isinstance(tensors, Mapping):
        raise ConfigError(
            f"save_file: tensors must be a dict of name -> numpy array, got {type(tensors).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise ConfigError(f"save_file: tensor names must be strings, got {key!r}")
        if key == "__metadata__":
            raise ConfigError(
                "save_file: '__metadata__' is reserved for the metadata and cannot name a tensor"
            )
        array = np.asarray(value)
        _dtype_name(array, key)
        if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
            array = array.astype(array.dtype.newbyteorder("<"))
        # (not np.ascontiguousarray, which turns a 0-d array into shape (1,))
        out[key] = array if array.flags.c_contiguous else array.copy(order="C")
    return out


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"save_file: metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"save_file: metadata must map strings to strings, got {key!r}: {type(value).__name__}"
            )
    return dict(metadata)


def _layout(arrays: dict[str, np.ndarray]) -> list[str]:
    """Order of the tensors in the buffer: widest items first, so each tensor sits at a multiple of its
    item size (the buffer starts 8-aligned), as the reference writer does; ties keep insertion order."""
    return sorted(arrays, key=lambda key: -arrays[key].dtype.itemsize)


def _header_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    offsets: dict[str, tuple[int, int]] = {}
    position = 0
    for key in _layout(arrays):
        offsets[key] = (position, position + arrays[key].nbytes)
        position += arrays[key].nbytes
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    for key, array in arrays.items():  # header keys in the caller's order, so load_file keeps it
        header[key] = {
            "dtype": _NAME_OF[array.dtype.newbyteorder("<")],
            "shape": list(array.shape),
            "data_offsets": list(offsets[key]),
        }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def save_file(
    tensors: Mapping[str, np.ndarray], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (and string ``metadata``) to ``path`` in the safetensors layout, atomically.

    Arrays are stored little-endian and C-contiguous whatever their in-memory layout; the file is written
    beside ``path``, flushed to disk and renamed over it, so a crash leaves any previous file whole.
    Supported dtypes: bool, (u)int8/16/32/64, float16/32/64 and complex64 (see :data:`DTYPES`).
    """
    arrays = _prepare(tensors)
    header = _header_bytes(arrays, _check_metadata(metadata))
    with atomic_write(path, "wb") as handle:
        _write(handle, header, arrays)


def _write(handle: IO[bytes], header: bytes, arrays: dict[str, np.ndarray]) -> None:
    handle.write(struct.pack("<Q", len(header)))
    handle.write(header)
    for key in _layout(arrays):
        array = arrays[key]
        if array.size:
            handle.write(array.reshape(-1).view(np.uint8).data)


# ---------------------------------------------------------------------------------------------- reading
def _fail(path: str, message: str) -> FileFormatError:
    return FileFormatError(f"{path}: {message}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed in a safetensors header")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(path: str, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"the header is not valid UTF-8 ({err.reason} at byte {8 + err.start})") from None
    if not text.startswith("{"):
        raise _fail(
            path,
            f"the header should be a JSON object starting with '{{', found {text[:20]!r}; "
            "this is not a safetensors file",
        )
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"the header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise _fail(path, f"the header should be a JSON object, found a {type(header).__name__}")
    return header


def _check_entry(
    path: str, key: str, entry: Any, data_size: int
) -> tuple[np.dtype, tuple[int, ...], int, int]:
    where = f"tensor {key!r}"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} should be described by a JSON object, found {type(entry).__name__}")
    unknown = sorted(set(entry) - {"dtype", "shape", "data_offsets"})
    missing = sorted({"dtype", "shape", "data_offsets"} - set(entry))
    if missing or unknown:
        raise _fail(
            path,
            f"{where} should have the keys dtype, shape and data_offsets; "
            f"missing {missing}, unexpected {unknown}",
        )
    name = entry["dtype"]
    if name in _UNREADABLE:
        raise _fail(path, f"{where} has dtype {name}, which NumPy cannot represent")
    if name == "BF16":
        dtype = _BF16
    elif not isinstance(name, str) or name not in DTYPES:
        raise _fail(path, f"{where} has unknown dtype {name!r}; expected one of {', '.join(DTYPES)}, BF16")
    else:
        dtype = DTYPES[name]
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _fail(
            path, f"{where} should have a shape that is a list of non-negative integers, found {shape!r:.100}"
        )
    if len(shape) > _MAX_NDIM:
        raise _fail(path, f"{where} has {len(shape)} dimensions; at most {_MAX_NDIM} are supported")
    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise _fail(
            path,
            f"{where} should have data_offsets [begin, end] of non-negative integers, found {offsets!r:.100}",
        )
    begin, end = offsets
    if begin > end:
        raise _fail(path, f"{where} has data_offsets [{begin}, {end}] with begin after end")
    capacity = 1  # the product of the non-zero dimensions must fit NumPy's index type
    for d in shape:
        capacity *= max(d, 1)
        if capacity * dtype.itemsize > _MAX_BYTES:
            raise _fail(path, f"{where} has shape {shape!r:.100}, too large for any array")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > data_size:
        raise _fail(
            path,
            f"{where} claims {nbytes:,} bytes ({name} {shape}) but the file has {data_size:,} bytes of data",
        )
    if end > data_size:
        raise _fail(
            path,
            f"{where} has data_offsets [{begin:,}, {end:,}] past the end of the data "
            f"({data_size:,} bytes); the file may be truncated",
        )
    if end - begin != nbytes:
        raise _fail(
            path,
            f"{where} is {name} of shape {shape}, which needs {nbytes:,} bytes, but its "
            f"data_offsets [{begin:,}, {end:,}] span {end - begin:,} bytes",
        )
    return dtype, tuple(shape), begin, end


def _check_tiling(path: str, spans: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors must cover the data buffer exactly, in offset order: no gap, no overlap, no slack."""
    position, previous = 0, None
    for begin, end, key in sorted(spans):
        if begin < position:
            raise _fail(
                path,
                f"tensor {key!r} (bytes {begin:,}-{end:,}) overlaps tensor {previous!r} "
                f"which ends at byte {position:,}",
            )
        if begin > position:
            raise _fail(
                path,
                f"gap in the data: bytes {position:,}-{begin:,} belong to no tensor "
                f"(tensor {key!r} starts at {begin:,})",
            )
        position, previous = end, key
    if position != data_size:
        raise _fail(
            path,
            f"the tensors cover {position:,} bytes of data but the file has {data_size:,}; "
            "expected them to cover it exactly",
        )


def _read_header(
    handle: IO[bytes], path: str, file_size: int
) -> tuple[dict[str, tuple[np.dtype, tuple[int, ...], int, int]], dict[str, str], int]:
    if file_size < 8:
        raise _fail(
            path,
            f"the file has {file_size} bytes, fewer than the 8-byte header length of a "
            "safetensors file; it is empty or truncated",
        )
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > file_size - 8:
        raise _fail(
            path,
            f"the header claims {length:,} bytes but only {file_size - 8:,} bytes follow "
            "the length field; the file is truncated or not a safetensors file",
        )
    if length > MAX_HEADER_SIZE:
        raise _fail(path, f"the header claims {length:,} bytes, more than the limit of {MAX_HEADER_SIZE:,}")
    raw = handle.read(length)
    if len(raw) != length:
        raise _fail(
            path, f"expected {length:,} header bytes, read {len(raw):,}; the file changed while reading"
        )
    header = _parse_header(path, raw)
    data_size = file_size - 8 - length
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(
            path, f"__metadata__ should be a JSON object of strings, found {json.dumps(metadata)[:100]}"
        )
    entries = {key: _check_entry(path, key, entry, data_size) for key, entry in header.items()}
    _check_tiling(path, [(begin, end, key) for key, (_, _, begin, end) in entries.items()], data_size)
    return entries, metadata, 8 + length


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Validate a file's header and return ``({name: {"dtype", "shape", "data_offsets"}}, metadata)``
    without reading any tensor data (for inspecting big files)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            entries, metadata, _ = _read_header(handle, name, os.fstat(handle.fileno()).st_size)
    except IsADirectoryError:
        raise _fail(name, "is a directory, not a safetensors file") from None
    names = {dt: key for key, dt in DTYPES.items()}
    names[_BF16] = "BF16"
    return (
        {
            key: {"dtype": names[dtype], "shape": list(shape), "data_offsets": [begin, end]}
            for key, (dtype, shape, begin, end) in entries.items()
        },
        metadata,
    )


def load_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into ``({name: array}, metadata)``; arrays are fresh, writable, native-order.

    ``BF16`` tensors come back as float32 (bfloat16 is the upper half of float32's bits: exact).

    Never unpickles and never executes anything from the file. The whole header is validated against the
    file size before any tensor is allocated; every violation raises :class:`FileFormatError`.
    """
    name = os.fspath(path)
    try:
        handle = open(path, "rb")
    except IsADirectoryError:
        raise _fail(name, "is a directory, not a safetensors file") from None
    with handle:
        entries, metadata, start = _read_header(handle, name, os.fstat(handle.fileno()).st_size)
        tensors: dict[str, np.ndarray] = {}
        for key, (dtype, shape, begin, end) in entries.items():
            array = np.empty(shape, dtype=dtype.newbyteorder("="))
            if end > begin:
                handle.seek(start + begin)
                got = handle.readinto(array.reshape(-1).view(np.uint8).data)
                if got != end - begin:
                    raise _fail(
                        name,
                        f"tensor {key!r}: expected {end - begin:,} bytes, read {got:,}; "
                        "the file changed while reading",
                    )
                if not np.little_endian:  # pragma: no cover - big-endian hosts only
                    array = array.view(dtype).astype(dtype.newbyteorder("="))
            if dtype == np.bool_ and array.size:
                np.not_equal(array.view(np.uint8), 0, out=array)  # any non-zero byte is True
            if dtype == _BF16:
                array = (array.view("<u2").astype(np.uint32) << 16).view(np.float32)
            tensors[key] = array
    return tensors, metadata
