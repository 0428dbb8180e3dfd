"""Greedy and batched beam search: batched == one at a time, beam 1 == greedy, hand-checked beams."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from caption_model.decode import beam_search, decode_segments, greedy, pad_rows
from caption_model.formats.text import BOS, EOS, UNK
from caption_model.model import ETS


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
        return self.table[prev], prev, attn.repeat_interleave(len(prev) // len(memory), 0)  # beams share memory

    @staticmethod
    def reorder(obj, idx):
        return obj.index_select(0, idx)


A, B = 4, 5  # two real words after the specials <pad> <s> <e> <unk>


def _normalised(t: np.ndarray) -> np.ndarray:
    t = np.where(t > 0, t, 1e-6)
    return t / t.sum(1, keepdims=True)


def _table() -> np.ndarray:
    t = np.full((6, 6), 1e-6)
    t[BOS, [EOS, A, B]] = [0.1, 0.5, 0.4]  # greedy picks a (0.5)
    t[A, [EOS, A, B]] = [0.3, 0.05, 0.65]  # after a: b 0.65
    t[B, [EOS, A, B]] = [0.9, 0.05, 0.05]  # after b: <e> 0.9
    t[EOS, [EOS, A, B]] = [0.2, 0.4, 0.4]
    return _normalised(t)


def _one_segment():
    return torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool)


def test_greedy_and_beam_on_a_table_worked_by_hand():
    model = TableModel(_table())
    feats, mask = _one_segment()
    g = greedy(model, feats, mask, max_len=10, return_attn=True)[0]
    assert g.tokens == [A, B] and g.ended
    tab = _table()
    first = tab[BOS] / (1 - tab[BOS, EOS])  # <e> is barred at the first step, the rest renormalised
    assert g.score == pytest.approx(math.log(first[A]) + math.log(tab[A, B]) + math.log(tab[B, EOS]), rel=1e-5)
    assert g.attn.shape == (3, 2) and np.allclose(g.attn, 0.5)
    # Beam 3: "b <e>" = 0.4*0.9 beats "a b <e>" = 0.5*0.65*0.9 and "a <e>" = 0.5*0.3 (all / 0.9).
    b = beam_search(model, feats, mask, beam_size=3, max_len=10, length_norm=0.0, return_attn=True)[0]
    assert b.tokens == [B] and b.ended
    assert b.score == pytest.approx(math.log(first[B] * tab[B, EOS]), rel=1e-4)
    assert b.attn.shape == (2, 2) and np.allclose(b.attn, 0.5)
    # max_len cuts an unfinished caption; it is still returned, marked not ended.
    cut = greedy(model, feats, mask, max_len=1)[0]
    assert cut.tokens == [A] and not cut.ended


def test_length_normalisation_prefers_longer_captions():
    t = np.full((6, 6), 1e-6)
    t[BOS, A] = 1.0
    t[A, [EOS, B]] = [0.45, 0.55]
    t[B, [EOS, B]] = [0.8, 0.2]
    model = TableModel(_normalised(t))
    feats, mask = _one_segment()
    # raw: "a <e>" 0.45 > "a b <e>" 0.44; per-token (alpha 1): log(0.45)/2 < log(0.44)/3 -> longer wins
    assert beam_search(model, feats, mask, 2, 10, length_norm=0.0)[0].tokens == [A]
    assert beam_search(model, feats, mask, 2, 10, length_norm=1.0)[0].tokens == [A, B]


def test_a_caption_has_at_least_one_word():
    t = np.full((6, 6), 1e-6)
    t[BOS, [EOS, A]] = [0.9, 0.1]  # ending at once is by far the most likely
    t[A, EOS] = 0.9
    model = TableModel(_normalised(t))
    feats, mask = _one_segment()
    for decoded in (greedy(model, feats, mask, max_len=5)[0], beam_search(model, feats, mask, 3, 5, 0.0)[0]):
        assert decoded.tokens == [A] and decoded.ended


def test_unk_is_never_emitted_even_when_most_likely():
    t = np.full((6, 6), 1e-6)
    t[BOS, [UNK, EOS, A]] = [0.6, 0.1, 0.3]
    t[A, [UNK, EOS]] = [0.5, 0.45]
    t[UNK, [EOS]] = [0.9]
    model = TableModel(_normalised(t))
    feats, mask = _one_segment()
    for decoded in (greedy(model, feats, mask, max_len=5)[0], beam_search(model, feats, mask, 3, 5, 0.0)[0]):
        assert decoded.tokens == [A] and decoded.ended


def test_unk_is_never_emitted_by_a_model_that_prefers_it(ets_model):
    bias = ets_model.logits.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias[UNK], bias[EOS] = 50.0, -50.0  # <unk> wins every argmax by far; captions run to max_len
    try:
        rows = _segments(5, seed=3)
        for beam in (1, 3):
            out = decode_segments(ets_model, rows, beam_size=beam, max_len=6, length_norm=0.0, batch_size=64)
            assert all(len(d.tokens) == 6 and UNK not in d.tokens for d in out)
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_finished_hypotheses_do_not_take_live_beam_slots():
    # Beam 2, length_norm 1; the first word is c. Then "c <e>" 0.37 > "c a" 0.35 > "c b" 0.28. If the
    # finished "c <e>" kept a slot, only "c a" would live on and "c b" (whose "c b <e>" = 0.28*0.99 has
    # the best per-token score) would be lost; with "c <e>" set aside, the live beam is {c a, c b}.
    C = 6
    t = np.full((7, 7), 1e-6)
    t[BOS, C] = 1.0
    t[C, [EOS, A, B]] = [0.37, 0.35, 0.28]
    t[A, [EOS, A, B]] = [0.34, 0.33, 0.33]
    t[B, [EOS]] = [0.99]
    t = _normalised(t)
    model = TableModel(t)
    feats, mask = _one_segment()
    best = beam_search(model, feats, mask, beam_size=2, max_len=6, length_norm=1.0)[0]
    assert best.tokens == [C, B] and best.ended
    assert best.score == pytest.approx(math.log(t[BOS, C] * t[C, B] * t[B, EOS]), rel=1e-4)


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
    batched = decode_segments(ets_model, rows, beam_size=3, max_len=12, length_norm=0.0, batch_size=9,
                              return_attn=True)
    assert len(batched) == len(rows)
    for r, d in zip(rows, batched, strict=True):
        feats, mask = pad_rows([r])
        single = beam_search(ets_model, feats, mask, beam_size=3, max_len=12, length_norm=0.0, return_attn=True)[0]
        assert d.tokens == single.tokens
        assert d.score == pytest.approx(single.score, abs=1e-4)
        assert d.attn.shape == (len(d.tokens) + d.ended, r.shape[0])
        np.testing.assert_allclose(d.attn, single.attn, atol=1e-5)
        np.testing.assert_allclose(d.attn.sum(1), 1.0, atol=1e-5)


def test_beam_one_is_greedy_and_beam_never_scores_worse(ets_model):
    """With raw scores (length_norm 0) beam 3 searches a superset of greedy's path, so on these segments it
    finds a caption at least as likely as greedy's, and a more likely one where greedy's first word misleads.

    The untrained model's <e> bias is set (0.6) so that greedy ENDS every caption within max_len: the comparison
    is then between two finished captions on all 7 segments (with the model as initialised, greedy ended
    none of them and a comparison guarded by `ended` ran 0 times)."""
    model = copy.deepcopy(ets_model)
    with torch.no_grad():
        model.logits.bias[EOS] = 0.6
    rows = _segments(7, seed=1)
    feats, mask = pad_rows(rows)
    g = greedy(model, feats, mask, max_len=12)
    b1 = beam_search(model, feats, mask, beam_size=1, max_len=12, length_norm=0.0)
    b3 = beam_search(model, feats, mask, beam_size=3, max_len=12, length_norm=0.0)
    assert [d.tokens for d in g] == [d.tokens for d in b1]
    assert len(g) == len(b3) == len(rows)
    assert all(d.ended for d in g) and all(d.ended for d in b3)  # every pair below compares finished captions
    gains = [bd.score - gd.score for gd, bd in zip(g, b3, strict=True)]
    assert min(gains) >= -1e-6, gains
    assert max(gains) > 1.0, gains  # and beam is not greedy in disguise: it finds a far likelier caption


def test_model_must_be_in_eval_mode(ets_model):
    ets_model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            decode_segments(ets_model, _segments(1), beam_size=3, max_len=6, length_norm=0.0, batch_size=64)
    finally:
        ets_model.eval()
