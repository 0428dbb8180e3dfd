"""Paddle's tensor file format, as fluid's `save_params` / `save_persistables` wrote one file per parameter.

Read without Paddle (no torch either). One file holds one LoDTensor, little-endian:

    uint32  LoD tensor version (0)
    uint64  number of LoD levels, then per level: uint64 byte size + that many bytes of offsets
    uint32  tensor version (0)
    int32   size of the TensorDesc that follows
    bytes   TensorDesc, a protobuf message: field 1 data type (varint enum), field 2 dims (int64,
            packed or one per tag)
    bytes   the values, row-major, product(dims) x the type's size

Parameters have no LoD (0 levels). A file that ends early, declares another version or a type this
reader does not know is one line naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from etspipe.errors import UserError

# Paddle's VarType.Type values for the dense types a parameter can have.
DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32, 6: np.float64,
          20: np.uint8, 21: np.int8}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("a varint runs past the end of the tensor description")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_tensor_desc(desc: bytes) -> tuple[int, list[int]]:
    """(data type, dims) of a serialized TensorDesc."""
    pos, dtype, dims = 0, None, []
    while pos < len(desc):
        key, pos = _varint(desc, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(desc, pos)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(_signed64(value))
        elif wire == 2:
            size, pos = _varint(desc, pos)
            end = pos + size
            if field == 2:  # packed dims
                while pos < end:
                    value, pos = _varint(desc, pos)
                    dims.append(_signed64(value))
            pos = end
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in the tensor description")
    if dtype is None:
        raise ValueError("the tensor description names no data type")
    return dtype, dims


def read_tensor_file(path: str | Path) -> np.ndarray:
    """The array one fluid tensor file holds."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return _parse(raw)
    except (ValueError, struct.error) as exc:
        raise UserError(f"{path}: not a Paddle tensor file, or cut short ({exc})") from None


def _parse(raw: bytes) -> np.ndarray:
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return value

    if take("<I") != 0:
        raise ValueError("unknown LoD tensor version")
    for _ in range(take("<Q")):
        pos += take("<Q")
    if take("<I") != 0:
        raise ValueError("unknown tensor version")
    size = take("<i")
    if size < 0 or pos + size > len(raw):
        raise ValueError("the tensor description runs past the end of the file")
    dtype_id, dims = parse_tensor_desc(raw[pos: pos + size])
    pos += size
    if dtype_id not in DTYPES:
        raise ValueError(f"data type {dtype_id} is not a dense numeric type")
    dtype = np.dtype(DTYPES[dtype_id]).newbyteorder("<")
    count = int(np.prod(dims)) if dims else 1
    if any(d < 0 for d in dims) or len(raw) - pos != count * dtype.itemsize:
        raise ValueError(f"{len(raw) - pos} bytes of values for dims {dims} of {dtype.name}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=pos).reshape(dims).astype(dtype.newbyteorder("="))


def read_tensor_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """``{file name: array}`` of a `save_params` folder (hidden files skipped)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"{folder}: an empty folder (expected fluid's save_params layout, one file per parameter)")
    return {p.name: read_tensor_file(p) for p in files}


def write_tensor_file(path: str | Path, array: np.ndarray) -> None:
    """Write `array` in the same format (tests, and handing weights back to Paddle's loaders)."""
    codes = {np.dtype(v): k for k, v in DTYPES.items()}
    array = np.ascontiguousarray(array)
    if array.dtype not in codes:
        raise ValueError(f"no Paddle type for {array.dtype}")
    desc = bytes([0x08]) + _encode_varint(codes[array.dtype])
    for d in array.shape:
        desc += bytes([0x10]) + _encode_varint(d)
    body = struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + array.astype(array.dtype.newbyteorder("<")).tobytes()
    Path(path).write_bytes(body)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
