"""Pickles byte for byte as Python 2.7 + numpy wrote them (fluid 1.x `fluid.save` under Python 2).

Python 3 cannot write them itself: its pickler emits bytes through `_codecs.encode` and str as
unicode. Python 2 wrote str keys and the arrays' raw data as BINSTRING / SHORT_BINSTRING, the
array through ``numpy.core.multiarray._reconstruct`` and its dtype through ``numpy.dtype``
(protocol 2), which is what readers of the seed's files meet.
"""

from __future__ import annotations

import struct

import numpy as np


def _str(data: bytes) -> bytes:
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    return b"J" + struct.pack("<i", value)  # BININT


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _array(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    code = {np.dtype("float32"): b"f4", np.dtype("int64"): b"i8", np.dtype("float64"): b"f8"}[a.dtype]
    dtype = (b"cnumpy\ndtype\n" + _tuple([_str(code), _int(0), _int(1)]) + b"R"
             + _tuple([_int(3), _str(b"<"), b"N", b"N", b"N", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", _int(0)])
             + b"b")  # BUILD
    raw = _str(a.astype(a.dtype.newbyteorder("<")).tobytes())
    state = _tuple([_int(1), _tuple([_int(d) for d in a.shape]), dtype, b"\x89", raw])
    return (b"cnumpy.core.multiarray\n_reconstruct\n"
            + _tuple([b"cnumpy\nndarray\n", _tuple([_int(0)]), _str(b"b")]) + b"R" + state + b"b")


def dumps_py27(params: dict[str, np.ndarray]) -> bytes:
    """``cPickle.dumps(params, 2)`` as Python 2.7 wrote it (keys as str)."""
    body = b"".join(_str(k.encode("ascii")) + _array(v) + b"s" for k, v in params.items())  # SETITEM
    return b"\x80\x02}" + body + b"."
