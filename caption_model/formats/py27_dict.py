"""CPython 2.7's dict iteration order, computed in Python 3.

Why this exists: the seed's ``dict.txt`` was written by a Python 2 script that
sorted words by count with a stable sort over ``dict.iteritems()``. Words that
share a count therefore appear in CPython 2.7's hash-table slot order, and that
order fixes the word ids the released weights expect. Python 3 dicts keep
insertion order, so the 2.7 order has to be recomputed from the rules in
CPython 2.7's ``Objects/dictobject.c``:

* hashes: ``str``/``unicode`` use the FNV-like loop of ``string_hash`` /
  ``unicode_hash`` (empty string -> 0, ``-1`` -> ``-2``, C ``long``
  wraparound, hash secret 0 as without ``-R``/``PYTHONHASHSEED``); ``int`` hashes
  to itself (``-1`` -> ``-2``);
* a new dict has 8 slots; a key goes to the first free slot of the probe
  ``i = hash & mask``, then ``i = 5*i + perturb + 1`` with ``perturb`` (a
  ``size_t``) starting at the hash and shifted right by 5 after each step;
* after an insertion that added a key, ``fill*3 >= size*2`` triggers a resize to
  the smallest power of 2 above ``4*used`` (``2*used`` above 50,000 keys); the
  old table is walked slot by slot and its keys reinserted into the new one;
* iteration walks the slots in index order.

Keys: a Python 3 ``str`` is hashed as a 2.7 ``unicode`` (code points, as on a
UCS4 build) and ``bytes`` as a 2.7 ``str``; for ASCII text both agree, as 2.7
needs ``u'a' == 'a'`` to hash alike. ``int`` (and ``bool``) must fit a C long.
The default is a 64-bit build; ``bits=32`` gives a 32-bit build's order,
which differs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

_MINSIZE = 8
_PERTURB_SHIFT = 5
_DUMMY = object()  # a deleted slot ("dummy" in dictobject.c)


def _to_signed(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def _string_hash(units: Iterable[int], length: int, bits: int) -> int:
    if length == 0:
        return 0
    mask = (1 << bits) - 1
    it = iter(units)
    first = next(it)
    x = ((first << 7) * 1000003 ^ first) & mask
    for c in it:
        x = (x * 1000003 ^ c) & mask
    x = _to_signed(x ^ length, bits)
    return -2 if x == -1 else x


def py27_hash(key: Hashable, bits: int = 64) -> int:
    """``hash(key)`` as CPython 2.7 (no hash randomisation) computes it, so slot positions can be derived."""
    if isinstance(key, bool | int):
        value = int(key)
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise ValueError(f"int key {value} does not fit a {bits}-bit C long (2.7 would make it a long)")
        return -2 if value == -1 else value
    if isinstance(key, str):
        return _string_hash(map(ord, key), len(key), bits)
    if isinstance(key, bytes):
        return _string_hash(key, len(key), bits)
    raise TypeError(f"no Python 2.7 hash emulation for {type(key).__name__} keys")


class Py27Dict:
    """The key layout of a CPython 2.7 dict (values are not kept: only the order matters here).

    ``presize`` reproduces ``_PyDict_NewPresized`` (a ``{...}`` literal with that
    many items); ``add`` is ``PyDict_SetItem``, ``remove`` is ``PyDict_DelItem``,
    ``merge`` is ``PyDict_Merge`` (``dict(d)``, ``d.update(d2)``, ``dict(**kw)``).
    """

    def __init__(self, presize: int = 0, bits: int = 64) -> None:
        self.bits = bits
        self._keys: list[object] = [None] * _MINSIZE
        self._hashes: list[int] = [0] * _MINSIZE
        self.used = 0
        self.fill = 0
        if presize > 5:
            self._resize(presize)

    @property
    def size(self) -> int:
        """Number of slots in the table (a power of 2)."""
        return len(self._keys)

    def _probe(self, h: int):
        mask = len(self._keys) - 1
        i = h & mask
        perturb = h & ((1 << self.bits) - 1)
        while True:
            yield i
            i = (5 * i + perturb + 1) & mask
            perturb >>= _PERTURB_SHIFT

    def _lookup(self, key: object, h: int) -> int:
        """Slot holding `key`, else the first dummy or empty slot on its probe path (``lookdict``)."""
        freeslot = -1
        for i in self._probe(h):
            k = self._keys[i]
            if k is None:
                return i if freeslot < 0 else freeslot
            if k is _DUMMY:
                if freeslot < 0:
                    freeslot = i
            elif self._hashes[i] == h and k == key:
                return i
        raise AssertionError("unreachable")

    def _insert(self, key: object, h: int) -> None:
        i = self._lookup(key, h)
        k = self._keys[i]
        if k is None or k is _DUMMY:
            if k is None:
                self.fill += 1
            self._keys[i], self._hashes[i] = key, h
            self.used += 1

    def _resize(self, minused: int) -> None:
        newsize = _MINSIZE
        while newsize <= minused:
            newsize <<= 1
        old = [(k, h) for k, h in zip(self._keys, self._hashes, strict=True) if k is not None and k is not _DUMMY]
        self._keys, self._hashes = [None] * newsize, [0] * newsize
        self.used = self.fill = len(old)
        for k, h in old:  # insertdict_clean: first empty slot, no equality test
            for i in self._probe(h):
                if self._keys[i] is None:
                    self._keys[i], self._hashes[i] = k, h
                    break

    def add(self, key: Hashable) -> None:
        """Insert `key` (a no-op if present: 2.7 never resizes on a mere update)."""
        n_used = self.used
        self._insert(key, py27_hash(key, self.bits))
        if self.used > n_used and self.fill * 3 >= len(self._keys) * 2:
            self._resize((2 if self.used > 50000 else 4) * self.used)

    def remove(self, key: Hashable) -> None:
        """Delete `key`, leaving a dummy slot as 2.7 does (no resize)."""
        h = py27_hash(key, self.bits)
        i = self._lookup(key, h)
        if self._keys[i] is None or self._keys[i] is _DUMMY:
            raise KeyError(key)
        self._keys[i] = _DUMMY
        self.used -= 1

    def merge(self, other: Py27Dict) -> None:
        """Add `other`'s keys in its slot order after one up-front resize, as ``PyDict_Merge`` does."""
        if other.used == 0 or other is self:
            return
        if (self.fill + other.used) * 3 >= len(self._keys) * 2:
            self._resize((self.used + other.used) * 2)
        for k, h in zip(other._keys, other._hashes, strict=True):
            if k is not None and k is not _DUMMY:
                self._insert(k, h)

    def keys(self) -> list:
        """Keys in 2.7's iteration order (slot order)."""
        return [k for k in self._keys if k is not None and k is not _DUMMY]


def py27_order(keys: Iterable[Hashable], bits: int = 64) -> list:
    """Keys inserted one by one into an empty 2.7 dict, returned in the order 2.7 iterates them.

    Repeated keys keep their first position, as in any dict.
    """
    d = Py27Dict(bits=bits)
    for k in keys:
        d.add(k)
    return d.keys()
