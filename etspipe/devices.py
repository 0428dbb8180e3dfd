"""Which torch device a run uses: one rule for every stage and command.

`auto` takes CUDA when a GPU is there and the CPU otherwise; asking for `cuda`
without a GPU, or for a device that does not exist, is the user's mistake and
one line that names the config key. torch is imported only when a device is
resolved, so the shared ground stays light for commands that never need it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from etspipe.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def device_kind(name: str | None, key: str = "device") -> str:
    """"cuda" or "cpu" for a configured device name (None means auto); `key` names it in errors."""
    import torch

    name = "auto" if name is None else name
    if name not in DEVICES:
        raise UserError(f"{key} must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key} is cuda but no CUDA GPU is available (use cpu or auto)")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_device(name: str | None, key: str = "device") -> torch.device:
    """The torch device for a configured name: `auto` takes CUDA when present."""
    import torch

    return torch.device(device_kind(name, key))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (Linux); False when unknown.

    Without them PyTorch emulates bf16 on the CPU, many times slower than fp32, so
    every stage asks this before it runs bf16 on a CPU (never assumes it).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    return False
