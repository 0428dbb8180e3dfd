"""Keep the memory of freed tensors in the process instead of handing it back to the kernel at once.

A training step or a decoding batch allocates and frees the same large tensors (tens of MB: the
encoded rows, their attention keys, dropout masks) again and again. glibc gives every large block
(above a threshold that starts at 128 KB and rises to at most 32 MB) its own `mmap` and unmaps it on
`free`, so the next step's tensor of the same size starts on fresh pages that the kernel zeroes at
their first write. On the 2-core CPUs this project is measured on, that was ~25,000 page faults and
~20 % of a training step at ActivityNet sizes (docs/PERFORMANCE.md, issue 22). With `mmap` off and
trimming of the heap's top pushed out of reach, the freed blocks stay in the heap and the next step
reuses them: about one fault per step.

The price is that memory freed after a peak is not returned until the process ends, which costs the
long-running stage commands nothing (they come back to the same peak every step). Set
``ETSPIPE_KEEP_FREED_MEMORY=0`` to keep glibc's default. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters of glibc's malloc.h
_TRIM_NEVER = 2**31 - 1  # the largest value the int parameter takes: trim only above 2 GiB of free top
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed blocks (see the module docstring); whether it is on.

    Called by the CLI for every command and by the heavy library entry points (training, decoding);
    later calls do nothing.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ETSPIPE_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
    except (OSError, AttributeError):  # no mallopt in this C library
        _applied = False
    logger.debug("keep freed memory in the heap: %s", _applied)
    return _applied
