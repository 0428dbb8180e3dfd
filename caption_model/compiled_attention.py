"""Decoding's attention scores as one compiled kernel (`torch.compile`), where it pays.

At every word of a beam search, ``e_ti = w^T tanh(W h + U v_i + b)`` runs over
hypotheses x rows x attention units. Eager PyTorch makes three passes over a
tensor larger than the cache (the add, the tanh, the product with w): with the
reference sizes that was ~45 % of a beam-3 decode on the 2-core CPU. Inductor
fuses them into one loop: 2x faster at 134 rows, 4.4x at 256 rows
(docs/PERFORMANCE.md). Compiling costs ~22 s the first time and ~3 s in a
later process (inductor keeps its kernels on disk), so ``decode.compile: auto``
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


def attention_scores(wh: Tensor, keys: Tensor, w: Tensor) -> Tensor:
    """``tanh(wh[:, None] + keys) @ w``: (B, A), (B, T, A), (A,) -> (B, T)."""
    return torch.tanh(wh.unsqueeze(1) + keys) @ w


def enable(model: torch.nn.Module, setting: str, n_segments: int) -> bool:
    """Give `model`'s temporal attention the compiled scores when `setting` says so; whether it did.

    ``auto`` compiles for `n_segments` >= MIN_SEGMENTS, ``always`` for any run,
    ``never`` not at all; without a C++ compiler on the PATH (inductor's CPU
    kernels need one) it stays eager and says so once.
    """
    global _compiled
    if setting not in SETTINGS:
        raise ValueError(f"decode.compile must be one of {', '.join(SETTINGS)}, got {setting!r}")
    attention = getattr(model, "attention", None)
    if attention is None or not hasattr(attention, "fused_scores"):
        return False
    wanted = setting == "always" or (setting == "auto" and n_segments >= MIN_SEGMENTS)
    if wanted and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        logger.info("decode.compile: no C++ compiler on the PATH, attention stays eager")
        wanted = False
    if wanted and _compiled is None:
        _compiled = torch.compile(attention_scores, dynamic=True)
    attention.fused_scores = _fall_back_on_error(attention) if wanted else None
    return wanted


def _fall_back_on_error(attention: torch.nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The compiled scores; a compile or run error turns the model back to eager with one warning."""

    def scores(wh: Tensor, keys: Tensor, w: Tensor) -> Tensor:
        try:
            return _compiled(wh, keys, w)
        except Exception as exc:  # noqa: BLE001 - inductor raises many types (compiler, codegen, backend)
            logger.warning("decode.compile: compiling the attention failed (%s: %s); decoding eagerly",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            attention.fused_scores = None
            return attention_scores(wh, keys, w)

    return scores
