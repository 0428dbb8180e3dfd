"""Pickles byte for byte as Python 2.7 + numpy wrote them (fluid 1.x `fluid.save` under Python 2).

Python 3 cannot write them itself: its pickler emits bytes through `_codecs.encode` and str as
unicode. Python 2 wrote str keys and the arrays' raw data as BINSTRING / SHORT_BINSTRING, the
array through ``numpy.core.multiarray._reconstruct`` and its dtype through ``numpy.dtype``
(protocol 2), which is what readers of the seed's files meet.

Two layouts of protocol 2: memo-less (`dumps_py27`'s default, a pickler in fast mode) and with the
memo as ``cPickle.dumps(d, 2)`` writes it (``memo=True``, `write_py27`): cPickle puts an object in
the memo only when something else also holds it, so the globals, the shared float32 dtype and the
keys get BINPUT once and BINGET afterwards (LONG_BINPUT past index 255), while the fresh tuples and
data numpy's ``__reduce__`` makes do not; every array gets a BINPUT after its REDUCE; the dict goes
out in batches of 1,000 items (MARK ... SETITEMS, one more empty batch when the size is a multiple
of 1,000; SETITEM alone for a dict of one item); small ints as BININT1/BININT2. These bytes were
compared with CPython 2.7.18's cPickle (a stand-in numpy module with numpy's reduce and refcounts).
`dumps_py27_array_proto0` writes one array as Python 2's pickle.py does at protocol 0 (Paddle's
``generate_train_pickle.py`` split of the ActivityNet file: one such file per video).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

_CODES = {np.dtype("float32"): b"f4", np.dtype("int64"): b"i8", np.dtype("float64"): b"f8"}
_BATCH = 1000  # cPickle's BATCHSIZE
_SMALL_TUPLE = (b")", b"\x85", b"\x86", b"\x87")  # EMPTY_TUPLE, TUPLE1..3 (protocol 2, no MARK)


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
    code = _CODES[a.dtype]
    dtype = (b"cnumpy\ndtype\n" + _tuple([_str(code), _int(0), _int(1)]) + b"R"
             + _tuple([_int(3), _str(b"<"), b"N", b"N", b"N", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", _int(0)])
             + b"b")  # BUILD
    raw = _str(a.astype(a.dtype.newbyteorder("<")).tobytes())
    state = _tuple([_int(1), _tuple([_int(d) for d in a.shape]), dtype, b"\x89", raw])
    return (b"cnumpy.core.multiarray\n_reconstruct\n"
            + _tuple([b"cnumpy\nndarray\n", _tuple([_int(0)]), _str(b"b")]) + b"R" + state + b"b")


class _Memo:
    """cPickle's memo while writing: indices from 1; BINPUT / BINGET below 256, the LONG_ forms above."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.size = 0

    def put(self, name: str | None = None) -> bytes:
        self.size += 1
        if name is not None:
            self.index[name] = self.size
        return b"q" + bytes([self.size]) if self.size < 256 else b"r" + struct.pack("<I", self.size)

    def get(self, name: str) -> bytes:
        i = self.index[name]
        return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def _cint(value: int) -> bytes:
    """An int as cPickle writes it at protocol >= 1."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _cached(memo: _Memo, name: str, first: bytes) -> bytes:
    """`first` (plus its BINPUT) the first time, a BINGET of it after."""
    return memo.get(name) if name in memo.index else first + memo.put(name)


def _array_memo(a: np.ndarray, memo: _Memo) -> bytes:
    a = np.ascontiguousarray(a)
    code = _CODES[a.dtype]
    if a.ndim > 3:
        raise ValueError("arrays of up to 3 dimensions")
    out = [_cached(memo, "_reconstruct", b"cnumpy.core.multiarray\n_reconstruct\n"),
           _cached(memo, "ndarray", b"cnumpy\nndarray\n"), b"K\x00\x85U\x01b\x87R", memo.put(),  # the array
           b"(K\x01", b"".join(_cint(d) for d in a.shape), _SMALL_TUPLE[a.ndim]]
    if f"dtype-{code.decode()}" in memo.index:
        out.append(memo.get(f"dtype-{code.decode()}"))
    else:
        out += [_cached(memo, "dtype", b"cnumpy\ndtype\n"), _str(code), b"K\x00K\x01\x87R",
                memo.put(f"dtype-{code.decode()}"),
                b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"]
    out += [b"\x89", _str(a.astype(a.dtype.newbyteorder("<")).tobytes()), b"tb"]
    return b"".join(out)


def write_py27(f: BinaryIO, items: Iterable[tuple[str, np.ndarray]], n_items: int) -> int:
    """Write ``cPickle.dump(d, f, 2)`` of a dict of `n_items` str keys to arrays, item by item; returns bytes.

    The items come from an iterable so that a file of many GB can be written with one array in memory
    (benchmarks/bench_resnet_import.py); the memo's BINGETs refer to the first item's globals and dtype.
    """
    memo = _Memo()
    written = f.write(b"\x80\x02}" + memo.put())
    count = 0
    if n_items > 1:
        written += f.write(b"(")
    for key, array in items:
        written += f.write(_str(key.encode("ascii")) + memo.put() + _array_memo(array, memo))
        count += 1
        if n_items > 1 and count % _BATCH == 0:
            written += f.write(b"u(")
    if count != n_items:
        raise ValueError(f"{count} items written, {n_items} announced")
    written += f.write({0: b".", 1: b"s."}.get(n_items, b"u."))
    return written


def dumps_py27(params: dict[str, np.ndarray], memo: bool = False) -> bytes:
    """``cPickle.dumps(params, 2)`` as Python 2.7 wrote it (keys as str); `memo`: with cPickle's memo."""
    if memo:
        import io

        out = io.BytesIO()
        write_py27(out, params.items(), len(params))
        return out.getvalue()
    body = b"".join(_str(k.encode("ascii")) + _array(v) + b"s" for k, v in params.items())  # SETITEM
    return b"\x80\x02}" + body + b"."


def _repr27(data: bytes) -> bytes:
    """``repr(data)`` of a Python 2 str: single quotes unless it holds ' and no ", escapes as 2.7's."""
    quote = b'"' if b"'" in data and b'"' not in data else b"'"
    special = {ord("\\"): b"\\\\", ord("\t"): b"\\t", ord("\n"): b"\\n", ord("\r"): b"\\r", quote[0]: b"\\" + quote}
    table = [special.get(c) or (bytes([c]) if 32 <= c < 127 else b"\\x%02x" % c) for c in range(256)]
    return quote + b"".join(table[c] for c in data) + quote


def dumps_py27_array_proto0(a: np.ndarray) -> bytes:
    """``pickle.dump(a, f)`` of one array by Python 2.7's pickle.py (protocol 0, every object memoized)."""
    a = np.ascontiguousarray(a)
    code = _CODES[a.dtype]
    shape = b"".join(b"I%d\n" % d for d in a.shape)
    raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
    return (b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\ntp4\nRp5\n"
            b"(I1\n(" + shape + b"tp6\ncnumpy\ndtype\np7\n(S'" + code + b"'\np8\nI0\nI1\ntp9\nRp10\n"
            b"(I3\nS'<'\np11\nNNNI-1\nI-1\nI0\ntp12\nbI00\nS" + _repr27(raw) + b"\np13\ntp14\nb.")
