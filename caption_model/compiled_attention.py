"""Decoding's attention scores as one compiled kernel (`torch.compile`), where it pays.

At every word of a beam search, ``e_ti = w^T tanh(W h + U v_i + b)`` runs over
hypotheses x rows x attention units: the largest elementwise work of decoding.
The kernel computes it without a tanh per element. With ``a = W h`` (per
hypothesis) and ``k = U v_i + b`` (per row, fixed for the whole search),
``tanh(a + k) = 1 - 2 / (exp(2a) exp(2k) + 1)``, so ``exp(2k)`` is taken once per
batch and each word costs a product, an add and a reciprocal per element:
``e = sum(w) - 2 * (1 / (exp(2a) exp(2k) + 1)) . w``. Inductor fuses that into one
loop. On the 2-core AVX-512 CPU of issue 22 the fused tanh form compiled to a
kernel 3x slower than eager PyTorch, while this form runs 3.3x faster than
eager (docs/PERFORMANCE.md).

The identity is exact; in float32 it agrees with tanh to ~1e-7 as long as the
exponentials stay finite and non-zero, so it is used only while every |a| and
|k| is at most `EXP_LIMIT` (30: their product then only over- or underflows
where tanh is exactly +-1 in float32); a batch or word beyond that takes the
eager tanh. Compiling costs ~20 s the first time and a few seconds in a later
process (inductor keeps its kernels on disk), so ``decode.compile: auto``
compiles only for runs of at least `MIN_SEGMENTS` segments; training never uses
it (the scores need their gradient there).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SETTINGS = ("auto", "always", "never")
MIN_SEGMENTS = 4000  # break-even of a cold ~22 s compile at ~6 ms saved per segment (beam 3, 2-core CPU)
_compiled: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
EXP_LIMIT = 30.0


def scores_from_exponentials(exp_wh: Tensor, exp_keys: Tensor, w: Tensor) -> Tensor:
    """``tanh(wh + keys) @ w`` (B*G, T) from ``exp(2 wh)`` (B*G, A) and ``exp(2 keys)`` (B, T, A): what is compiled."""
    B, T, A = exp_keys.shape
    r = torch.reciprocal(exp_wh.view(B, -1, 1, A) * exp_keys.unsqueeze(1) + 1.0)  # (B, G, T, A), fused away
    return (w.sum() - 2.0 * (r @ w)).view(-1, T)


def exponential_keys(keys: Tensor) -> Tensor | None:
    """``exp(2 keys)``, once per batch; None where some |key| exceeds `EXP_LIMIT` (then tanh is used)."""
    if keys.numel() and float(keys.abs().amax()) > EXP_LIMIT:
        return None
    return torch.exp(2.0 * keys)


def enable(model: torch.nn.Module, setting: str, n_segments: int) -> bool:
    """Give `model`'s temporal attention the compiled scores when `setting` says so; whether it did.

    ``auto`` compiles for `n_segments` >= MIN_SEGMENTS except on an AVX-512 CPU
    (see `_eager_keeps_up`), ``always`` for any run, ``never`` not at all;
    without a C++ compiler on the PATH (inductor's CPU kernels need one) it
    stays eager and says so once.
    """
    global _compiled
    if setting not in SETTINGS:
        raise ValueError(f"decode.compile must be one of {', '.join(SETTINGS)}, got {setting!r}")
    attention = getattr(model, "attention", None)
    if attention is None or not hasattr(attention, "fused_scores"):
        return False
    wanted = setting == "always" or (setting == "auto" and n_segments >= MIN_SEGMENTS and not _eager_keeps_up(model))
    if wanted and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        logger.info("decode.compile: no C++ compiler on the PATH, attention stays eager")
        wanted = False
    if wanted and _compiled is None:
        _compiled = torch.compile(scores_from_exponentials, dynamic=True)
    attention.fused_scores = _fall_back_on_error(attention) if wanted else None
    return wanted


def _eager_keeps_up(model: torch.nn.Module) -> bool:
    """Whether eager decoding is as fast as the compiled kernel: on a CPU with AVX-512 kernels.

    There torch's eager tanh is vectorised well and the whole of val_1 decoded eagerly in 95 s against
    103 s compiled (plus the compile); on the AVX2 CPU of the earlier sessions the compiled kernel was
    2x the eager one (docs/PERFORMANCE.md).
    """
    param = next(model.parameters(), None)
    return (param is not None and param.device.type == "cpu"
            and torch.backends.cpu.get_cpu_capability().startswith("AVX512"))


def _fall_back_on_error(attention: torch.nn.Module) -> Callable[[Tensor, object, Tensor], Tensor | None]:
    """The compiled scores (wh, memory, w), or None where the model's eager tanh is to be used instead
    (values beyond `EXP_LIMIT`); a compile or run error turns the model back to eager with one warning."""

    def scores(wh: Tensor, memory, w: Tensor) -> Tensor | None:
        if not memory.exp_checked:  # once per batch: the keys do not change during a search
            memory.exp_keys, memory.exp_checked = exponential_keys(memory.keys), True
        if memory.exp_keys is None or float(wh.abs().amax()) > EXP_LIMIT:
            return None
        try:
            return _compiled(torch.exp(2.0 * wh), memory.exp_keys, w)
        except Exception as exc:  # noqa: BLE001 - inductor raises many types (compiler, codegen, backend)
            logger.warning("decode.compile: compiling the attention failed (%s: %s); decoding eagerly",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            attention.fused_scores = None
            return None

    return scores
