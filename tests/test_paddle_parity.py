"""The seed's network (caption_model.paddle_ets) against Paddle's own kernels.

`tests/fixtures/paddle_ets_{small,full}.npz` hold outputs of PaddlePaddle 3's `gru`, `gru_unit` and
`sequence_softmax` kernels on weights and inputs that `tests/seed_net_golden.py` regenerates from the
stored seeds (generator: benchmarks/paddle_parity.py, run in a separate venv with paddlepaddle; these
tests never import paddle). Segments of different lengths go through in one padded batch, so the
reverse GRU must start at each segment's own end. Tolerance 1e-5 (float32).

Each comparison names the mistakes it catches: column-sliced GRU weights, the reset gate applied after
the product, a tanh in the decoder's attention, a transposed ``[in, out]`` weight (the generator prints
how far each of those lands from Paddle: every one by more than 1e-2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from seed_net_golden import make_batch, make_params

from caption_model.decode import beam_search, greedy
from caption_model.formats.text import EOS
from caption_model.paddle_ets import PADDLE_NAMES, PaddleETS, PaddleETSConfig

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-5


def _load(kind: str):
    z = np.load(FIXTURES / f"paddle_ets_{kind}.npz")
    sizes = json.loads(str(z["sizes_json"]))
    params = make_params(sizes, int(z["param_seed"]))
    feats, words = make_batch(sizes, int(z["batch_seed"]), z["lengths"].tolist(), z["n_words"].tolist())
    cfg = PaddleETSConfig(proj_dim=sizes["fc"], gru_dim=sizes["hid"], hidden_dim=sizes["dec"], embed_dim=sizes["emb"])
    model = PaddleETS(cfg, sizes["feat"], sizes["vocab"] + 1)
    model.load_state_dict({attr: torch.from_numpy(params[name]) for name, attr in PADDLE_NAMES.items()})
    return z, model.eval(), feats, words


def _padded(feats: list[np.ndarray], words: list[np.ndarray]):
    B, T = len(feats), max(len(f) for f in feats)
    x = torch.zeros(B, T, feats[0].shape[1])
    mask = torch.zeros(B, T, dtype=torch.bool)
    L = max(len(w) for w in words) + 1
    tokens = torch.zeros(B, L, dtype=torch.long)
    for i, (f, w) in enumerate(zip(feats, words, strict=True)):
        x[i, : len(f)], mask[i, : len(f)] = torch.from_numpy(f), True
        tokens[i, : len(w)] = torch.from_numpy(w) + 1  # etspipe id = Paddle id + 1
        tokens[i, len(w)] = EOS
    return x, mask, tokens


def _split(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize("kind", ["small", "full"])
def test_encoder_and_teacher_forced_steps_match_paddle(kind: str) -> None:
    """enc catches column-sliced GRU weights, reset after the product and a reverse pass from the padded
    end; vec/h0 a transposed pooling or boot weight; attention a tanh in the decoder's scores (it would
    move with the state); the step log-probabilities any mistake in the decoder's GRU unit or word ids."""
    z, model, feats, words = _load(kind)
    lengths, n_words = z["lengths"].tolist(), z["n_words"].tolist()
    x, mask, tokens = _padded(feats, words)
    with torch.no_grad():
        enc = model.encoded_rows(x, mask)
        memory = model.encode(x, mask)
        h0 = model.init_state(memory).h
        states, _, _ = model._teacher_forced(x, mask, tokens)
        log_probs, attn = model(x, mask, tokens)
    attn_sizes = [n * t for n, t in zip(n_words, lengths, strict=True)]
    for i, (want_enc, want_attn) in enumerate(zip(_split(z["enc"], lengths), _split(z["attn"], attn_sizes),
                                                  strict=True)):
        T, n = lengths[i], n_words[i]
        assert np.abs(enc[i, :T].numpy() - want_enc).max() < TOL
        assert not enc[i, T:].any()
        assert np.abs(attn[i, :n, :T].numpy() - want_attn.reshape(n, T)).max() < TOL
    assert np.abs(memory.vec.numpy() - z["vec"]).max() < TOL
    assert np.abs(h0.numpy() - z["h0"]).max() < TOL
    got_states = np.concatenate([states[i, :n].numpy() for i, n in enumerate(n_words)])
    assert np.abs(got_states - z["hidden"]).max() < TOL
    got_lp = np.concatenate([log_probs[i, :n, 1:].numpy() for i, n in enumerate(n_words)])  # drop <pad>
    assert np.abs(got_lp[z["log_prob_rows"]] - z["log_probs"]).max() < TOL
    assert np.array_equal(got_lp.argmax(1), z["argmax"])  # every step, also those stored without the full row
    assert np.abs(got_lp.max(1) - z["max_log_prob"]).max() < TOL


def test_the_decoder_attention_does_not_depend_on_the_state() -> None:
    """As published (no tanh): W6 changes nothing, and the attention is the same at every word."""
    z, model, feats, words = _load("small")
    x, mask, tokens = _padded(feats, words)
    with torch.no_grad():
        before, attn = model(x, mask, tokens)
        model.state_w.normal_(0.0, 10.0)
        after, _ = model(x, mask, tokens)
    assert torch.equal(before, after)
    n = z["n_words"].tolist()
    for i in range(len(n)):
        assert torch.allclose(attn[i, :n[i]], attn[i, :1].expand(n[i], -1))


def _paddle_beam(model: PaddleETS, x: torch.Tensor, mask: torch.Tensor, K: int, max_len: int):
    """An independent reading of the seed's settings, one segment at a time: live hypotheses ranked by
    summed log-probabilities (no length normalisation, nothing masked but <pad>, which Paddle's softmax
    does not have, and <s>, as etspipe masks it), <e> ends a hypothesis, no <e> first; returns the best
    finished (tokens, score) after the search can no longer improve it."""
    memory = model.encode(x, mask)
    state = model.init_state(memory)
    live = [([], 0.0, state.h[0])]
    finished: list[tuple[list[int], float]] = []
    for t in range(max_len):
        cands = []
        for toks, score, h in live:
            prev = torch.tensor([toks[-1] if toks else 1])
            lp, st, _ = model.step(prev, type(state)(h[None]), memory)
            lp = lp[0].double()
            lp[0] = lp[1] = float("-inf")
            mass = lp.exp().sum()
            if t == 0:
                mass = mass - lp[EOS].exp()
                lp[EOS] = float("-inf")
            lp = lp - mass.log()
            if t > 0:
                finished.append((toks, score + float(lp[EOS])))
            lp[EOS] = float("-inf")
            top, idx = lp.topk(K)
            cands += [(toks + [int(i)], score + float(v), st.h[0]) for v, i in zip(top, idx, strict=True)]
        cands.sort(key=lambda c: -c[1])
        live = cands[:K]
        if finished and max(f[1] for f in finished) >= live[0][1]:
            break
    return max(finished, key=lambda f: f[1]) if finished else (live[0][0], live[0][1])


def test_greedy_follows_the_argmax_and_beam_returns_the_best_finished_caption() -> None:
    """With the seed's settings (beam 3, summed log-probabilities, <unk> allowed): greedy's words are the
    argmax of Paddle's distributions step by step, and beam search's answer is the best finished
    hypothesis, as an independent one-segment-at-a-time search finds it."""
    z, model, feats, words = _load("small")
    x, mask, _ = _padded(feats, words)
    with torch.no_grad():
        for d, i in zip(greedy(model, x, mask, 12, allow_unk=True), range(len(feats)), strict=True):
            memory = model.encode(x[i: i + 1], mask[i: i + 1])
            state, prev = model.init_state(memory), torch.tensor([1])
            for t, tok in enumerate(d.tokens + ([EOS] if d.ended else [])):
                lp, state, _ = model.step(prev, state, memory)
                lp[0, :2] = float("-inf")
                if t == 0:
                    lp[0, EOS] = float("-inf")
                assert int(lp.argmax()) == tok
                prev = torch.tensor([tok])
        beams = beam_search(model, x, mask, 3, 12, 0.0, allow_unk=True)
        assert len(beams) == len(feats)
        finished = 0
        for i, d in enumerate(beams):
            want_tokens, want_score = _paddle_beam(model, x[i: i + 1, : int(mask[i].sum())],
                                                   mask[i: i + 1, : int(mask[i].sum())], 3, 12)
            assert d.tokens == want_tokens and abs(d.score - want_score) < 1e-6
            finished += d.ended
        assert finished >= 2  # the comparison is about finished captions: most segments must end
