"""Which precision the matrix products run in: bf16 autocast where the hardware has it, else fp32.

`train.precision` is ``auto`` | ``fp32`` | ``bf16``. ``auto`` means bf16 autocast on
a CUDA GPU with bf16 and fp32 on a CPU (CPU runs stay exact references). bf16 on a
CPU pays only with native bf16 instructions (AVX512-BF16 or AMX): without them
PyTorch emulates it and a bf16 matrix product is ~25x SLOWER than fp32 (measured
on an AVX2 EPYC: 0.13 against 3.5 GFLOP/s for 512x512, docs/PERFORMANCE.md), so
an explicit ``bf16`` on such a CPU falls back to fp32 with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from etspipe.devices import cpu_has_native_bf16
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")


@functools.cache
def _warn_emulated() -> None:
    logger.warning("train.precision bf16: this CPU has no native bf16 (avx512_bf16/amx), where bf16 is "
                   "emulated and far slower than fp32; using fp32")


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether `precision` means bf16 autocast on `device` (see the module docstring)."""
    check_precision(precision)
    if device.type == "cuda":
        return precision != "fp32" and torch.cuda.is_bf16_supported()
    if precision != "bf16":
        return False
    if not cpu_has_native_bf16():
        _warn_emulated()
        return False
    return True


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of `precision` on `device` (a no-op context for fp32)."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
