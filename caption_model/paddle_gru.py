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
    w_ur, w_c = _blocks(w.unsqueeze(0))
    return w_ur[0], w_c[0]


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
    return gru_sequences([g], lengths, [w], [b], [reverse], None if h0 is None else [h0])[0]


def gru_sequences(gs: list[Tensor], lengths: Tensor, ws: list[Tensor], bs: list[Tensor], reverse: list[bool],
                  h0s: list[Tensor] | None = None) -> list[Tensor]:
    """Several independent GRUs over sequences of the same lengths (the encoder's two directions), stepped
    together: each step is one batched product for all of them, so the Python and kernel-launch cost of a
    step, which dominates at these sizes on a CPU, is paid once, not once per GRU."""
    K = len(gs)
    B, T, _ = gs[0].shape
    D = ws[0].shape[0]
    lengths = lengths.to("cpu", torch.long)
    idx = reverse_index(lengths, T).to(gs[0].device) if any(reverse) else None
    gs = [g.gather(1, idx[:, :, None].expand(B, T, g.shape[-1])) if rev else g for g, rev in zip(gs, reverse,
                                                                                                  strict=True)]
    order = torch.argsort(lengths, descending=True, stable=True)
    identity = bool((order == torch.arange(B)).all())
    g = torch.stack(gs)  # (K, B, T, 3D)
    h0 = g.new_zeros(K, B, D) if h0s is None else torch.stack(h0s)
    if not identity:
        g, h0 = g[:, order.to(g.device)], h0[:, order.to(h0.device)]
    sorted_len = lengths[order]
    steps = min(int(sorted_len[0]) if B else 0, T)
    active = (sorted_len[None, :] > torch.arange(steps)[:, None]).sum(1).tolist()
    gb = (g[:, :, :steps] + torch.stack([b.reshape(-1) for b in bs])[:, None, None]).transpose(1, 2)
    out = _Recurrence.apply(gb.contiguous(), torch.stack(ws), h0, active).transpose(1, 2)  # (K, B, steps, D)
    if steps < T:
        out = torch.cat([out, out.new_zeros(K, B, T - steps, D)], 2)
    if not identity:
        out = out[:, torch.argsort(order).to(out.device)]
    return [out[k].gather(1, idx[:, :, None].expand(B, T, D)) if rev else out[k]  # the reversal is its own inverse
            for k, rev in enumerate(reverse)]


def _blocks(w: Tensor) -> tuple[Tensor, Tensor]:
    """`split_weight` for a stack of K weights (K, D, 3D) -> (K, D, 2D), (K, D, D)."""
    K, D = w.shape[0], w.shape[1]
    flat = w.reshape(K, -1)
    return flat[:, : 2 * D * D].view(K, D, 2 * D), flat[:, 2 * D * D:].view(K, D, D)


class _Recurrence(torch.autograd.Function):
    """K GRUs over time-major inputs (K, steps, B, 3D), biases already added, of sequences sorted longest
    first, with the backward through time written out.

    Autograd's backward of a Python loop over ``g[:n, t]`` made a zero-filled gradient the size of the
    whole input at every step (a training step of the seed's network at 64 x 180 rows took 16 s
    backward against 1.7 s forward). Here each step's backward is the two batched products it needs
    for the state's gradient, written into one gradient buffer, and the weights' gradients are two
    products over all steps at the end. Row b is active at step t while b < active[t].
    """

    @staticmethod
    def forward(ctx, gb: Tensor, w: Tensor, h0: Tensor, active: list[int]) -> Tensor:
        K, steps, B, _ = gb.shape
        D = w.shape[1]
        w_ur, w_c = _blocks(w)
        H = gb.new_zeros(K, steps, B, D)
        UR = gb.new_zeros(K, steps, B, 2 * D)
        C = gb.new_zeros(K, steps, B, D)
        h = h0
        for t, n in enumerate(active):
            hp = h[:, :n]
            ur = torch.baddbmm(gb[:, t, :n, : 2 * D], hp, w_ur).sigmoid_()
            c = torch.baddbmm(gb[:, t, :n, 2 * D:], ur[..., D:] * hp, w_c).tanh_()
            h = torch.lerp(hp, c, ur[..., :D])  # (1 - u) * h + u * c
            H[:, t, :n], UR[:, t, :n], C[:, t, :n] = h, ur, c
        ctx.save_for_backward(w, h0, H, UR, C)
        ctx.active = active
        return H

    @staticmethod
    def backward(ctx, dH: Tensor):
        w, h0, H, UR, C = ctx.saved_tensors
        active = ctx.active
        K, steps, B, D = H.shape
        w_ur, w_c = _blocks(w)
        w_ur_t, w_c_t = w_ur.transpose(1, 2), w_c.transpose(1, 2)
        dgb = dH.new_zeros(K, steps, B, 3 * D)
        HP = torch.cat([h0[:, None], H[:, :-1]], 1)  # the state each step started from
        dh = dH.new_zeros(K, 0, D)
        for t in range(steps - 1, -1, -1):
            n = active[t]
            dh_t = dH[:, t, :n].clone()
            dh_t[:, : dh.shape[1]] += dh
            u, r, c, hp = UR[:, t, :n, :D], UR[:, t, :n, D:], C[:, t, :n], HP[:, t, :n]
            d = dgb[:, t, :n]
            torch.mul(dh_t * u, 1.0 - c * c, out=d[..., 2 * D:])  # candidate pre-activation
            drh = torch.bmm(d[..., 2 * D:], w_c_t)
            torch.mul(dh_t * (c - hp), u * (1.0 - u), out=d[..., :D])  # update gate pre-activation
            torch.mul(drh * hp, r * (1.0 - r), out=d[..., D: 2 * D])  # reset gate pre-activation
            dh = torch.baddbmm(dh_t * (1.0 - u) + drh * r, d[..., : 2 * D], w_ur_t)
        dh0 = dH.new_zeros(K, h0.shape[1], D)
        dh0[:, : dh.shape[1]] = dh
        flat = dgb.reshape(K, -1, 3 * D)
        dw_ur = torch.bmm(HP.reshape(K, -1, D).transpose(1, 2), flat[..., : 2 * D])
        dw_c = torch.bmm((UR[..., D:] * HP).reshape(K, -1, D).transpose(1, 2), flat[..., 2 * D:])
        dw = torch.cat([dw_ur.reshape(K, -1), dw_c.reshape(K, -1)], 1).view(K, D, 3 * D)
        return dgb, dw, dh0, None
