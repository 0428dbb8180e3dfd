"""The ETS captioner (Yao et al., ICCV 2015): temporal attention over feature rows + LSTM decoder.

The names follow the equations of docs/ARCHITECTURE.md, one block per line of maths:

    v_i      = tanh(P x_i + p)                     encoder (optionally a BiLSTM over the v_i)
    h_0, c_0 = tanh(W_h0 mean(v)), tanh(W_c0 mean(v))
    e_ti     = w^T tanh(W h_{t-1} + U v_i + b)     attn_scores (depends on h_prev at every word)
    a_t      = masked_softmax(e_t)                 attn (padding rows get exactly 0)
    phi_t    = sum_i a_ti v_i                      context
    h_t, c_t = LSTM([E y_{t-1}; phi_t], (h_{t-1}, c_{t-1}))
    o_t      = tanh(L [h_t; phi_t; E y_{t-1}])     deep output layer
    p(y_t)   = softmax(L_o o_t)

`attention: mean` replaces a_t with the uniform weights over the valid rows at
every step (the no-attention baseline). The decoder is the sequential part, so
it is written for speed on a CPU without changing the maths: ``U v_i + b`` is
computed once per video (:meth:`ETS.encode`), the word part of the LSTM input is
one matrix product for all steps, the batch is processed longest caption first
and shrinks as captions end, and the output layers run once over all real
tokens after the loop (they do not feed back).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caption_model.formats.text import PAD


@dataclass
class ETSConfig:
    """The `model` section of the config (the keys of configs/ets.yaml, its one copy of the defaults)."""

    encoder: str
    attention: str
    proj_dim: int
    embed_dim: int
    hidden_dim: int
    attn_dim: int
    dropout: float
    doubly_stochastic: float

    @classmethod
    def from_dict(cls, d: dict) -> ETSConfig:
        """Keys `d` leaves out (a checkpoint older than the key, a partial dict) take their configs/ets.yaml value."""
        from etspipe.config import reference_config

        names = {f.name for f in fields(cls)}
        values = {**reference_config()["model"], **d}
        cfg = cls(**{k: v for k, v in values.items() if k in names})
        if cfg.encoder not in ("linear", "bilstm"):
            raise ValueError(f"model.encoder must be linear or bilstm, got {cfg.encoder!r}")
        if cfg.attention not in ("temporal", "mean"):
            raise ValueError(f"model.attention must be temporal or mean, got {cfg.attention!r}")
        if cfg.encoder == "bilstm" and cfg.proj_dim % 2:
            raise ValueError("model.proj_dim must be even with the bilstm encoder")
        return cfg


@dataclass
class Memory:
    """What the decoder reads at every step: encoded rows, their attention keys, the mask."""

    rows: Tensor  # v_i (B, T, P)
    keys: Tensor  # U v_i + b (B, T, A), computed once per video
    mask: Tensor  # (B, T) bool, True for real rows
    mean: Tensor  # masked mean of v (B, P)
    exp_keys: Tensor | None = None  # exp(2 keys), made by caption_model.compiled_attention when it decodes
    exp_checked: bool = False  # whether exp_keys was tried (None then means the keys are too large for it)

    def index_select(self, idx: Tensor) -> Memory:
        return Memory(self.rows.index_select(0, idx), self.keys.index_select(0, idx),
                      self.mask.index_select(0, idx), self.mean.index_select(0, idx))


@dataclass
class State:
    """Decoder LSTM state (h, c), each (B, H)."""

    h: Tensor
    c: Tensor

    def index_select(self, idx: Tensor) -> State:
        return State(self.h.index_select(0, idx), self.c.index_select(0, idx))


class Dropout(nn.Dropout):
    """Inverted dropout with the mask drawn as uniform numbers compared with p.

    Same distribution as `nn.Dropout` (keep with probability 1 - p, scale by 1 / (1 - p)); on the CPU
    `nn.Dropout`'s Bernoulli sampler took 8 % of a training step at reference sizes and this mask about
    half of that (docs/PERFORMANCE.md). The mask is drawn in float32 also under autocast, so p keeps its
    resolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        return x * self.scaled_mask(x).to(x.dtype)

    def scaled_mask(self, x: Tensor) -> Tensor:
        """The float32 mask (0 or 1 / (1 - p)) that training multiplies `x` by."""
        return torch.rand(x.shape, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def masked(self, x: Tensor, rows: Tensor) -> Tensor:
        """``dropout(x) * rows`` for rows (B, T) of x (B, T, D): one product over x instead of two.

        The padding rows' zeros go into the dropout mask (in place, on a tensor that has no gradient),
        so the largest tensor of a training step is multiplied, stored and back-propagated once.
        """
        keep = rows.unsqueeze(-1).to(x.dtype)
        if self.training and 0.0 < self.p < 1.0:
            keep = self.scaled_mask(x).mul_(keep).to(x.dtype)
        elif self.training and self.p >= 1.0:
            keep = keep * 0.0
        return x * keep


class _BatchPrefixes(torch.autograd.Function):
    """``x[:n]`` for several n at once, with one gradient buffer.

    Teacher forcing reads the encoded rows and their attention keys of the first n captions at every
    word (the batch shrinks as captions end). With plain slicing, autograd makes a zero-filled
    full-size gradient for every word's slice and adds them up: ~11 % of a training step at reference
    sizes (docs/PERFORMANCE.md). Here the slices of all words share one buffer that each word's
    gradient is added into in place, over its own n rows only.
    """

    @staticmethod
    def forward(ctx, x: Tensor, *sizes: int) -> tuple[Tensor, ...]:
        ctx.shape, ctx.sizes = x.shape, sizes
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        total = None
        for n, grad in zip(ctx.sizes, grads, strict=True):
            if grad is None:
                continue
            if total is None:
                total = grad.new_zeros(ctx.shape)
            total[:n] += grad
        return (total, *([None] * len(ctx.sizes)))


def batch_prefixes(x: Tensor, sizes: list[int]) -> dict[int, Tensor]:
    """``{n: x[:n]}`` for the given sizes, sharing one gradient buffer (see `_BatchPrefixes`)."""
    if not sizes:
        return {}
    if not x.requires_grad:
        return {n: x[:n] for n in sizes}
    return dict(zip(sizes, _BatchPrefixes.apply(x, *sizes), strict=True))


class ContextGradients:
    """phi_t = sum_i a_ti v_i for every word, with the gradient of v taken once after all words.

    Per word, autograd's gradient of ``bmm(a_t, v)`` with respect to v is an outer product as large as
    the encoded rows (B, T, P), written and then added into v's gradient (a step at ActivityNet sizes
    was 6-8 % faster without it on a 2-core CPU, docs/PERFORMANCE.md). That gradient is linear in the words,
    ``dv = sum_t a_t^T dphi_t``, so here each word's backward only keeps its (a_t, dphi_t) and the sum is
    one batched matrix product over all words when autograd reaches v. A 0-d token ties the words to v,
    so autograd runs that product after the last word's backward. On small batches (the demo's
    32 x 64 x 128 rows) autograd's own per-word gradient is cheaper than these Python-level nodes
    (+12 % a step measured), so teacher forcing uses this from `MIN_ELEMENTS` encoded values on.
    """

    MIN_ELEMENTS = 1 << 20  # 4 MB of float32 rows; ActivityNet batches hold ~4.4 M

    def __init__(self, rows: Tensor):
        self.rows = rows.detach()
        self.kept: list[tuple[Tensor, Tensor]] = []
        self.token = _RowsFromWords.apply(rows, self)

    def context(self, attn: Tensor) -> Tensor:
        """phi (n, P) for the first n captions, n = len(attn)."""
        return _WordContext.apply(attn, self.token, self)


class _RowsFromWords(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, hub: ContextGradients) -> Tensor:
        ctx.hub, ctx.shape = hub, rows.shape
        return rows.new_zeros(())

    @staticmethod
    def backward(ctx, _token_grad: Tensor) -> tuple[Tensor | None, None]:
        kept, ctx.hub.kept = ctx.hub.kept, []
        if not kept:
            return None, None
        B, T, P = ctx.shape
        rows = ctx.hub.rows
        attn = rows.new_zeros(B, T, len(kept))  # a_t as columns: (B, T, L) @ (B, L, P) reads both in order
        grads = rows.new_zeros(B, len(kept), P)
        for j, (a, g) in enumerate(kept):
            attn[: len(a), :, j] = a
            grads[: len(g), j] = g
        return torch.bmm(attn, grads), None


class _WordContext(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn: Tensor, token: Tensor, hub: ContextGradients) -> Tensor:
        rows = hub.rows[: len(attn)]
        ctx.save_for_backward(attn)
        ctx.hub = hub
        return torch.bmm(attn.unsqueeze(1), rows.to(attn.dtype)).squeeze(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        (attn,) = ctx.saved_tensors
        rows = ctx.hub.rows[: len(attn)]
        ctx.hub.kept.append((attn, grad.to(rows.dtype)))
        grad_attn = torch.bmm(grad.unsqueeze(1), rows.to(grad.dtype).transpose(1, 2)).squeeze(1)  # 2x (n, P, 1)
        return grad_attn, grad.new_zeros(()), None


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of `x` (B, T, D) counting only the rows where `mask` (B, T) is True."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class Encoder(nn.Module):
    """v_i = dropout(tanh(P x_i + p)), then optionally a bidirectional LSTM over the rows."""

    def __init__(self, feat_dim: int, cfg: ETSConfig):
        super().__init__()
        self.proj = nn.Linear(feat_dim, cfg.proj_dim)
        self.dropout = Dropout(cfg.dropout)
        self.bilstm = None
        if cfg.encoder == "bilstm":
            self.bilstm = nn.LSTM(cfg.proj_dim, cfg.proj_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, feats: Tensor, feat_mask: Tensor) -> Tensor:
        v = torch.tanh(self.proj(feats))
        if self.bilstm is None and isinstance(self.dropout, Dropout):
            return self.dropout.masked(v, feat_mask)  # padding rows are exactly zero
        v = self.dropout(v)  # (benchmarks/bench_step.py may swap in nn.Dropout)
        if self.bilstm is not None:
            lengths = feat_mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(v, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.bilstm(packed)
            v, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return v * feat_mask.unsqueeze(-1).to(v.dtype)  # padding rows are exactly zero


class _Scores(torch.autograd.Function):
    """e = tanh(W h + U v + b) . w for one word (B, A), (B, T, A), (A,) -> (B, T), with a hand-made backward.

    Autograd's backward of the product with w (an ``nn.Linear`` to one unit) is a matrix product with
    an inner size of 1 that the CPU's BLAS runs slowly, then ``tanh``'s backward over its result: here
    the gradient through tanh is one pass over the saved tanh (its incoming gradient broadcast, never
    materialised) and w's gradient a matrix-vector product: 3.6 -> 2.3 ms a word at 64 x 134 x 256 on
    the 2-core CPU (docs/PERFORMANCE.md). Below `MIN_ELEMENTS` keys (the demo's batches) the Python-level
    node costs more than it saves, and autograd's own backward is used.
    """

    MIN_ELEMENTS = 1 << 18

    @staticmethod
    def forward(ctx, wh: Tensor, keys: Tensor, w: Tensor) -> Tensor:
        s = torch.tanh_(wh.unsqueeze(1) + keys)
        ctx.save_for_backward(s, w)
        return s @ w.to(s.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, w = ctx.saved_tensors
        grad = grad.to(s.dtype)
        grad_w = torch.mv(s.reshape(-1, s.shape[-1]).t(), grad.reshape(-1)).to(w.dtype)
        pre = torch.ops.aten.tanh_backward(grad.unsqueeze(-1).expand_as(s), s)  # de/d(W h + U v + b) / w
        grad_wh = (pre.sum(1) * w).to(s.dtype)
        return grad_wh, pre.mul_(w.to(pre.dtype)), grad_w


class TemporalAttention(nn.Module):
    """e_i = w^T tanh(W h_prev + U v_i + b); a = masked softmax(e); phi = sum_i a_i v_i."""

    def __init__(self, cfg: ETSConfig):
        super().__init__()
        self.W = nn.Linear(cfg.hidden_dim, cfg.attn_dim, bias=False)
        self.U = nn.Linear(cfg.proj_dim, cfg.attn_dim)  # its bias is b
        self.w = nn.Linear(cfg.attn_dim, 1, bias=False)
        self.fused_scores = None  # set by caption_model.compiled_attention for long decoding runs

    def keys(self, rows: Tensor) -> Tensor:
        """U v_i + b for all rows, once per video (it does not depend on the step)."""
        return self.U(rows)

    def weights(self, h_prev: Tensor, memory: Memory) -> Tensor:
        """a_t (B*G, T): the masked softmax of the scores e_t, for G hypotheses per memory entry.

        Beam search gives each segment's G hypotheses (consecutive rows of `h_prev`) the segment's one
        memory instead of G copies of it: the keys and rows are read once per segment, not per beam.
        """
        B, T = memory.mask.shape
        G = h_prev.shape[0] // max(B, 1)
        wh = self.W(h_prev)
        attn_scores = None
        if self.fused_scores is not None and not torch.is_grad_enabled():
            attn_scores = self.fused_scores(wh, memory, self.w.weight[0])  # (B*G, T); None: keys too large for it
        if attn_scores is None:
            if torch.is_grad_enabled() and G == 1 and memory.keys.numel() >= _Scores.MIN_ELEMENTS:
                attn_scores = _Scores.apply(wh, memory.keys, self.w.weight[0])
            else:  # tanh in place on the sum's fresh (B, G, T, A) buffer: the largest tensor of a word
                pre = wh.view(B, G, 1, -1) + memory.keys.unsqueeze(1)
                attn_scores = (torch.tanh_(pre) @ self.w.weight[0].to(pre.dtype)).view(B * G, T)
        attn_scores = attn_scores.float().view(B, G, T).masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        return torch.softmax(attn_scores, dim=-1).to(memory.rows.dtype).view(B * G, T)  # padding rows: 0

    def forward(self, h_prev: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        attn = self.weights(h_prev, memory)
        B, T = memory.mask.shape
        context = torch.bmm(attn.view(B, -1, T), memory.rows).view(attn.shape[0], -1)  # phi_t (B*G, P)
        return context, attn


class MeanAttention(nn.Module):
    """The no-attention baseline: phi_t = mean of the valid rows at every step."""

    def keys(self, rows: Tensor) -> Tensor:
        return rows.new_zeros(rows.shape[0], rows.shape[1], 0)

    def forward(self, h_prev: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        m = memory.mask.to(memory.rows.dtype)
        attn = m / m.sum(1, keepdim=True).clamp(min=1.0)
        G = h_prev.shape[0] // max(m.shape[0], 1)  # hypotheses per memory entry (beam search)
        if G > 1:
            return memory.mean.repeat_interleave(G, 0), attn.repeat_interleave(G, 0)
        return memory.mean, attn


class ETS(nn.Module):
    """Temporal-attention LSTM captioner; see the module docstring for the equations."""

    def __init__(self, cfg_model: dict | ETSConfig, feat_dim: int, vocab_size: int):
        super().__init__()
        cfg = cfg_model if isinstance(cfg_model, ETSConfig) else ETSConfig.from_dict(cfg_model)
        self.cfg, self.feat_dim, self.vocab_size = cfg, feat_dim, vocab_size
        self.encoder = Encoder(feat_dim, cfg)
        self.attention = TemporalAttention(cfg) if cfg.attention == "temporal" else MeanAttention()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.init_h = nn.Linear(cfg.proj_dim, cfg.hidden_dim)
        self.init_c = nn.Linear(cfg.proj_dim, cfg.hidden_dim)
        self.lstm = nn.LSTMCell(cfg.embed_dim + cfg.proj_dim, cfg.hidden_dim)
        self.deep_out = nn.Linear(cfg.hidden_dim + cfg.proj_dim + cfg.embed_dim, cfg.embed_dim)
        self.logits = nn.Linear(cfg.embed_dim, vocab_size)
        self.dropout = Dropout(cfg.dropout)

    # ---- the step API (used by greedy and beam search) ----

    def encode(self, feats: Tensor, feat_mask: Tensor) -> Memory:
        """Encode the rows once per video: v, U v + b, the mask and mean(v)."""
        feat_mask = feat_mask.bool()
        rows = self.encoder(feats, feat_mask)
        return Memory(rows, self.attention.keys(rows), feat_mask, masked_mean(rows, feat_mask))

    def init_state(self, memory: Memory) -> State:
        """h_0, c_0 from the mean of the encoded rows."""
        return State(torch.tanh(self.init_h(memory.mean)), torch.tanh(self.init_c(memory.mean)))

    def step(self, prev_tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, Tensor]:
        """One word: log p(y_t | y_<t, video) (B, V), the new state and the attention a_t (B, T)."""
        emb = self.dropout(self.embed(prev_tokens))  # E y_{t-1}
        context, attn = self.attention(state.h, memory)  # phi_t, a_t from h_{t-1}
        h, c = self.lstm(torch.cat([emb, context], dim=-1), (state.h, state.c))
        out = self._output(h, context, emb)
        return torch.log_softmax(out.float(), dim=-1), State(h, c), attn

    @staticmethod
    def reorder(obj: Memory | State, idx: Tensor) -> Memory | State:
        """Select / repeat batch entries of a memory or state (beam search)."""
        return obj.index_select(idx)

    def _output(self, h: Tensor, context: Tensor, emb: Tensor) -> Tensor:
        """Deep output: logits = L_o dropout(tanh(L [h_t; phi_t; E y_{t-1}]))."""
        o = self.dropout(torch.tanh(self.deep_out(torch.cat([h, context, emb], dim=-1))))
        return self.logits(o)

    # ---- teacher forcing ----

    def _teacher_forced(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor):
        """Run the decoder over `tokens` (B, L) with teacher forcing, without computing on padding.

        Returns the deep-output inputs of all real target positions, packed
        time-major (as ``PackedSequence`` orders them), their targets, the
        attention (B, L-1, T) and the batch order used.
        """
        # Target words per caption (incl. <e>), copied to the host ONCE: the loop's shrinking batch sizes
        # come from it, so no step waits for the device (on CUDA, a sync per word otherwise).
        lengths = (tokens[:, 1:] != PAD).sum(1).cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        identity = bool((order == torch.arange(len(order))).all())
        order = order.to(tokens.device)
        if not identity:
            feats, feat_mask, tokens, lengths = feats[order], feat_mask[order], tokens[order], lengths[order.cpu()]
        memory = self.encode(feats, feat_mask)
        state = self.init_state(memory)
        h, c = state.h, state.c
        emb = self.dropout(self.embed(tokens[:, :-1]))  # E y_{t-1} for every step (B, L-1, E)
        E = emb.shape[-1]
        # LSTM gates = W_e E y + W_phi phi + W_hh h + biases: the word part for all steps at once.
        w_ih = self.lstm.weight_ih
        gates_emb = F.linear(emb, w_ih[:, :E], self.lstm.bias_ih + self.lstm.bias_hh)
        w_rec = torch.cat([w_ih[:, E:], self.lstm.weight_hh], dim=1).t()  # acts on [phi; h]
        if torch.is_autocast_enabled(feats.device.type):  # cast once, not at every step (it is not a leaf)
            w_rec = w_rec.to(torch.get_autocast_dtype(feats.device.type))
        # Time-major views: per-step slices of these then cost one small gradient each, not a full-size one.
        gates_emb_t, emb_t = gates_emb.transpose(0, 1).unbind(0), emb.transpose(0, 1).unbind(0)
        steps = int(lengths.max()) if len(lengths) else 0
        active = (lengths[None, :] > torch.arange(steps)[:, None]).sum(1).tolist()  # batch shrinks as captions end
        B, T = feat_mask.shape
        sizes = sorted({n for n in active if n < B})
        hub = None
        if (isinstance(self.attention, TemporalAttention) and torch.is_grad_enabled() and memory.rows.requires_grad
                and memory.rows.numel() >= ContextGradients.MIN_ELEMENTS):
            hub = ContextGradients(memory.rows)  # v's gradient from the contexts: one product after all words
            rows_n = {n: hub.rows[:n] for n in sizes}
        else:
            rows_n = batch_prefixes(memory.rows, sizes)
        keys_n = batch_prefixes(memory.keys, sizes)
        hs, contexts, embs, attns = [], [], [], []
        for t in range(steps):
            n = active[t]
            h_prev, c_prev = h[:n], c[:n]
            mem_t = memory if n == B else Memory(rows_n[n], keys_n[n], memory.mask[:n], memory.mean[:n])
            if hub is None:
                context, attn = self.attention(h_prev, mem_t)
            else:
                attn = self.attention.weights(h_prev, mem_t)
                context = hub.context(attn)
            gates = torch.addmm(gates_emb_t[t][:n], torch.cat([context, h_prev], dim=-1), w_rec).float()
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)  # c kept in fp32 under autocast
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            contexts.append(context)
            embs.append(emb_t[t][:n])
            attns.append(F.pad(attn, (0, 0, 0, B - n)))  # padding rows: zero weight
        targets = torch.cat([tokens[: active[t], t + 1] for t in range(steps)]) if steps else tokens.new_zeros(0)
        packed = (torch.cat(hs), torch.cat(contexts), torch.cat(embs)) if steps else None
        attn_all = feats.new_zeros(B, max(tokens.shape[1] - 1, 0), T)
        if steps:
            attn_all = torch.cat([torch.stack(attns, 1), attn_all[:, steps:]], 1) if steps < attn_all.shape[1] \
                else torch.stack(attns, 1)
        return packed, targets, attn_all, active, order, identity

    def forward(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: logits (B, L-1, V) for tokens[:, 1:] and attention (B, L-1, T).

        Positions after a caption's ``<e>`` hold zero logits and zero attention.
        """
        packed, _, attn, active, order, identity = self._teacher_forced(feats, feat_mask, tokens)
        B, L = tokens.shape
        logits = attn.new_zeros(B, max(L - 1, 0), self.vocab_size)
        if packed is not None:
            out = self._output(*packed)
            pos = 0
            for t, n in enumerate(active):
                logits[:n, t] = out[pos: pos + n].to(logits.dtype)
                pos += n
        if not identity:
            inverse = torch.argsort(order)
            logits, attn = logits[inverse], attn[inverse]
        return logits, attn

    def loss(self, feats: Tensor, feat_mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, int]:
        """Training objective: (loss, mean token cross-entropy, number of target tokens).

        The cross-entropy is over real target tokens only (padding never enters
        the output layer); `loss` adds the doubly stochastic attention term
        ``lambda * mean_b sum_i (1 - sum_t a_ti)^2`` when it is switched on.
        """
        packed, targets, attn, _, order, _ = self._teacher_forced(feats, feat_mask, tokens)
        out = self._output(*packed)
        nll = F.cross_entropy(out.float(), targets)
        loss = nll
        lam = self.cfg.doubly_stochastic
        if lam > 0 and self.cfg.attention == "temporal":
            mask = feat_mask.bool()[order]  # attn is in the decoder's (sorted) batch order
            coverage = attn.float().sum(1)  # sum_t a_ti (B, T)
            loss = loss + lam * (((1.0 - coverage) ** 2) * mask).sum(1).mean()
        return loss, nll.detach(), int(targets.numel())
