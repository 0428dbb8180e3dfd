"""decode.compile: the attention scores through torch.compile give the same captions, only where asked,
and a compiler that fails costs a warning, not the run."""

from __future__ import annotations

import copy
import logging
import shutil

import numpy as np
import pytest
import torch

from caption_model import compiled_attention
from caption_model.decode import decode_segments
from caption_model.model import ETS

# inductor's CPU kernels are C++ built at run time (`make test` installs g++: scripts/ensure_compiler.sh);
# under CI=true this skip is a failure (tests/conftest.py)
needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="inductor's CPU kernels need a C++ compiler (make compiler)")


def _model() -> ETS:
    torch.manual_seed(0)
    cfg = {"encoder": "linear", "attention": "temporal", "proj_dim": 16, "embed_dim": 8, "hidden_dim": 12,
           "attn_dim": 6, "dropout": 0.0, "doubly_stochastic": 0.0}
    return ETS(cfg, feat_dim=10, vocab_size=25).eval()


def _rows(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(size=(int(rng.integers(1, 30)), 10)).astype(np.float32) for _ in range(n)]


def _decode(model: ETS, rows: list[np.ndarray]) -> list:
    return decode_segments(model, rows, beam_size=3, max_len=8, length_norm=1.0, batch_size=4, return_attn=True)


def test_auto_compiles_only_long_runs_and_never_never():
    model = _model()
    assert not compiled_attention.enable(model, "auto", compiled_attention.MIN_SEGMENTS - 1)
    assert model.attention.fused_scores is None
    assert not compiled_attention.enable(model, "never", 10**6)
    assert model.attention.fused_scores is None
    with pytest.raises(ValueError, match="decode.compile"):
        compiled_attention.enable(model, "yes", 1)


def test_auto_stays_eager_on_avx512_cpus_and_compiles_on_avx2(monkeypatch):
    model = _model()
    monkeypatch.setattr(compiled_attention.shutil, "which", lambda _name: "/usr/bin/g++")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not compiled_attention.enable(model, "auto", 10**6)  # eager was faster there (PERFORMANCE.md)
    assert compiled_attention.enable(model, "always", 10**6)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert compiled_attention.enable(model, "auto", 10**6)
    compiled_attention.enable(model, "never", 1)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    model, rows = _model(), _rows(7)
    eager = _decode(model, rows)

    def broken(*_args):
        raise RuntimeError("C++ compile error: no such header")
    monkeypatch.setattr(compiled_attention, "_compiled", broken)
    monkeypatch.setattr(compiled_attention.shutil, "which", lambda _name: "/usr/bin/g++")
    assert compiled_attention.enable(model, "always", len(rows))
    with caplog.at_level(logging.WARNING, logger="caption_model.compiled_attention"):
        fallen = _decode(model, rows)
    assert [d.tokens for d in fallen] == [d.tokens for d in eager]
    assert model.attention.fused_scores is None
    assert sum("decoding eagerly" in r.message for r in caplog.records) == 1


@needs_compiler
def test_compiled_scores_give_the_eager_captions_and_attention():
    model, rows = _model(), _rows(9)
    eager = _decode(model, rows)
    assert compiled_attention.enable(model, "always", len(rows))
    compiled = _decode(model, rows)
    assert model.attention.fused_scores is not None  # it did not fall back
    for a, b in zip(eager, compiled, strict=True):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, abs=1e-4)
        np.testing.assert_allclose(a.attn, b.attn, atol=1e-5)
    compiled_attention.enable(model, "never", 1)


def test_training_never_takes_the_compiled_path(monkeypatch):
    """With the compiled scores enabled, decoding goes through them and a training step does not: the step's
    loss and every gradient equal those of a model that never had them. The kernel is the uncompiled
    function here (no compiler needed): what is under test is which path runs, not inductor."""
    model = _model()
    eager = copy.deepcopy(model)
    monkeypatch.setattr(compiled_attention.shutil, "which", lambda _name: "/usr/bin/g++")
    monkeypatch.setattr(compiled_attention, "_compiled", compiled_attention.scores_from_exponentials)
    assert compiled_attention.enable(model, "always", 3)
    calls = []
    fused = model.attention.fused_scores

    def counted(*args):
        calls.append(1)
        return fused(*args)

    model.attention.fused_scores = counted
    _decode(model, _rows(3))
    assert calls, "decoding did not take the compiled path: this test would prove nothing"
    n_decoding = len(calls)
    rng = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 40, 10, generator=rng)
    mask = torch.ones(2, 40, dtype=torch.bool)
    tokens = torch.tensor([[2, 5, 6, 7, 3], [2, 7, 9, 3, 0]])
    losses = []
    for m in (model, eager):
        m.train()
        with torch.enable_grad():
            loss = m.loss(feats, mask, tokens)[0]
            loss.backward()
        losses.append(loss.item())
    assert len(calls) == n_decoding  # the training step called the compiled scores 0 times
    assert losses[0] == losses[1]
    for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
        assert p.grad is not None and torch.equal(p.grad, q.grad), name
    compiled_attention.enable(model, "never", 1)


@needs_compiler
def test_keys_beyond_the_exponential_range_take_the_eager_tanh(monkeypatch):
    """exp(2k) over- or underflows for |k| > EXP_LIMIT, where the identity would lose tanh's value:
    such a batch must decode exactly as eager does, and the compiled kernel must not run on it."""
    model, rows = _model(), _rows(5)
    with torch.no_grad():
        model.attention.U.bias.fill_(40.0)  # every key ~40: exp(80) overflows float32
    eager = _decode(model, rows)
    assert compiled_attention.enable(model, "always", len(rows))
    calls = []
    monkeypatch.setattr(compiled_attention, "_compiled", lambda *a: calls.append(1))
    fallen = _decode(model, rows)
    assert not calls and model.attention.fused_scores is not None
    for a, b in zip(eager, fallen, strict=True):
        assert a.tokens == b.tokens and a.score == b.score
    compiled_attention.enable(model, "never", 1)
