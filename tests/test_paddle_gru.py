"""Paddle's GRU (caption_model.paddle_gru): the recurrence and its hand-written backward through time."""

from __future__ import annotations

import pytest
import torch

from caption_model.paddle_gru import gru_cell, gru_sequence, split_weight


def _loop(g: torch.Tensor, lengths: list[int], w, b, reverse: bool, h0=None) -> torch.Tensor:
    """The plain reading: one sequence at a time, cell by cell, autograd everywhere."""
    B, T, _ = g.shape
    D = w.shape[0]
    w_ur, w_c = split_weight(w)
    out = g.new_zeros(B, T, D)
    rows = []
    for i in range(B):
        h = g.new_zeros(1, D) if h0 is None else h0[i: i + 1]
        n = lengths[i]
        states = [None] * T
        for t in (range(n - 1, -1, -1) if reverse else range(n)):
            h = gru_cell(g[i: i + 1, t], h, w_ur, w_c, b.reshape(-1))
            states[t] = h[0]
        rows.append(torch.stack([s if s is not None else g.new_zeros(D) for s in states]))
    out = torch.stack(rows)
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_recurrence_and_its_gradients_equal_the_cell_by_cell_loop(reverse: bool, with_h0: bool) -> None:
    """Catches a wrong backward through time (any gate's term), a reverse pass that starts at the padded
    end instead of each sequence's own end, and rows mixed up by the longest-first sort."""
    torch.manual_seed(0)
    B, T, D = 4, 6, 5
    lengths = [3, 6, 1, 4]  # unsorted on purpose
    g = torch.randn(B, T, 3 * D, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(D, 3 * D, dtype=torch.float64) * 0.5).requires_grad_()
    b = (torch.randn(1, 3 * D, dtype=torch.float64) * 0.5).requires_grad_()
    h0 = torch.randn(B, D, dtype=torch.float64, requires_grad=True) if with_h0 else None
    target = torch.randn(B, T, D, dtype=torch.float64)

    fast = gru_sequence(g, torch.tensor(lengths), w, b, reverse=reverse, h0=h0)
    slow = _loop(g, lengths, w, b, reverse, h0)
    assert torch.allclose(fast, slow, atol=1e-12)
    inputs = [g, w, b] + ([h0] if with_h0 else [])
    grads_fast = torch.autograd.grad((fast * target).sum(), inputs)
    grads_slow = torch.autograd.grad((slow * target).sum(), inputs)
    for got, want in zip(grads_fast, grads_slow, strict=True):
        assert torch.allclose(got, want, atol=1e-10)
    for i, n in enumerate(lengths):  # padding rows stay zero and get no gradient
        assert not fast[i, n:].any() and not grads_fast[0][i, n:].any()


def test_weight_buffer_is_read_as_two_row_major_blocks() -> None:
    """Catches the column-sliced reading w[:, :2D] / w[:, 2D:] of Paddle's [D, 3D] weight (SEED.md)."""
    D = 3
    w = torch.arange(D * 3 * D, dtype=torch.float32).view(D, 3 * D)
    w_ur, w_c = split_weight(w)
    assert w_ur.tolist() == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    assert w_c.tolist() == [[18, 19, 20], [21, 22, 23], [24, 25, 26]]
    assert not torch.equal(w_ur, w[:, : 2 * D])


def test_reset_gate_multiplies_the_state_before_the_product() -> None:
    """Catches torch.nn.GRU's candidate (reset after the product): c = tanh(g_c + b_c + (r * h) W_c)."""
    torch.manual_seed(1)
    D = 4
    g, h = torch.randn(2, 3 * D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    w, b = torch.randn(D, 3 * D, dtype=torch.float64), torch.randn(3 * D, dtype=torch.float64)
    w_ur, w_c = split_weight(w)
    ur = torch.sigmoid(g[:, : 2 * D] + b[: 2 * D] + h @ w_ur)
    u, r = ur[:, :D], ur[:, D:]
    before = torch.tanh(g[:, 2 * D:] + b[2 * D:] + (r * h) @ w_c)
    after = torch.tanh(g[:, 2 * D:] + b[2 * D:] + r * (h @ w_c))
    got = gru_cell(g, h, w_ur, w_c, b)
    assert torch.allclose(got, (1 - u) * h + u * before, atol=1e-12)
    assert (got - ((1 - u) * h + u * after)).abs().max() > 1e-3
