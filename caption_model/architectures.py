"""The captioners etspipe can train and run, chosen by ``model.arch``: the one place that knows them all.

* ``ets`` (default): the ETS paper's model, caption_model.model.
* ``paddle_ets``: the seed's published network (PaddlePaddle's ETS), caption_model.paddle_ets.

Both have the same interface (encode, init_state, step, reorder, forward, loss), so training,
decoding, evaluation, prediction and dense captioning never ask which one runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ARCHS = ("ets", "paddle_ets")


def build_captioner(cfg_model: dict, feat_dim: int, vocab_size: int) -> nn.Module:
    """A new, untrained captioner of ``cfg_model["arch"]`` (``ets`` when the key is absent: older checkpoints)."""
    arch = str(cfg_model.get("arch", "ets"))
    if arch == "paddle_ets":
        from caption_model.paddle_ets import PaddleETS

        return PaddleETS(cfg_model, feat_dim, vocab_size)
    if arch == "ets":
        from caption_model.model import ETS

        return ETS(cfg_model, feat_dim, vocab_size)
    raise ValueError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def no_decay_names(model: nn.Module) -> tuple[str, ...]:
    """Parameter names a model trains without weight decay (its own recipe's rule; none for etspipe's ETS)."""
    names = getattr(model, "no_decay_names", None)
    return tuple(names()) if callable(names) else ()


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild (model in eval mode, vocab, checkpoint dict) from a checkpoint, for decoding.

    The checkpoint's ``model.arch`` says which captioner it holds.
    """
    from caption_model.formats.text import Vocab
    from caption_model.runs.checkpoint import load_checkpoint, load_weights

    ckpt = load_checkpoint(path)
    vocab = Vocab.from_dict(ckpt["vocab"])
    model = build_captioner(ckpt["config"]["model"], int(ckpt["feat_dim"]), len(vocab))
    load_weights(model, ckpt["model"], ckpt.get("path", path), "captioner")
    return model.to(device).eval(), vocab, ckpt
