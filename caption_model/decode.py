"""Turning a trained captioner into sentences: greedy and batched beam search.

Both work on any model with the step API of `caption_model.model.ETS`:
``encode(feats, mask) -> memory``, ``init_state(memory) -> state``,
``step(prev_tokens, state, memory) -> (log_probs, state, attn)`` and
``reorder(state, idx)``. Many segments decode together: the batch dimension is
segments (greedy) or segments x beams (beam search), so a CPU or GPU runs one
matrix product per word for the whole batch instead of one per segment.

Beam search keeps `beam_size` hypotheses per segment, ranked by the sum of
token log-probabilities. A hypothesis that emits ``<e>`` is finished: it keeps
its slot and its score (it can only be pushed out by better hypotheses), and a
segment is done when all its slots are finished. The answer is the best
finished hypothesis (an unfinished one only if none finished within `max_len`)
by ``score / length ** length_norm`` (length counts ``<e>``; 0 keeps raw
log-probabilities). Every segment's search is independent of the others in the
batch, which is what makes batched results equal to one-at-a-time results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from caption_model.text import BOS, EOS, PAD

logger = logging.getLogger(__name__)


@dataclass
class Decoded:
    """One decoded caption.

    `tokens` are word ids without ``<s>``/``<e>``; `ended` says whether ``<e>``
    was produced; `attn` (optional) holds the attention over the segment's
    feature rows at each produced token, ``(len(tokens) + ended, T)``, for plots;
    `score` is the summed log-probability (``<e>`` included).
    """

    tokens: list[int]
    score: float
    ended: bool
    attn: np.ndarray | None = None


def _finish(tokens: list[int], attn: np.ndarray | None, score: float, n_rows: int) -> Decoded:
    ended = EOS in tokens
    words = tokens[: tokens.index(EOS)] if ended else [t for t in tokens if t != PAD]
    steps = len(words) + int(ended)
    a = None if attn is None else np.ascontiguousarray(attn[:steps, :n_rows])
    return Decoded(words, float(score), ended, a)


@torch.no_grad()
def greedy(model, feats: Tensor, mask: Tensor, max_len: int = 80, return_attn: bool = False) -> list[Decoded]:
    """The most likely word at every step, for a batch of segments (B, T, D) with mask (B, T)."""
    mask = mask.bool()
    B = feats.shape[0]
    memory = model.encode(feats, mask)
    state = model.init_state(memory)
    prev = torch.full((B,), BOS, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    score = torch.zeros(B, dtype=torch.float64, device=feats.device)
    steps: list[Tensor] = []
    attns: list[Tensor] = []
    for _ in range(max_len):
        log_probs, state, attn = model.step(prev, state, memory)
        tok = log_probs.argmax(-1)
        score += torch.where(done, 0.0, log_probs.gather(1, tok[:, None]).squeeze(1).double())
        tok = tok.masked_fill(done, PAD)
        steps.append(tok)
        if return_attn:
            attns.append(attn.float())
        done |= tok == EOS
        prev = tok
        if bool(done.all()):
            break
    ids = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(B)]
    att = torch.stack(attns, 1).cpu().numpy() if return_attn and attns else None
    n_rows = mask.sum(1).tolist()
    return [_finish(ids[b], None if att is None else att[b], score[b].item(), n_rows[b]) for b in range(B)]


@torch.no_grad()
def beam_search(model, feats: Tensor, mask: Tensor, beam_size: int = 3, max_len: int = 80,
                length_norm: float = 0.0, return_attn: bool = False) -> list[Decoded]:
    """Batched beam search over segments (B, T, D); see the module docstring for the rules."""
    if beam_size <= 1:
        return greedy(model, feats, mask, max_len, return_attn)
    mask = mask.bool()
    B, K = feats.shape[0], int(beam_size)
    dev = feats.device
    memory = model.encode(feats, mask)
    state = model.init_state(memory)
    expand = torch.arange(B, device=dev).repeat_interleave(K)
    memory = model.reorder(memory, expand)  # beams of a segment share its memory: never reordered again
    state = model.reorder(state, expand)
    # Only beam 0 is alive at the start, so the first step expands one hypothesis.
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=dev)
    scores[:, 0] = 0.0
    prev = torch.full((B * K,), BOS, dtype=torch.long, device=dev)
    finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B * K, dtype=torch.long, device=dev)
    base = (torch.arange(B, device=dev) * K)[:, None]
    tok_hist: list[Tensor] = []
    parent_hist: list[Tensor] = []
    attn_hist: list[Tensor] = []
    for _ in range(max_len):
        log_probs, state, attn = model.step(prev, state, memory)
        log_probs = log_probs.double()
        V = log_probs.shape[1]
        if bool(finished.any()):
            # A finished hypothesis continues only with <pad>, at no cost.
            log_probs[finished] = float("-inf")
            log_probs[finished, PAD] = 0.0
        cand = (scores.reshape(-1, 1) + log_probs).reshape(B, K * V)
        top, idx = cand.topk(K, dim=1)
        parent = (base + torch.div(idx, V, rounding_mode="floor")).reshape(-1)
        tok = (idx % V).reshape(-1)
        was_finished = finished[parent]
        finished = was_finished | (tok == EOS)
        lengths = lengths[parent] + (~was_finished).long()
        scores = top
        state = model.reorder(state, parent)
        prev = tok
        tok_hist.append(tok)
        parent_hist.append(parent)
        if return_attn:
            attn_hist.append(attn[parent].float())
        if bool(finished.all()):
            break

    # Pick each segment's answer: finished beats unfinished, then the (normalised) score.
    flat_scores = scores.reshape(-1)
    ranked = flat_scores / lengths.clamp(min=1).double() ** float(length_norm) if length_norm else flat_scores.clone()
    ranked = torch.where(torch.isfinite(ranked), ranked, torch.full_like(ranked, -1e300))
    has_finished = finished.reshape(B, K).any(1, keepdim=True)
    ranked = ranked.reshape(B, K).masked_fill(has_finished & ~finished.reshape(B, K), -float("inf"))
    best = base.squeeze(1) + ranked.argmax(1)

    # Follow the back-pointers from the chosen beams to the first step.
    n_steps = len(tok_hist)
    toks = torch.empty(B, n_steps, dtype=torch.long, device=dev)
    atts = torch.empty(B, n_steps, feats.shape[1], device=dev) if return_attn else None
    cur = best
    for t in range(n_steps - 1, -1, -1):
        toks[:, t] = tok_hist[t][cur]
        if atts is not None:
            atts[:, t] = attn_hist[t][cur]
        cur = parent_hist[t][cur]
    ids = toks.tolist()
    att = atts.cpu().numpy() if atts is not None else None
    final = flat_scores[best].tolist()
    n_rows = mask.sum(1).tolist()
    return [_finish(ids[b], None if att is None else att[b], final[b], n_rows[b]) for b in range(B)]


def pad_rows(rows: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pad a list of (n_i, D) arrays to (B, max n, D) with a (B, max n) mask."""
    T = max(1, max(r.shape[0] for r in rows))
    D = rows[0].shape[1]
    feats = np.zeros((len(rows), T, D), dtype=np.float32)
    mask = np.zeros((len(rows), T), dtype=bool)
    for i, r in enumerate(rows):
        feats[i, : len(r)] = r
        mask[i, : len(r)] = True
    return torch.from_numpy(feats).to(device), torch.from_numpy(mask).to(device)


def decode_segments(model, rows: Sequence[np.ndarray], beam_size: int = 3, max_len: int = 80,
                    length_norm: float = 0.0, batch_size: int = 64, device: torch.device | str = "cpu",
                    return_attn: bool = False, progress: bool = False) -> list[Decoded]:
    """Decode many segments (each an (n_i, D) array of feature rows), returned in input order.

    Segments are sorted by row count before batching so that a batch pads
    little; the model must be in eval mode (dropout off).
    """
    from etspipe.progress import progress_bar

    if model.training:
        raise ValueError("decode with the model in eval mode (model.eval())")
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
    out: list[Decoded | None] = [None] * len(rows)
    batch_size = max(1, int(batch_size))
    starts = range(0, len(order), batch_size)
    for s in progress_bar(starts, desc="decode", unit="batch", enabled=progress):
        chosen = order[s : s + batch_size]
        feats, mask = pad_rows([rows[i] for i in chosen], device)
        decoded = beam_search(model, feats, mask, beam_size, max_len, length_norm, return_attn)
        for i, d in zip(chosen, decoded, strict=False):
            out[i] = d
    return out  # type: ignore[return-value]
