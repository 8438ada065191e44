"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a big-endian header followed by the raw array::

    magic   4 bytes   0x00 0x00 <type code> <ndim>     (0x00000803: uint8, 3 dims = images;
                                                        0x00000801: uint8, 1 dim  = labels)
    dims    4 bytes each, ndim of them (unsigned, big-endian)
    data    prod(dims) * itemsize bytes, row-major, big-endian

The files are usually gzip-compressed (``train-images-idx3-ubyte.gz``); both forms are read. Every check
is made before the payload is trusted: the header must be complete, the type code known, every dimension
positive, and the payload exactly as long as the dimensions say. The payload is read in chunks and never
pre-allocated from the header, so a corrupt header claiming terabytes costs nothing. Problems raise
:class:`~cnnkit.errors.FileFormatError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DTypeError, FileFormatError, ShapeError
from ..utils.atomic import write_bytes_atomic

#: IDX type code -> NumPy dtype (big-endian where it matters).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
# Deflate cannot expand more than ~1032x; a header that needs more bytes than that cannot be honest.
_MAX_DEFLATE_RATIO = 1100


def _open_stream(path: Path) -> tuple[io.BufferedIOBase, bool]:
    raw = open(path, "rb")  # closed by the caller (via the returned stream)
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), True  # type: ignore[return-value]
    return raw, False


def _read_exact(stream: io.BufferedIOBase, n: int) -> bytes:
    """Read up to ``n`` bytes in chunks (never allocating ``n`` up front)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = stream.read(min(_CHUNK, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array of its stored shape.

    ``expected_magic`` (for example :data:`IMAGES_MAGIC` = 0x00000803) is checked when given.
    Raises :class:`~cnnkit.errors.FileFormatError` on a bad magic number, a zero dimension, a payload
    shorter or longer than the header says, or a truncated or corrupt gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: IDX file not found")
    file_size = path.stat().st_size
    try:
        stream, compressed = _open_stream(path)
        with stream:
            return _parse(stream, path, file_size, compressed, expected_magic)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise FileFormatError(
            f"{path}: expected a complete gzip stream, found a truncated or corrupt one ({exc})"
        ) from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be read as an IDX file ({exc})") from None


def _parse(
    stream: io.BufferedIOBase, path: Path, file_size: int, compressed: bool, expected_magic: int | None
) -> np.ndarray:
    head = _read_exact(stream, 4)
    if len(head) < 4:
        raise FileFormatError(f"{path}: expected a 4-byte IDX magic number, found {len(head)} bytes")
    magic = int.from_bytes(head, "big")
    code, ndim = head[2], head[3]
    if head[:2] != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        raise FileFormatError(
            f"{path}: expected an IDX magic number 0x0000TTNN (TT a type code in "
            f"{sorted(hex(c) for c in IDX_DTYPES)}, NN >= 1 dims), found 0x{magic:08X}"
        )
    if expected_magic is not None and magic != expected_magic:
        raise FileFormatError(f"{path}: expected IDX magic 0x{expected_magic:08X}, found 0x{magic:08X}")
    dims_raw = _read_exact(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise FileFormatError(
            f"{path}: expected {ndim} dimension fields ({4 * ndim} bytes) after the magic number, "
            f"found {len(dims_raw)} bytes"
        )
    dims = tuple(int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if any(d == 0 for d in dims):
        raise FileFormatError(f"{path}: expected every IDX dimension >= 1, found dims {dims}")
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    header_len = 4 + 4 * ndim
    limit = (file_size * _MAX_DEFLATE_RATIO) if compressed else (file_size - header_len)
    if expected > limit:
        what = f"a {file_size}-byte gzip file can hold" if compressed else "the file holds"
        raise FileFormatError(
            f"{path}: header dims {dims} need a {expected}-byte payload, but {what} at most {limit} bytes "
            "(truncated file or corrupt header)"
        )
    payload = _read_exact(stream, expected + 1)
    if len(payload) != expected:
        found = f"{len(payload)} bytes" if len(payload) < expected else "more bytes"
        raise FileFormatError(
            f"{path}: expected a {expected}-byte payload for dims {dims} ({dtype.name}), found {found}"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (uncompressed) of ``array``."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _CODES:
        raise DTypeError(
            f"IDX: dtype {array.dtype} cannot be stored; use uint8, int8, int16, int32, float32 or float64"
        )
    if array.ndim < 1 or array.ndim > 255:
        raise ShapeError(f"IDX: expected an array with 1 to 255 dims, found {array.ndim}")
    code = _CODES[key]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``compress`` (default: name ends in .gz).

    The gzip stream carries no time stamp or file name, so the same array gives the same bytes.
    """
    path = Path(path)
    data = encode_idx(array)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    write_bytes_atomic(path, data)


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a uint8 image file (magic 0x00000803) as ``(N, 1, rows, cols)`` uint8."""
    x = read_idx(path, IMAGES_MAGIC)
    return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])


def read_idx_labels(path: str | os.PathLike[str], num_classes: int | None = None) -> np.ndarray:
    """Read a uint8 label file (magic 0x00000801) as int64; every label must be < ``num_classes``."""
    y = read_idx(path, LABELS_MAGIC).astype(np.int64)
    if num_classes is not None and y.size and int(y.max()) >= num_classes:
        bad = int(np.argmax(y >= num_classes))
        raise FileFormatError(
            f"{path}: expected labels in [0, {num_classes}), found {int(y[bad])} at index {bad}"
        )
    return y


def read_idx_pair(
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    num_classes: int | None = None,
    image_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files; the counts must agree (and the image size, when given)."""
    x = read_idx_images(images)
    if image_shape is not None and x.shape[2:] != tuple(image_shape):
        raise FileFormatError(
            f"{images}: expected {image_shape[0]}x{image_shape[1]} images, found {x.shape[2]}x{x.shape[3]}"
        )
    y = read_idx_labels(labels, num_classes)
    if len(x) != len(y):
        raise FileFormatError(
            f"{images} / {labels}: expected as many labels as images, found {len(x)} images "
            f"and {len(y)} labels"
        )
    return x, y
