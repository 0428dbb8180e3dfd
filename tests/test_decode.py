"""Greedy and batched beam search: batched == one at a time, beam 1 == greedy, hand-checked beams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from caption_model.decode import beam_search, decode_segments, greedy, pad_rows
from caption_model.model import ETS
from caption_model.text import BOS, EOS


class TableModel:
    """A toy model with the step API whose next-word log-probs come from a fixed table.

    State = the previous token; log p(next | prev) = table[prev]. The memory is
    ignored except for the attention, which is uniform over valid rows.
    """

    training = False

    def __init__(self, table: np.ndarray):
        self.table = torch.log(torch.tensor(table, dtype=torch.float32))

    def encode(self, feats, mask):
        return mask

    def init_state(self, memory):
        return torch.full((memory.shape[0],), BOS, dtype=torch.long)

    def step(self, prev, state, memory):
        attn = memory.float() / memory.float().sum(1, keepdim=True)
        return self.table[prev], prev, attn

    @staticmethod
    def reorder(obj, idx):
        return obj.index_select(0, idx)


def _table() -> np.ndarray:
    # tokens: 0 pad, 1 <s>, 2 <e>, 3 a, 4 b
    t = np.full((5, 5), 1e-6)
    t[BOS] = [1e-6, 1e-6, 0.1, 0.5, 0.4]  # greedy picks a (0.5)
    t[3] = [1e-6, 1e-6, 0.3, 0.05, 0.65 - 2e-6]  # after a: b 0.65
    t[4] = [1e-6, 1e-6, 0.9, 0.05, 0.05 - 2e-6]  # after b: <e> 0.9
    t[EOS] = [1e-6, 1e-6, 0.2, 0.4, 0.4 - 2e-6]
    return t / t.sum(1, keepdims=True)


def test_greedy_and_beam_on_a_table_worked_by_hand():
    model = TableModel(_table())
    feats, mask = torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool)
    g = greedy(model, feats, mask, max_len=10, return_attn=True)[0]
    assert g.tokens == [3, 4] and g.ended
    tab = _table()
    assert g.score == pytest.approx(math.log(tab[BOS, 3]) + math.log(tab[3, 4]) + math.log(tab[4, EOS]), rel=1e-5)
    assert g.attn.shape == (3, 2) and np.allclose(g.attn, 0.5)
    # Beam 3: "b <e>" = 0.4*0.9 = 0.36 beats "a b <e>" = 0.5*0.65*0.9 = 0.2925 and "a <e>" = 0.15.
    b = beam_search(model, feats, mask, beam_size=3, max_len=10)[0]
    assert b.tokens == [4] and b.score == pytest.approx(math.log(0.4 * 0.9), rel=1e-4)
    # max_len cuts an unfinished caption; it is still returned, marked not ended.
    cut = greedy(model, feats, mask, max_len=1)[0]
    assert cut.tokens == [3] and not cut.ended


def test_length_normalisation_prefers_longer_captions():
    t = np.full((5, 5), 1e-6)
    t[BOS] = [1e-6, 1e-6, 0.45, 0.55, 1e-6]
    t[3] = [1e-6, 1e-6, 0.8, 0.2, 1e-6]
    t = t / t.sum(1, keepdims=True)
    model = TableModel(np.where(t > 0, t, 1e-6))
    feats, mask = torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool)
    # raw: "<e>" 0.45 > "a <e>" 0.44; per-token (alpha 1): log(0.45) vs log(0.44)/2 -> longer wins
    assert beam_search(model, feats, mask, 2, 10, length_norm=0.0)[0].tokens == []
    assert beam_search(model, feats, mask, 2, 10, length_norm=1.0)[0].tokens == [3]


@pytest.fixture(scope="module")
def ets_model():
    torch.manual_seed(0)
    cfg = {"proj_dim": 32, "embed_dim": 16, "hidden_dim": 32, "attn_dim": 16, "dropout": 0.5}
    return ETS(cfg, feat_dim=12, vocab_size=40).eval()


def _segments(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(1, 20)), 12)).astype(np.float32) for _ in range(n)]


def test_batched_beam_equals_one_segment_at_a_time(ets_model):
    rows = _segments(9)
    batched = decode_segments(ets_model, rows, beam_size=3, max_len=12, batch_size=9, return_attn=True)
    for r, d in zip(rows, batched, strict=False):
        feats, mask = pad_rows([r])
        single = beam_search(ets_model, feats, mask, beam_size=3, max_len=12, return_attn=True)[0]
        assert d.tokens == single.tokens
        assert d.score == pytest.approx(single.score, abs=1e-4)
        assert d.attn.shape == (len(d.tokens) + d.ended, r.shape[0])
        np.testing.assert_allclose(d.attn, single.attn, atol=1e-5)
        np.testing.assert_allclose(d.attn.sum(1), 1.0, atol=1e-5)


def test_beam_one_is_greedy_and_beam_never_scores_worse(ets_model):
    rows = _segments(7, seed=1)
    feats, mask = pad_rows(rows)
    g = greedy(ets_model, feats, mask, max_len=12)
    b1 = beam_search(ets_model, feats, mask, beam_size=1, max_len=12)
    b3 = beam_search(ets_model, feats, mask, beam_size=3, max_len=12)
    assert [d.tokens for d in g] == [d.tokens for d in b1]
    for gd, bd in zip(g, b3, strict=False):
        if gd.ended and bd.ended:
            assert bd.score >= gd.score - 1e-6


def test_model_must_be_in_eval_mode(ets_model):
    ets_model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            decode_segments(ets_model, _segments(1))
    finally:
        ets_model.eval()
