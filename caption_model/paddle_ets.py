"""The seed's own captioner: PaddlePaddle's ETS network (PaddleCV/video `models/ets/ets_net.py`), as published.

It is a different network from etspipe's ETS (caption_model.model) and is reproduced exactly, so that
its released weights (`ETS.pdparams`, imported by caption_model.paddle_import) caption as they did in
Paddle. Weights are kept in Paddle's ``[in, out]`` layout (``x W``) under names that map one to one
onto fluid's (`PADDLE_NAMES`). With the seed's sizes: F=2048 feature, P=1024 input layer, G=512 per
encoder GRU, H=512 decoder, E=512 words (../shared/SEED.md):

    x_t   = tanh(f_t W0 + b0)                                  input layer (fc_0)
    fwd   = GRU_0(x W1),  bwd = GRU_1(x W2) from the end        bias-free projections (fc_1, fc_2)
    enc_t = [fwd_t; bwd_t]                                     (T, 2G)
    vec   = sum_t softmax_t(enc_t w3) enc_t                     attention pooling (fc_3)
    proj  = enc W4                                             (fc_4)
    h_0   = tanh(vec W5)                                       boot state (fc_5)
    a     = softmax_t(w7 . (proj_t + h W6))                    NO tanh (fc_6, fc_7)
    ctx   = sum_t a_t enc_t
    h     = GRU_unit(E[y] W8a + ctx W8b, h)                    (fc_8's two weights)
    p     = softmax(h W9 + b9)                                 (fc_9)

The GRUs are Paddle's cell (caption_model.paddle_gru), not torch's. Without the tanh the decoder
state adds the same number ``(h W6) . w7`` to every row's score, and a softmax does not change when
all its inputs move together: the published attention is one distribution per segment, the same at
every word, and W6 has no effect. It is computed here once per segment, from ``proj . w7`` (the
same numbers up to float rounding, far inside the parity tests' 1e-5; W6 is kept so the released
weights load and are written back). So is ``ctx W8b``: a decoding step costs one GRU unit and the
output layer, whatever the segment's length. This is the published network's behaviour, kept on
purpose; etspipe's own ETS is the model whose attention moves with the decoder state.

Word ids: etspipe's vocabulary is ``<pad> <s> <e> <unk> words...``; Paddle's dict.txt is
``<s> <e> <unk> words...`` (no padding word). Paddle id = etspipe id - 1, so the embedding and the
output layer have V - 1 rows/columns (V = len(vocab)), and `step` returns log-probabilities over
etspipe's V ids with ``<pad>`` at -inf: the softmax is Paddle's, over Paddle's words.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caption_model.formats.text import PAD
from caption_model.paddle_gru import gru_cell, gru_sequence, gru_sequences, split_weight

# fluid's creation-order parameter names -> this module's parameters (shapes in `PaddleETS.shapes`).
PADDLE_NAMES = {
    "fc_0.w_0": "input_w", "fc_0.b_0": "input_b",
    "fc_1.w_0": "fwd_in_w", "gru_0.w_0": "fwd_gru_w", "gru_0.b_0": "fwd_gru_b",
    "fc_2.w_0": "bwd_in_w", "gru_1.w_0": "bwd_gru_w", "gru_1.b_0": "bwd_gru_b",
    "fc_3.w_0": "pool_w", "fc_4.w_0": "key_w", "fc_5.w_0": "boot_w",
    "embedding_0.w_0": "embed", "fc_6.w_0": "state_w", "fc_7.w_0": "score_w",
    "fc_8.w_0": "word_in_w", "fc_8.w_1": "context_in_w",
    "gru_unit_0.w_0": "dec_gru_w", "gru_unit_0.b_0": "dec_gru_b",
    "fc_9.w_0": "out_w", "fc_9.b_0": "out_b",
}
NO_DECAY = ("input_b",)  # the seed's input-layer bias: L2 decay 0 (its ParamAttr), every other weight 1e-4


@dataclass
class PaddleETSConfig:
    """The `model` keys this network reads (configs/ets.yaml; the seed's values in configs/paddle_ets.yaml)."""

    proj_dim: int  # P, the input layer (the seed's fc_dim, 1024)
    gru_dim: int | None  # G, each encoder GRU (the seed's gru_hidden_dim, 512); None: P // 2
    hidden_dim: int  # H, the decoder GRU and the attention projection (decoder_size, 512)
    embed_dim: int  # E, word embeddings (word_emb_dim, 512)

    @classmethod
    def from_dict(cls, d: dict) -> PaddleETSConfig:
        from etspipe.config import reference_config

        names = {f.name for f in fields(cls)}
        values = {**reference_config()["model"], **d}
        cfg = cls(**{k: v for k, v in values.items() if k in names})
        if cfg.gru_dim is None:
            cfg.gru_dim = max(int(cfg.proj_dim) // 2, 1)
        return cfg


@dataclass
class PaddleMemory:
    """Per segment, what every decoding step reads: the step-independent attention and its context."""

    attn: Tensor  # a (B, T): the decoder attention, the same at every word (module docstring)
    context_in: Tensor  # ctx W8b (B, 3H)
    mask: Tensor  # (B, T) bool
    vec: Tensor  # the attention-pooled encoding (B, 2G), the boot state's input

    def index_select(self, idx: Tensor) -> PaddleMemory:
        return PaddleMemory(self.attn.index_select(0, idx), self.context_in.index_select(0, idx),
                            self.mask.index_select(0, idx), self.vec.index_select(0, idx))


@dataclass
class PaddleState:
    """The decoder GRU's state h (B, H)."""

    h: Tensor

    def index_select(self, idx: Tensor) -> PaddleState:
        return PaddleState(self.h.index_select(0, idx))


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """softmax over dim 1 of (B, T) scores among the real rows (Paddle's sequence_softmax); padding gets 0."""
    return torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=1).to(scores.dtype)


class PaddleETS(nn.Module):
    """PaddlePaddle's ETS network behind etspipe's step API; see the module docstring for the equations."""

    def __init__(self, cfg_model: dict | PaddleETSConfig, feat_dim: int, vocab_size: int):
        super().__init__()
        cfg = cfg_model if isinstance(cfg_model, PaddleETSConfig) else PaddleETSConfig.from_dict(cfg_model)
        self.cfg, self.feat_dim, self.vocab_size = cfg, feat_dim, vocab_size
        for name, shape in self.shapes(cfg, feat_dim, vocab_size).items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()
        # W6 (fc_6) cannot change any output (module docstring): its gradient is exactly zero, so it is
        # not trained (DDP would otherwise wait for a gradient that never comes); it loads and saves as is.
        self.state_w.requires_grad_(False)

    @staticmethod
    def shapes(cfg: PaddleETSConfig, feat_dim: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape in Paddle's layout; Paddle's dictionary has `vocab_size` - 1 words."""
        P, G, H, E, V = int(cfg.proj_dim), int(cfg.gru_dim), int(cfg.hidden_dim), int(cfg.embed_dim), vocab_size - 1
        return {"input_w": (feat_dim, P), "input_b": (P,),
                "fwd_in_w": (P, 3 * G), "fwd_gru_w": (G, 3 * G), "fwd_gru_b": (1, 3 * G),
                "bwd_in_w": (P, 3 * G), "bwd_gru_w": (G, 3 * G), "bwd_gru_b": (1, 3 * G),
                "pool_w": (2 * G, 1), "key_w": (2 * G, H), "boot_w": (2 * G, H),
                "embed": (V, E), "state_w": (H, H), "score_w": (H, 1),
                "word_in_w": (E, 3 * H), "context_in_w": (2 * G, 3 * H),
                "dec_gru_w": (H, 3 * H), "dec_gru_b": (1, 3 * H),
                "out_w": (H, V), "out_b": (V,)}

    def reset_parameters(self) -> None:
        """fluid's defaults: Xavier-uniform weights over (fan_in, fan_out) = (rows, columns), zero biases."""
        for name, p in self.named_parameters():
            if p.dim() == 1 or name.endswith("_b"):
                nn.init.zeros_(p)
            else:
                bound = (6.0 / (p.shape[0] + p.shape[1])) ** 0.5
                nn.init.uniform_(p, -bound, bound)

    def no_decay_names(self) -> tuple[str, ...]:
        """Parameters trained without L2 decay (the seed's recipe)."""
        return NO_DECAY

    # ---- the step API (used by greedy and beam search)

    def encoded_rows(self, feats: Tensor, feat_mask: Tensor) -> Tensor:
        """enc (B, T, 2G): the bidirectional GRU over the input layer's rows; padding rows are 0.

        The real rows of a segment come first (the mask is a prefix), as the collate and
        `decode.pad_rows` make them.
        """
        lengths = feat_mask.sum(1)
        B, T, _ = feats.shape
        G = self.fwd_gru_w.shape[0]
        w_in = torch.cat([self.fwd_in_w, self.bwd_in_w], dim=1)  # both directions' projections: one product
        if bool(feat_mask.all()):
            g = torch.tanh(feats @ self.input_w + self.input_b) @ w_in
        else:  # the input layer and projections on the real rows only (padding was a third of a batch's rows)
            proj = torch.tanh(feats[feat_mask] @ self.input_w + self.input_b) @ w_in
            g = proj.new_zeros(B, T, 6 * G).index_put((feat_mask,), proj)
        fwd, bwd = gru_sequences([g[..., : 3 * G], g[..., 3 * G:]], lengths, [self.fwd_gru_w, self.bwd_gru_w],
                                 [self.fwd_gru_b, self.bwd_gru_b], [False, True])  # both directions stepped together
        return torch.cat([fwd, bwd], dim=-1)

    def encode(self, feats: Tensor, feat_mask: Tensor) -> PaddleMemory:
        feat_mask = feat_mask.bool()
        enc = self.encoded_rows(feats, feat_mask)
        pool = masked_softmax((enc @ self.pool_w).squeeze(-1), feat_mask)
        vec = torch.bmm(pool.unsqueeze(1), enc).squeeze(1)
        proj = enc @ self.key_w
        attn = masked_softmax((proj @ self.score_w).squeeze(-1), feat_mask)  # + (h W6) . w7 cancels (docstring)
        context = torch.bmm(attn.unsqueeze(1), enc).squeeze(1)
        return PaddleMemory(attn, context @ self.context_in_w, feat_mask, vec)

    def init_state(self, memory: PaddleMemory) -> PaddleState:
        return PaddleState(torch.tanh(memory.vec @ self.boot_w))

    def _word_inputs(self, tokens: Tensor) -> Tensor:
        """E[y] W8a for etspipe ids (Paddle id = id - 1; <pad> reads row 0, and its output is never used)."""
        return F.embedding((tokens - 1).clamp(min=0), self.embed) @ self.word_in_w

    def _log_probs(self, h: Tensor) -> Tensor:
        """log p over etspipe's ids: Paddle's softmax over its words, with <pad> (id 0) at -inf."""
        log_p = torch.log_softmax((h @ self.out_w + self.out_b).float(), dim=-1)
        return F.pad(log_p, (1, 0), value=float("-inf"))

    def step(self, prev_tokens: Tensor, state: PaddleState, memory: PaddleMemory
             ) -> tuple[Tensor, PaddleState, Tensor]:
        """One word for B*G hypotheses of a B-entry memory: log-probs (B*G, V), the new state, a (B*G, T)."""
        G = prev_tokens.shape[0] // max(memory.mask.shape[0], 1)
        context_in, attn = memory.context_in, memory.attn
        if G > 1:
            context_in, attn = context_in.repeat_interleave(G, 0), attn.repeat_interleave(G, 0)
        w_ur, w_c = split_weight(self.dec_gru_w)
        h = gru_cell(self._word_inputs(prev_tokens) + context_in, state.h, w_ur, w_c, self.dec_gru_b.reshape(-1))
        return self._log_probs(h), PaddleState(h), attn

    @staticmethod
    def reorder(obj: PaddleMemory | PaddleState, idx: Tensor) -> PaddleMemory | PaddleState:
        return obj.index_select(idx)

    # ---- teacher forcing

    def _teacher_forced(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder states (B, L-1, H) for inputs tokens[:, :-1], the targets' mask and the attention (B, T)."""
        memory = self.encode(feats, feat_mask)
        h0 = self.init_state(memory).h
        inputs = self._word_inputs(tokens[:, :-1]) + memory.context_in.unsqueeze(1)  # all steps at once
        real = tokens[:, 1:] != PAD
        states = gru_sequence(inputs, real.sum(1), self.dec_gru_w, self.dec_gru_b, h0=h0)
        return states, real, memory.attn

    def forward(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: log-probabilities (B, L-1, V) for tokens[:, 1:] and attention (B, L-1, T).

        Positions after a caption's ``<e>`` hold zeros.
        """
        states, real, attn = self._teacher_forced(feats, feat_mask.bool(), tokens)
        out = self._log_probs(states).masked_fill(~real.unsqueeze(-1), 0.0)
        attn_all = attn.unsqueeze(1) * real.unsqueeze(-1).to(attn.dtype)
        return out, attn_all

    def loss(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, int]:
        """(loss, mean token cross-entropy, number of target tokens): the seed's mean cross-entropy."""
        states, real, _ = self._teacher_forced(feats, feat_mask.bool(), tokens)
        logits = states[real] @ self.out_w + self.out_b
        targets = tokens[:, 1:][real] - 1
        nll = F.cross_entropy(logits.float(), targets)
        return nll, nll.detach(), int(targets.numel())
