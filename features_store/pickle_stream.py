"""Pickles of numpy arrays read one array at a time, without unpickling them.

ActivityNet's frame features (``resnet152_features_activitynet_5fps_320x240.pkl``, ~89 GB) are one
Python 2 pickle of ``{"v_<id>": float32 array (T, 2048)}``. `pickle.load` needs the whole file in
memory, and it would call whatever the file names. This module walks the opcodes itself and builds
only what numpy's own pickling writes for an array:

* ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` then BUILD with the state
  ``(1, shape, dtype, is_fortran, raw)`` (the version number may be missing);
* the dtype as ``numpy.dtype('f4', 0, 1)`` then BUILD with ``(3, '<', ...)`` (the byte order);
* the raw data as a Python 2 str (STRING, BINSTRING, SHORT_BINSTRING), as Python 3 writes bytes
  below protocol 3 (``_codecs.encode(text, 'latin1')``), or as bytes (protocols 3 to 5, numpy's
  ``_frombuffer`` form of protocol 5 included).

Python 2 memoizes the globals and the dtype and refers back to them (BINPUT / BINGET); the memo
here keeps small objects only and forgets the data, which a writer never refers back to.

Items of the top-level dict come out as soon as their array is built, not when the SETITEMS that
closes a batch (up to 1,000 videos) arrives, so memory stays at about one video. A video the
caller does not want (`skip`) is passed over with a seek: its data is never read. Anything else in
the file, another global or an opcode outside this subset, stops the read with the byte offset;
nothing the file names is imported or called.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickletools
import re
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

import numpy as np

SMALL = 1024          # the memo keeps objects up to this many bytes (globals, dtype, keys)
MAX_LINE = 1 << 16    # longest text argument read before a protocol 0 STRING is taken as corrupt
_DTYPE_CODE = re.compile(r"[<>|=]?[biuf][1248]\Z|[<>|=]?f16\Z")

# what the recognised globals may do; anything else in a GLOBAL is refused
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
}


class PickleReadError(ValueError):
    """The pickle ends early (`truncated`) or holds something that is not a pickled array; `offset` says where."""

    def __init__(self, message: str, offset: int, truncated: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.truncated = truncated


class PickledArray(NamedTuple):
    """One item of the top-level dict: its key, its array (None when skipped) and the byte after it."""

    key: str
    rows: np.ndarray | None
    end: int


class _Global(NamedTuple):
    module: str
    name: str
    role: str


class _Marker:
    """A placeholder on the stack or in the memo; its name says what it stands for in errors."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SKIPPED = _Marker("data passed over")   # raw data of a skipped item, and the array built from it
TAKEN = _Marker("an array already handed over")
FORGOTTEN = _Marker("array data")        # a large memoized object the memo does not keep


class _RootDict(_Marker):
    """The top-level dict: its items are handed over as they complete, never stored."""


class _PendingArray:
    """``_reconstruct(...)`` before its BUILD; it never holds the array it becomes."""

    built = False


class _PendingDtype:
    """``numpy.dtype(code, 0, 1)``; BUILD sets its byte order (the memo refers back to this object)."""

    def __init__(self, code: str) -> None:
        self.code, self.order = code, None

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")  # a Python 2 str, as pickle.load(encoding="latin1") reads it
    return value if isinstance(value, str) else None


def _memo_value(value: object) -> object:
    """What the memo keeps of `value`: small objects as they are, data as FORGOTTEN."""
    if isinstance(value, (bytes, bytearray, str)) and len(value) > SMALL or isinstance(value, np.ndarray):
        return FORGOTTEN
    if isinstance(value, tuple) and any(_memo_value(v) is FORGOTTEN for v in value):
        return FORGOTTEN
    return value


class PickleStream:
    """Reads a pickle of numpy arrays from `stream`; `pos` is the number of bytes consumed so far.

    `size` (the file's length, when known) lets a seek past the end be reported as truncation.
    `skip(key)` is asked once per key of the top-level dict; True passes its array over unread.
    """

    def __init__(self, stream: BinaryIO, size: int | None = None,
                 skip: Callable[[str], bool] | None = None) -> None:
        self._f, self.size, self._skip = stream, size, skip or (lambda key: False)
        self.pos = 0
        self._stack: list = []
        self._marks: list[int] = []
        self._memo: dict[int, object] = {}
        self._root: _RootDict | None = None
        self._want_key = False
        self._key: str | None = None
        self._key_obj: object = None
        self._skipping = False
        self._op_pos = 0
        self._result: object = None  # the object STOP leaves (the top-level dict, or the one array)
        self._ops: dict[bytes, Callable[[], PickledArray | None]] = {
            b"(": self._mark, b"I": self._int, b"J": lambda: self._push(self._unpack("<i", 4)),
            b"K": lambda: self._push(self._read(1)[0]), b"M": lambda: self._push(self._unpack("<H", 2)),
            b"L": self._long, b"\x8a": lambda: self._long_bin(self._read(1)[0]),
            b"\x8b": lambda: self._long_bin(self._unpack("<i", 4)), b"N": lambda: self._push(None),
            b"\x88": lambda: self._push(True), b"\x89": lambda: self._push(False),
            b"S": self._string, b"V": self._unicode,
            b"U": lambda: self._push(self._read(self._read(1)[0])),
            b"C": lambda: self._push(self._read(self._read(1)[0])),
            b"\x8c": lambda: self._push(self._read(self._read(1)[0]).decode("utf-8")),
            b"T": lambda: self._push(self._payload(self._unpack("<i", 4), "bytes")),
            b"B": lambda: self._push(self._payload(self._unpack("<I", 4), "bytes")),
            b"\x8e": lambda: self._push(self._payload(self._unpack("<Q", 8), "bytes")),
            b"\x96": lambda: self._push(self._payload(self._unpack("<Q", 8), "bytearray")),
            b"X": lambda: self._push(self._payload(self._unpack("<I", 4), "text")),
            b"\x8d": lambda: self._push(self._payload(self._unpack("<Q", 8), "text")),
            b"c": self._global, b"\x93": self._stack_global, b"R": self._reduce, b"b": self._build,
            b"t": lambda: self._tuple(self._pop_mark()), b")": lambda: self._push(()),
            b"\x85": lambda: self._tuple(self._pop_n(1)), b"\x86": lambda: self._tuple(self._pop_n(2)),
            b"\x87": lambda: self._tuple(self._pop_n(3)), b"}": self._empty_dict, b"d": self._dict,
            b"s": self._setitem, b"u": self._setitems,
            b"p": lambda: self._put(self._line_int()), b"q": lambda: self._put(self._read(1)[0]),
            b"r": lambda: self._put(self._unpack("<I", 4)), b"\x94": lambda: self._put(len(self._memo)),
            b"g": lambda: self._get(self._line_int()), b"h": lambda: self._get(self._read(1)[0]),
            b"j": lambda: self._get(self._unpack("<I", 4)), b"\x80": self._proto,
            b"\x95": self._frame,
        }

    # ------------------------------------------------------------------ public
    def items(self) -> Iterator[PickledArray]:
        """The items of a pickled ``{key: array}``, one at a time, in file order."""
        result = yield from self._run()
        if result is not self._root:
            raise PickleReadError(f"the pickle holds {self._describe(result)}, not a dict of arrays", self._op_pos)

    def array(self) -> np.ndarray:
        """The one array a pickle holds (Paddle's per-video files)."""
        for item in self._run():
            raise PickleReadError("the pickle holds a dict of arrays, not one array", item.end)
        if not isinstance(self._result, np.ndarray):
            raise PickleReadError(f"the pickle holds {self._describe(self._result)}, not an array", self._op_pos)
        return self._result

    # ------------------------------------------------------------------ the machine
    def _run(self) -> Iterator[PickledArray]:
        ops = self._ops
        while True:
            self._op_pos = self.pos
            code = self._read(1)
            if code == b".":
                break
            handler = ops.get(code)
            if handler is None:
                op = pickletools.code2op.get(code.decode("latin-1"))
                what = f"opcode {op.name}" if op else f"byte {code!r}, which is no pickle opcode"
                raise self._error(f"{what} is not part of a pickled numpy array")
            item = handler()
            if item is not None:
                yield item
        if self._marks or len(self._stack) != 1:
            raise self._error("the pickle stops with unfinished objects on its stack")
        self._result = self._stack[0]
        if isinstance(self._result, (_PendingArray, _PendingDtype)):
            raise self._error(f"the pickle stops before its {self._describe(self._result)} is complete")
        return self._result

    def _error(self, message: str) -> PickleReadError:
        return PickleReadError(message, self._op_pos)

    def _describe(self, value: object) -> str:
        if isinstance(value, np.ndarray):
            return f"one array of shape {value.shape}"
        if isinstance(value, _PendingArray):
            return "array"
        return type(value).__name__ if not isinstance(value, _Marker) else value.name

    # reading
    def _read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) < n:
            self.pos += len(data)
            raise PickleReadError(f"the file ends at byte {self.pos:,} in the middle of an object", self.pos,
                                  truncated=True)
        self.pos += n
        return data

    def _unpack(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self._read(n))[0]

    def _line(self, limit: int = MAX_LINE) -> bytes:
        data = self._f.readline(limit)
        self.pos += len(data)
        if not data.endswith(b"\n"):
            if len(data) < limit:
                raise PickleReadError(f"the file ends at byte {self.pos:,} in the middle of an object", self.pos,
                                      truncated=True)
            raise self._error(f"a text argument longer than {limit:,} bytes")
        return data[:-1]

    def _line_int(self) -> int:
        text = self._line()
        try:
            return int(text)
        except ValueError:
            raise self._error(f"a memo index {text[:20]!r} that is not a number") from None

    def _payload(self, n: int, kind: str) -> bytes | bytearray | str | _Marker:
        """`n` bytes of data, or SKIPPED (seeked over) when they belong to an item the caller skips."""
        if n < 0:
            raise self._error(f"a negative length ({n})")
        if self._skipping and n > SMALL:
            if self.size is not None and self.pos + n > self.size:
                self.pos = self.size
                raise PickleReadError(f"the file ends at byte {self.size:,} in the middle of an object",
                                      self.size, truncated=True)
            self._f.seek(n, io.SEEK_CUR)
            self.pos += n
            return SKIPPED
        if self.size is not None and self.pos + n > self.size:  # do not allocate what the file cannot hold
            self.pos = self.size
            raise PickleReadError(f"the file ends at byte {self.size:,} in the middle of an object", self.size,
                                  truncated=True)
        data = self._read(n)
        if kind == "text":
            return data.decode("utf-8", "surrogatepass")
        return bytearray(data) if kind == "bytearray" else data

    # the stack
    def _push(self, value: object) -> None:
        if self._want_key and self._at_root():
            key = _text(value)
            if key is None:
                raise self._error(f"a key of the top-level dict is {self._describe(value)}, not a string")
            self._key, self._key_obj, self._want_key = key, value, False
            self._skipping = bool(self._skip(key))
        self._stack.append(value)

    def _at_root(self) -> bool:
        """Whether the next object pushed sits directly in the top-level dict (a key or a value)."""
        return bool(self._stack) and self._stack[0] is self._root and (not self._marks or self._marks == [1])

    def _mark(self) -> None:
        self._marks.append(len(self._stack))

    def _pop_mark(self) -> list:
        if not self._marks:
            raise self._error("a MARK is missing")
        at = self._marks.pop()
        items = self._stack[at:]
        del self._stack[at:]
        return items

    def _pop_n(self, n: int) -> list:
        floor = self._marks[-1] if self._marks else 0
        if len(self._stack) - floor < n:
            raise self._error("the stack holds fewer objects than the opcode takes")
        items = self._stack[-n:]
        del self._stack[-n:]
        return items

    def _tuple(self, items: list) -> None:
        self._stack.append(tuple(items))

    def _put(self, index: int) -> None:
        if not self._stack:
            raise self._error("a memo PUT with nothing on the stack")
        self._memo[index] = _memo_value(self._stack[-1])

    def _get(self, index: int) -> None:
        if index not in self._memo:
            raise self._error(f"memo entry {index} was never stored")
        value = self._memo[index]
        if value is FORGOTTEN or value is TAKEN or isinstance(value, _PendingArray) and value.built:
            raise self._error("the pickle refers back to array data; each array must be written once")
        self._push(value)

    # scalars and strings
    def _proto(self) -> None:
        version = self._read(1)[0]
        if version > 5:
            raise self._error(f"pickle protocol {version} (this reader knows 0 to 5)")

    def _frame(self) -> None:
        self._unpack("<Q", 8)  # FRAME: a length hint for buffered readers, nothing to do

    def _int(self) -> None:
        text = self._line()
        if text in (b"00", b"01"):
            self._push(text == b"01")
            return
        try:
            self._push(int(text))
        except ValueError:
            raise self._error(f"INT argument {text[:20]!r} is not a number") from None

    def _long(self) -> None:
        text = self._line()
        try:
            self._push(int(text[:-1] if text.endswith(b"L") else text))
        except ValueError:
            raise self._error(f"LONG argument {text[:20]!r} is not a number") from None

    def _long_bin(self, n: int) -> None:
        if n < 0 or n > 64:
            raise self._error(f"a {n}-byte integer")
        self._push(int.from_bytes(self._read(n), "little", signed=True))

    def _string(self) -> None:
        """Protocol 0's STRING: the repr of a Python 2 str, quotes included, on one line."""
        text = self._line(limit=1 << 40)
        if len(text) < 2 or text[:1] not in (b"'", b'"') or text[-1:] != text[:1]:
            raise self._error("a STRING argument without its quotes")
        self._push(SKIPPED if self._skipping and len(text) > SMALL else codecs.escape_decode(text[1:-1])[0])

    def _unicode(self) -> None:
        self._push(self._line(limit=1 << 40).decode("raw-unicode-escape"))

    # globals and calls
    def _global(self) -> None:
        module = self._line().decode("latin-1")
        name = self._line().decode("latin-1")
        self._push(self._allowed(module, name))

    def _stack_global(self) -> None:
        module, name = self._pop_n(2)
        if not (isinstance(module, str) and isinstance(name, str)):
            raise self._error("STACK_GLOBAL needs two strings")
        self._push(self._allowed(module, name))

    def _allowed(self, module: str, name: str) -> _Global:
        role = _GLOBALS.get((module, name))
        if role is None:
            raise self._error(f"the pickle names {module}.{name}: only numpy arrays are read (nothing it names is "
                              "run)")
        return _Global(module, name, role)

    def _reduce(self) -> PickledArray | None:
        func, args = self._pop_n(2)
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self._error(f"a call of {self._describe(func)}: only numpy's array pickling is read")
        if func.role == "reconstruct":
            if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].role == "ndarray"):
                raise self._error("_reconstruct is called for something other than numpy.ndarray")
            self._stack.append(_PendingArray())
        elif func.role == "dtype":
            code = _text(args[0]) if args else None
            if code is None or not _DTYPE_CODE.match(code):
                raise self._error(f"numpy.dtype({args[0] if args else ''!r}): only numeric dtypes are read")
            self._stack.append(_PendingDtype(code))
        elif func.role == "encode":
            if len(args) != 2 or _text(args[1]) not in ("latin1", "latin-1") or not isinstance(args[0], (str, _Marker)):
                raise self._error("_codecs.encode is called other than as Python 3 pickles bytes")
            self._stack.append(args[0] if args[0] is SKIPPED else args[0].encode("latin-1"))
        elif func.role == "frombuffer":
            if len(args) != 4:
                raise self._error("numpy's _frombuffer with other arguments than (buffer, dtype, shape, order)")
            data, dtype, shape, order = args
            self._stack.append(None)
            return self._finish(self._make_array(shape, dtype, _text(order) == "F", data))
        else:
            raise self._error(f"{func.module}.{func.name} is not called when numpy pickles an array")
        return None

    def _build(self) -> PickledArray | None:
        (state,) = self._pop_n(1)
        if not self._stack:
            raise self._error("BUILD with nothing to build")
        target = self._stack[-1]
        if isinstance(target, _PendingDtype):
            order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
            if order not in ("<", ">", "|", "="):
                raise self._error(f"a dtype state without its byte order: {state!r:.60}")
            target.order = order
            return None
        if not isinstance(target, _PendingArray) or target.built:
            raise self._error(f"BUILD of {self._describe(target)}: only arrays and dtypes are built")
        if not isinstance(state, tuple) or len(state) not in (4, 5) or len(state) == 5 and state[0] != 1:
            raise self._error("an array state other than (1, shape, dtype, is_fortran, data)")
        shape, dtype, fortran, data = state[-4:]
        target.built = True
        return self._finish(self._make_array(shape, dtype, fortran, data))

    def _make_array(self, shape: object, dtype: object, fortran: object, data: object) -> np.ndarray | _Marker:
        if isinstance(dtype, _PendingDtype):
            dtype = dtype.resolve()
        if not isinstance(dtype, np.dtype):
            raise self._error(f"an array whose dtype is {self._describe(dtype)}")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                 for d in shape)):
            raise self._error(f"an array whose shape is {shape!r:.60}")
        if data is SKIPPED:
            return SKIPPED
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(data, (bytes, bytearray)):
            raise self._error(f"an array whose data is {self._describe(data)}")
        count = math.prod(shape)
        if len(data) != count * dtype.itemsize:
            raise self._error(f"an array of shape {shape} {dtype} with {len(data):,} bytes of data "
                              f"(it needs {count * dtype.itemsize:,})")
        return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")

    def _finish(self, value: np.ndarray | _Marker) -> PickledArray | None:
        """Put a built array in place of its pending object; hand it over when it is a top-level value."""
        stack = self._stack
        at_root_value = (not self._want_key and self._key is not None and len(stack) >= 3 and stack[0] is self._root
                         and (not self._marks or self._marks == [1]) and stack[-2] is self._key_obj)
        if not at_root_value:
            if value is SKIPPED:
                raise self._error("data was passed over outside a value of the top-level dict")
            stack[-1] = value
            return None
        stack[-1] = TAKEN
        skipped = self._skipping or value is SKIPPED  # small data is read even when skipped: drop it here
        self._want_key, self._skipping = True, False
        return PickledArray(self._key, None if skipped else value, self.pos)

    # dicts
    def _empty_dict(self) -> None:
        if self._stack or self._marks:
            raise self._error("a dict inside the pickle: only a top-level dict of arrays is read")
        self._new_root()

    def _dict(self) -> None:
        items = self._pop_mark()
        if items or self._stack:
            raise self._error("a dict inside the pickle: only a top-level dict of arrays is read")
        self._new_root()

    def _new_root(self) -> None:
        self._root = _RootDict("the top-level dict")
        self._stack.append(self._root)
        self._want_key = True

    def _setitem(self) -> None:
        key, value = self._pop_n(2)
        self._check_set(key, value)

    def _setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self._error("SETITEMS with an odd number of objects")
        for i in range(0, len(items), 2):
            self._check_set(items[i], items[i + 1])

    def _check_set(self, key: object, value: object) -> None:
        if not self._stack or self._stack[-1] is not self._root:
            raise self._error("items set into something other than the top-level dict")
        if value is not TAKEN:
            raise self._error(f"the value of {_text(key)!r} is {self._describe(value)}, not an array")


def read_pickled_array(path: str | os.PathLike) -> np.ndarray:
    """The one array of a small pickle file (a per-video file of Paddle's split), read by `PickleStream`."""
    with open(path, "rb") as f:
        return PickleStream(f, size=os.fstat(f.fileno()).st_size).array()
