"""The GRU of PaddlePaddle's `gru` / `gru_unit` kernels, which the seed's network (caption_model.paddle_ets) uses.

Paddle's GRU is not `torch.nn.GRU`'s cell, and no reshuffling of weights turns one into the other:

    [u | r] = sigmoid(g[:2D] + b[:2D] + h W_ur)          update and reset gates
    c       = tanh(g[2D:] + b[2D:] + (r * h) W_c)         reset multiplies h BEFORE the product
    h'      = (1 - u) * h + u * c

(torch applies the reset after the product: ``r * (h W_hn + b_hn)``). `g` is the input's projection
(computed outside, for all steps at once), the bias adds to all three pre-activations, and the weight
is one ``[D, 3D]`` buffer that Paddle reads as a row-major ``[D, 2D]`` block (update | reset) followed
by a row-major ``[D, D]`` block (candidate): :func:`split_weight`. Reading it as column slices of a
``[D, 3D]`` matrix (the obvious reading) is off by ~1 at the outputs (../shared/SEED.md; the parity
tests use Paddle's own kernels' outputs).

:func:`gru_sequence` runs the recurrence over padded, variable-length sequences, forwards or from each
sequence's own end (Paddle's `is_reverse`), with the batch shrinking as sequences end, so no step
computes on padding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def split_weight(w: Tensor) -> tuple[Tensor, Tensor]:
    """(W_ur [D, 2D], W_c [D, D]) from Paddle's GRU weight buffer [D, 3D], read as its kernels read it."""
    D = w.shape[0]
    flat = w.reshape(-1)
    return flat[: 2 * D * D].view(D, 2 * D), flat[2 * D * D:].view(D, D)


def gru_cell(g: Tensor, h: Tensor, w_ur: Tensor, w_c: Tensor, b: Tensor) -> Tensor:
    """One step h -> h' for input projections g (B, 3D), state h (B, D), bias b (3D,)."""
    D = h.shape[-1]
    ur = torch.sigmoid(torch.addmm(g[:, : 2 * D] + b[: 2 * D], h, w_ur))
    u, r = ur[:, :D], ur[:, D:]
    c = torch.tanh(torch.addmm(g[:, 2 * D:] + b[2 * D:], r * h, w_c))
    return h + u * (c - h)  # (1 - u) * h + u * c, one product fewer


def reverse_index(lengths: Tensor, T: int) -> Tensor:
    """(B, T) index that reverses each row's first lengths[b] positions and keeps its padding in place."""
    t = torch.arange(T, device=lengths.device)
    n = lengths.to(t.device)[:, None]
    return torch.where(t[None, :] < n, n - 1 - t[None, :], t[None, :])


def gru_sequence(g: Tensor, lengths: Tensor, w: Tensor, b: Tensor, reverse: bool = False,
                 h0: Tensor | None = None) -> Tensor:
    """Hidden states (B, T, D) of Paddle's GRU over g (B, T, 3D) from `h0` (zeros if None); padding rows are 0.

    `lengths` (B,) counts each sequence's real rows, which come first. With `reverse` each sequence
    runs from its own last real row to its first (Paddle's ``is_reverse``), and its outputs stay at
    their rows' positions.
    """
    B, T, _ = g.shape
    D = w.shape[0]
    lengths = lengths.to("cpu", torch.long)
    if reverse:
        idx = reverse_index(lengths, T).to(g.device)
        g = g.gather(1, idx[:, :, None].expand(B, T, g.shape[-1]))
    order = torch.argsort(lengths, descending=True, stable=True)
    identity = bool((order == torch.arange(B)).all())
    if not identity:
        g = g[order.to(g.device)]
        h0 = None if h0 is None else h0[order.to(h0.device)]
    sorted_len = lengths[order]
    steps = min(int(sorted_len[0]) if B else 0, T)
    active = (sorted_len[None, :] > torch.arange(steps)[:, None]).sum(1).tolist()
    h0 = g.new_zeros(B, D) if h0 is None else h0
    out = _Recurrence.apply(g.transpose(0, 1)[:steps], w, b.reshape(-1), h0, active).transpose(0, 1)
    if steps < T:
        out = torch.cat([out, out.new_zeros(B, T - steps, D)], 1)
    if not identity:
        out = out[torch.argsort(order).to(out.device)]
    if reverse:
        out = out.gather(1, idx[:, :, None].expand(B, T, D))  # the reversal is its own inverse
    return out


class _Recurrence(torch.autograd.Function):
    """The GRU over time-major inputs (steps, B, 3D) of sequences sorted longest first, with its
    backward through time written out.

    Autograd's backward of a Python loop over ``g[:n, t]`` made a zero-filled gradient the size of the
    whole input at every step (a training step of the seed's network at 64 x 180 rows took 16 s
    backward against 1.7 s forward). Here each step's backward is the two matrix products it needs
    for the state's gradient, written into one gradient buffer, and the weights' gradients are two
    products over all steps at the end. Row b is active at step t while t < active count.
    """

    @staticmethod
    def forward(ctx, g: Tensor, w: Tensor, b: Tensor, h0: Tensor, active: list[int]) -> Tensor:
        steps, B, _ = g.shape
        D = w.shape[0]
        w_ur, w_c = split_weight(w)
        H = g.new_zeros(steps, B, D)
        U, R, C, HP = (g.new_zeros(steps, B, D) for _ in range(4))
        h = h0
        for t, n in enumerate(active):
            hp = h[:n]
            ur = torch.sigmoid(torch.addmm(g[t, :n, : 2 * D] + b[: 2 * D], hp, w_ur))
            u, r = ur[:, :D], ur[:, D:]
            c = torch.tanh(torch.addmm(g[t, :n, 2 * D:] + b[2 * D:], r * hp, w_c))
            h = hp + u * (c - hp)
            H[t, :n], U[t, :n], R[t, :n], C[t, :n], HP[t, :n] = h, u, r, c, hp
        ctx.save_for_backward(w, U, R, C, HP)
        ctx.active, ctx.h0_rows = active, h0.shape[0]
        return H

    @staticmethod
    def backward(ctx, dH: Tensor):
        w, U, R, C, HP = ctx.saved_tensors
        active = ctx.active
        steps, B, D = U.shape
        w_ur, w_c = split_weight(w)
        dg = dH.new_zeros(steps, B, 3 * D)
        dh = dH.new_zeros(0, D)
        for t in range(steps - 1, -1, -1):
            n = active[t]
            dh_t = dH[t, :n].clone()
            dh_t[: dh.shape[0]] += dh
            u, r, c, hp = U[t, :n], R[t, :n], C[t, :n], HP[t, :n]
            dc_pre = dh_t * u * (1.0 - c * c)
            drh = dc_pre @ w_c.t()
            du_pre = dh_t * (c - hp) * u * (1.0 - u)
            dr_pre = drh * hp * r * (1.0 - r)
            dg[t, :n, :D], dg[t, :n, D: 2 * D], dg[t, :n, 2 * D:] = du_pre, dr_pre, dc_pre
            dh = torch.addmm(dh_t * (1.0 - u) + drh * r, dg[t, :n, : 2 * D], w_ur.t())
        dh0 = dH.new_zeros(ctx.h0_rows, D)
        dh0[: dh.shape[0]] = dh
        flat = dg.reshape(-1, 3 * D)
        dw_ur = HP.reshape(-1, D).t() @ flat[:, : 2 * D]
        dw_c = (R * HP).reshape(-1, D).t() @ flat[:, 2 * D:]
        dw = torch.cat([dw_ur.reshape(-1), dw_c.reshape(-1)]).view(D, 3 * D)
        return dg, dw, flat.sum(0), dh0, None
