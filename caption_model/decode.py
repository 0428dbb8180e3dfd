"""Turning a trained captioner into sentences: greedy and batched beam search.

This module is the one decoder of the project: training's validation,
`evaluate` and `predict` all call :func:`greedy` / :func:`beam_search` (or
:func:`decode_segments`). Both work on any model with the step API of
`caption_model.model.ETS`: ``encode(feats, mask) -> memory``,
``init_state(memory) -> state``, ``step(prev_tokens, state, memory) ->
(log_probs, state, attn)`` and ``reorder(state, idx)``. Many segments decode
together: the batch dimension is segments (greedy) or segments x beams (beam
search), so a CPU or GPU runs one matrix product per word for the whole batch.
In beam search the memory stays one entry per segment while the state and
tokens hold its K hypotheses consecutively: ``step`` reads entry b of the
memory for rows b*K .. b*K+K-1 (the attention reads a segment's rows once for
all its beams instead of K copies of them).

Neither search ever emits ``<unk>``, ``<pad>`` or ``<s>``: they are not words
(``<unk>`` stands for every rare word at once), so their log-probabilities are
set to -inf and the rest renormalised before a word is chosen: the next most
likely real word wins, and scores are probabilities over what can be written.
``allow_unk`` (``decode.allow_unk``) lets ``<unk>`` through, as the seed's Paddle
decoder did; its parity tests decode so. The default bans it: a caption with
``<unk>`` in it names nothing, and METEOR's tokenizer splits it into ``< unk >``.
``<e>`` is likewise barred at the first step: an empty caption describes
nothing, and a weakly trained model under beam search with raw scores would
otherwise end every caption at once (docs/PERFORMANCE.md, "Decoding").

Beam search keeps `beam_size` LIVE hypotheses per segment, ranked by the sum of
token log-probabilities. At every step each live hypothesis may end (``<e>``):
that finished hypothesis is set aside and competes for the answer by
``score / length ** length_norm`` (length counts ``<e>``; 0 keeps raw
log-probabilities), while the live beam is refilled with the best
`beam_size` continuations by real words. A finished hypothesis therefore never
takes a live slot, and the beam stays full until the end. A segment is done
when its best finished hypothesis beats the best its live ones can still reach:
exactly so with ``length_norm`` 0 (adding a word only lowers a score); with
``length_norm`` > 0 the bound assumes a live hypothesis ends at the next step
(the usual heuristic; a longer one could still overtake). The answer is the
best finished hypothesis; for a segment cut by `max_len`, the best live one
competes with it on the same normalised score (its length being `max_len`).
Every segment's search is independent of the others in the batch, which is
what makes batched results equal to one-at-a-time results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from caption_model.formats.text import BOS, EOS, PAD, UNK

logger = logging.getLogger(__name__)

NEVER_EMITTED = (PAD, BOS, UNK)  # token ids the searches never choose (UNK only while allow_unk is off)


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


def _ban_non_words(log_probs: Tensor, first: bool = False, allow_unk: bool = False) -> tuple[Tensor, Tensor]:
    """The log-probabilities with the tokens never emitted at -inf (in place), and each row's log mass left.

    Renormalising keeps scores comparable with ``<e>``'s: a model that puts
    most of its mass on ``<unk>`` would otherwise make every real word look
    improbable and favour ending at once. The renormalised log-probability of
    a word is ``log_probs - shift`` (shift (B,) float64, the log of what the
    emitted tokens hold): taken from the few banned tokens as
    ``log(1 - their mass)``, so no pass over the vocabulary is needed (a
    logsumexp over all words was ~15 % of a beam-3 decode), and from a
    logsumexp over the emitted words where the banned ones hold most of the
    mass (there ``log(1 - mass)`` would lose its digits).
    """
    banned = [t for t in NEVER_EMITTED if not (allow_unk and t == UNK)]
    banned += [EOS] if first else []  # a caption has at least one word
    mass = log_probs[:, banned].double().exp().sum(1)
    log_probs[:, banned] = float("-inf")
    shift = torch.log1p(-mass.clamp(max=1.0))
    heavy = mass > 0.5
    if bool(heavy.any()):
        shift[heavy] = torch.logsumexp(log_probs[heavy].double(), dim=-1)
    return log_probs, shift


@torch.no_grad()
def greedy(model, feats: Tensor, mask: Tensor, max_len: int, return_attn: bool = False,
           allow_unk: bool = False) -> list[Decoded]:
    """The most likely real word at every step, for a batch of segments (B, T, D) with mask (B, T)."""
    mask = mask.bool()
    B = feats.shape[0]
    memory = model.encode(feats, mask)
    state = model.init_state(memory)
    prev = torch.full((B,), BOS, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    score = torch.zeros(B, dtype=torch.float64, device=feats.device)
    steps: list[Tensor] = []
    attns: list[Tensor] = []
    for t in range(max_len):
        log_probs, state, attn = model.step(prev, state, memory)
        log_probs, shift = _ban_non_words(log_probs, first=t == 0, allow_unk=allow_unk)
        tok = log_probs.argmax(-1)
        score += torch.where(done, 0.0, log_probs.gather(1, tok[:, None]).squeeze(1).double() - shift)
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


class _Finished:
    """Per segment, the best finished hypothesis so far: where it ended and how to trace it back."""

    def __init__(self, B: int, T: int, device: torch.device, keep_attn: bool):
        self.norm = torch.full((B,), float("-inf"), dtype=torch.float64, device=device)
        self.raw = torch.full((B,), float("-inf"), dtype=torch.float64, device=device)
        self.step = torch.full((B,), -1, dtype=torch.long, device=device)  # step of its <e>
        self.parent = torch.zeros(B, dtype=torch.long, device=device)  # live beam it grew from (flat)
        self.attn = torch.zeros(B, T, device=device) if keep_attn else None

    def offer(self, t: int, eos_raw: Tensor, alpha: float, frozen: Tensor, base: Tensor, attn: Tensor | None):
        """Take the best of this step's hypotheses ending in <e> (B, K) where it beats the kept one."""
        norm = eos_raw / float(t + 1) ** alpha if alpha else eos_raw
        best_norm, k = norm.max(1)
        better = (best_norm > self.norm) & ~frozen
        self.norm = torch.where(better, best_norm, self.norm)
        self.raw = torch.where(better, eos_raw.gather(1, k[:, None]).squeeze(1), self.raw)
        self.step = torch.where(better, torch.full_like(self.step, t), self.step)
        self.parent = torch.where(better, base + k, self.parent)
        if self.attn is not None and attn is not None:
            chosen = attn.reshape(len(k), -1, attn.shape[-1])[torch.arange(len(k), device=k.device), k]
            self.attn = torch.where(better[:, None], chosen.float(), self.attn)


@torch.no_grad()
def beam_search(model, feats: Tensor, mask: Tensor, beam_size: int, max_len: int,
                length_norm: float, return_attn: bool = False, allow_unk: bool = False) -> list[Decoded]:
    """Batched beam search over segments (B, T, D); see the module docstring for the rules."""
    if beam_size <= 1:
        return greedy(model, feats, mask, max_len, return_attn, allow_unk)
    mask = mask.bool()
    B, K, alpha = feats.shape[0], int(beam_size), float(length_norm)
    dev = feats.device
    memory = model.encode(feats, mask)
    state = model.init_state(memory)
    expand = torch.arange(B, device=dev).repeat_interleave(K)
    state = model.reorder(state, expand)  # the K hypotheses of a segment read its one memory (not repeated)
    # Only beam 0 is alive at the start, so the first step expands one hypothesis.
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=dev)
    scores[:, 0] = 0.0
    prev = torch.full((B * K,), BOS, dtype=torch.long, device=dev)
    base = torch.arange(B, device=dev) * K
    fin = _Finished(B, feats.shape[1], dev, return_attn)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    tok_hist: list[Tensor] = []
    parent_hist: list[Tensor] = []
    attn_hist: list[Tensor] = []
    for t in range(max_len):
        log_probs, state, attn = model.step(prev, state, memory)
        log_probs, shift = _ban_non_words(log_probs, first=t == 0, allow_unk=allow_unk)
        if t > 0:
            fin.offer(t, scores + (log_probs[:, EOS].double() - shift).reshape(B, K), alpha, done, base, attn)
        log_probs[:, EOS] = float("-inf")  # the live beam continues with real words only
        # The K best continuations of a segment are among the K best words of each of its hypotheses
        # (a hypothesis adds the same score to all its words): K x K candidates, not K x vocabulary.
        words, tokens = log_probs.topk(K, dim=1)  # (B*K, K)
        cand = (scores.reshape(-1, 1) + (words.double() - shift[:, None])).reshape(B, K * K)
        top, idx = cand.topk(K, dim=1)
        parent = (base[:, None] + torch.div(idx, K, rounding_mode="floor")).reshape(-1)
        prev = tokens.reshape(B, K * K).gather(1, idx).reshape(-1)
        scores = top
        state = model.reorder(state, parent)
        tok_hist.append(prev)
        parent_hist.append(parent)
        if return_attn:
            attn_hist.append(attn[parent].float())
        # Best score a live hypothesis could still reach if it ended at the next step.
        reach = scores.max(1).values / (float(t + 2) ** alpha if alpha else 1.0)
        done |= (fin.norm >= reach) | ~torch.isfinite(reach)
        if bool(done.all()):
            break
    return _trace_back(fin, scores, done, base, tok_hist, parent_hist, attn_hist, alpha, mask)


def _trace_back(fin: _Finished, scores: Tensor, done: Tensor, base: Tensor, tok_hist: list[Tensor],
                parent_hist: list[Tensor], attn_hist: list[Tensor], alpha: float, mask: Tensor) -> list[Decoded]:
    """Each segment's answer, followed from its last step back to the first through the back-pointers."""
    B, n_steps = len(base), len(tok_hist)
    dev = base.device
    # A segment cut by max_len compares its best live hypothesis (n_steps words, no <e>) with its
    # best finished one on the same normalised score; all live ones have the same length.
    live_norm = scores.max(1).values / (float(max(n_steps, 1)) ** alpha if alpha else 1.0)
    has_fin = torch.isfinite(fin.raw) & (done | (fin.norm >= live_norm))
    live_best = base + scores.argmax(1)
    last = torch.where(has_fin, fin.step - 1, torch.full_like(fin.step, n_steps - 1))  # last word's step
    cur = torch.where(has_fin, fin.parent, live_best)
    final = torch.where(has_fin, fin.raw, scores.max(1).values).tolist()
    toks = torch.full((B, n_steps + 1), PAD, dtype=torch.long, device=dev)
    T = mask.shape[1]
    atts = torch.zeros(B, n_steps + 1, T, device=dev) if fin.attn is not None else None
    for t in range(n_steps - 1, -1, -1):
        sel = last >= t
        toks[:, t] = torch.where(sel, tok_hist[t][cur], toks[:, t])
        if atts is not None:
            atts[:, t] = torch.where(sel[:, None], attn_hist[t][cur], atts[:, t])
        cur = torch.where(sel, parent_hist[t][cur], cur)
    rows = torch.arange(B, device=dev)
    ended_at = fin.step.clamp(min=0)
    toks[rows[has_fin], ended_at[has_fin]] = EOS
    if atts is not None:
        atts[rows[has_fin], ended_at[has_fin]] = fin.attn[has_fin]
    ids = toks.tolist()
    att = atts.cpu().numpy() if atts is not None else None
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


def decode_segments(model, rows: Sequence[np.ndarray], beam_size: int, max_len: int,
                    length_norm: float, batch_size: int, device: torch.device | str = "cpu",
                    return_attn: bool = False, progress: bool = False, allow_unk: bool = False) -> list[Decoded]:
    """Decode many segments (each an (n_i, D) array of feature rows), returned in input order.

    Segments are sorted by row count before batching so that a batch pads
    little; the model must be in eval mode (dropout off).
    """
    from etspipe.heap import keep_freed_memory
    from etspipe.progress import progress_bar

    if model.training:
        raise ValueError("decode with the model in eval mode (model.eval())")
    keep_freed_memory()  # each batch re-allocates the same large tensors (etspipe/heap.py)
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
    out: list[Decoded | None] = [None] * len(rows)
    batch_size = max(1, int(batch_size))
    starts = range(0, len(order), batch_size)
    for s in progress_bar(starts, desc="decode", unit="batch", enabled=progress):
        chosen = order[s : s + batch_size]
        feats, mask = pad_rows([rows[i] for i in chosen], device)
        decoded = beam_search(model, feats, mask, beam_size, max_len, length_norm, return_attn, allow_unk)
        for i, d in zip(chosen, decoded, strict=False):
            out[i] = d
    return out  # type: ignore[return-value]
