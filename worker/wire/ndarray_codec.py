"""The compact binary ndarray encoding of protocol v1: a msgpack extension holding dtype, shape and raw data.

Producers may send large numeric states (images, feature tensors) as one binary blob instead of nested lists,
which is both smaller on the wire and much faster to decode. The layout is simple enough to write from any
language (see docs/protocol.md); this module is the reference implementation.

Payload of ``ExtType(NDARRAY_EXT_TYPE, payload)``::

    u8          L       length of the dtype string
    L bytes     dtype   ASCII, numpy "typestr": byte order + kind + item size, e.g. "<f4", "|u1", "<i8"
    u8          ndim    number of dimensions, 0..32
    ndim x u32  shape   each dimension, little-endian
    rest        data    prod(shape) * item size bytes, C (row-major) order, in the dtype's byte order
"""

import struct

import msgpack
import numpy as np

from worker.errors import WorkerError

NDARRAY_EXT_TYPE = 42
"""The msgpack extension type code that marks an encoded ndarray."""

MAX_NDIM = 32
MAX_ELEMENTS = 2**31 - 1
"""Most elements an encoded ndarray may describe (its dimensions multiplied, zeros counted as one)."""

_KINDS = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8)}


def _build_dtypes() -> dict[str, np.dtype]:
    table: dict[str, np.dtype] = {}
    for kind, sizes in _KINDS.items():
        for size in sizes:
            orders = "|<>" if size == 1 else "<>"
            for order in orders:
                # '|' means "byte order does not apply"; numpy parses '<' and '>' for one-byte types too.
                table[f"{order}{kind}{size}"] = np.dtype(f"{'=' if order == '|' else order}{kind}{size}")
    return table


_DTYPES = _build_dtypes()
SUPPORTED_DTYPES: tuple[str, ...] = tuple(sorted({typestr[1:] for typestr in _DTYPES}))
"""Kind and item size of each accepted dtype: bool, signed and unsigned integers, floats of 2, 4, 8 bytes."""


class NdarrayCodecError(WorkerError, ValueError):
    """An ndarray cannot be encoded, or an extension payload is not a valid encoded ndarray."""


def encode_ndarray(array: np.ndarray) -> msgpack.ExtType:
    """Encode ``array`` as the protocol's ndarray extension value (the data is written in C order)."""
    typestr = array.dtype.str
    if typestr not in _DTYPES:
        raise NdarrayCodecError("ndarray dtype: expected bool, int8..int64, uint8..uint64, float16..float64, "
                                f"got {array.dtype}")
    if array.ndim > MAX_NDIM:
        raise NdarrayCodecError(f"ndarray shape: expected at most {MAX_NDIM} dimensions, got {array.ndim}")
    if any(dim >= 2**32 for dim in array.shape):
        raise NdarrayCodecError(f"ndarray shape: expected dimensions below 2**32, got {array.shape}")
    dtype_bytes = typestr.encode("ascii")
    header = struct.pack(f"<B{len(dtype_bytes)}sB{array.ndim}I", len(dtype_bytes), dtype_bytes, array.ndim,
                         *array.shape)
    return msgpack.ExtType(NDARRAY_EXT_TYPE, header + array.tobytes(order="C"))


def decode_ndarray(payload: bytes) -> np.ndarray:
    """Decode an ndarray extension payload into a writable, native-byte-order array.

    Raises NdarrayCodecError saying which part (dtype, shape, data) is wrong.
    """
    size = len(payload)
    if size < 2:
        raise NdarrayCodecError(f"ndarray header: expected at least 2 bytes, got {size}")
    dtype_len = payload[0]
    typestr_bytes = payload[1 : 1 + dtype_len]
    try:
        typestr = typestr_bytes.decode("ascii")
    except UnicodeDecodeError:
        typestr = repr(typestr_bytes)
    dtype = _DTYPES.get(typestr)
    if dtype is None:
        raise NdarrayCodecError(
            f"ndarray dtype: expected a typestr such as '<f4', '|u1' or '<i8' with kind and size in "
            f"{list(SUPPORTED_DTYPES)}, got {typestr!r}"
        )
    ndim_at = 1 + dtype_len
    if size <= ndim_at:
        raise NdarrayCodecError("ndarray header: expected the number of dimensions after the dtype, got none")
    ndim = payload[ndim_at]
    if ndim > MAX_NDIM:
        raise NdarrayCodecError(f"ndarray shape: expected at most {MAX_NDIM} dimensions, got {ndim}")
    data_at = ndim_at + 1 + 4 * ndim
    if size < data_at:
        raise NdarrayCodecError(f"ndarray shape: expected {ndim} dimensions of 4 bytes each, got end of data")
    shape = struct.unpack_from(f"<{ndim}I", payload, ndim_at + 1)
    count = 1
    for dim in shape:
        count *= dim
    if count == 0 and _extent(shape) > MAX_ELEMENTS:
        # numpy refuses such shapes even with no data (a zero dimension): say so before it raises.
        raise NdarrayCodecError(f"ndarray shape: expected at most {MAX_ELEMENTS} elements counting each "
                                f"dimension as at least 1, got shape {shape}")
    expected = count * dtype.itemsize
    if size - data_at != expected:
        raise NdarrayCodecError(f"ndarray data: expected {expected} bytes for shape {shape} of dtype "
                                f"{typestr}, got {size - data_at}")
    flat = np.frombuffer(payload, dtype=dtype, count=count, offset=data_at)
    if dtype.kind == "b" and count and flat.view(np.uint8).max() > 1:
        raise NdarrayCodecError("ndarray data: expected only bytes 0 and 1 for dtype bool")
    # One copy of the data makes the array writable and aligned, so wrappers may modify it in place and torch
    # accepts it without warnings; it also converts big-endian data to native order.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _extent(shape: tuple[int, ...]) -> int:
    """Elements of ``shape`` counting each dimension as at least 1 (what numpy checks even with no data)."""
    extent = 1
    for dim in shape:
        extent *= max(dim, 1)
    return extent
