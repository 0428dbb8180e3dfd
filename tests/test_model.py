"""The ETS network: equations, masking, attention over time, step API, Noam, batching helpers."""

import numpy as np
import pytest
import torch

from caption_model.dataset import BucketBatchSampler, collate, subsample_rows
from caption_model.decode import greedy
from caption_model.formats.text import BOS, EOS, PAD
from caption_model.model import ETS, Memory, State
from caption_model.runs.schedule import NoamSchedule, noam_lr

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = {"proj_dim": 32, "embed_dim": 16, "hidden_dim": 24, "attn_dim": 12, "dropout": 0.0}
V, D = 40, 10


def make_batch(seed=0, B=4, T=9, L=7):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, D, generator=g) * 2
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    tokens = torch.randint(4, V, (B, L), generator=g)
    tokens[:, 0] = BOS
    lengths = [L, 4, 6, 3]  # tokens incl. <s> and <e>; padded after
    for b, n in enumerate(lengths):
        tokens[b, n - 1] = EOS
        tokens[b, n:] = PAD
    return feats, mask, tokens


def model(**kw):
    torch.manual_seed(0)
    return ETS({**SMALL, **kw}, D, V).eval()


@pytest.mark.parametrize("kw", [{}, {"encoder": "bilstm"}, {"attention": "mean"}])
def test_teacher_forcing_equals_step_by_step(kw):
    m = model(**kw)
    feats, mask, tokens = make_batch()
    logits, attn = m(feats, mask, tokens)
    memory = m.encode(feats, mask)
    state = m.init_state(memory)
    for t in range(tokens.shape[1] - 1):
        log_probs, state, a = m.step(tokens[:, t], state, memory)
        real = tokens[:, t + 1] != PAD
        torch.testing.assert_close(torch.log_softmax(logits[:, t], -1)[real], log_probs[real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attn[real, t], a[real], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"encoder": "bilstm"}, {"attention": "mean"}])
def test_padding_rows_get_zero_weight_and_do_not_change_outputs(kw):
    m = model(**kw)
    feats, mask, tokens = make_batch()
    logits, attn = m(feats, mask, tokens)
    assert torch.all(attn[1, :, 5:] == 0) and torch.all(attn[2, :, 2:] == 0)
    real = (tokens[:, 1:] != PAD)
    torch.testing.assert_close(attn.sum(-1)[real], torch.ones(int(real.sum())))
    noisy = feats.clone()
    noisy[~mask] = 1e3  # garbage in the padding
    logits2, attn2 = m(noisy, mask, tokens)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(attn2, attn)
    # and a video alone (no padding at all) gives the same result as inside the padded batch
    alone, _ = m(feats[2:3, :2], mask[2:3, :2], tokens[2:3, :6])
    torch.testing.assert_close(alone[0], logits[2, :5], atol=1e-5, rtol=1e-5)


def test_attention_changes_between_steps_and_depends_on_h_prev():
    m = model()
    feats, mask, tokens = make_batch()
    _, attn = m(feats, mask, tokens)
    # the same video, consecutive words: different weights (the reference implementation's were constant)
    assert (attn[0, 1:] - attn[0, :-1]).abs().max() > 1e-3
    # the scores depend on h_prev through W; without it (W = 0) they would be the same at every step
    with torch.no_grad():
        m.attention.W.weight.zero_()
    _, flat = m(feats, mask, tokens)
    torch.testing.assert_close(flat[0, 1:], flat[0, :1].expand_as(flat[0, 1:]))


def test_mean_attention_is_uniform_over_valid_rows():
    m = model(attention="mean")
    feats, mask, tokens = make_batch()
    _, attn = m(feats, mask, tokens)
    torch.testing.assert_close(attn[2, 0, :2], torch.full((2,), 0.5))
    torch.testing.assert_close(attn[1, 0, :5], torch.full((5,), 0.2))


def test_reorder_and_greedy_decode():
    m = model()
    feats, mask, _ = make_batch()
    memory = m.encode(feats, mask)
    state = m.init_state(memory)
    idx = torch.tensor([2, 2, 0])
    mem2, st2 = m.reorder(memory, idx), m.reorder(state, idx)
    assert isinstance(mem2, Memory) and isinstance(st2, State)
    assert torch.equal(mem2.rows[1], memory.rows[2]) and torch.equal(st2.h[2], state.h[0])
    lp_all, _, _ = m.step(torch.full((4,), BOS), state, memory)
    lp, _, _ = m.step(torch.full((3,), BOS), st2, mem2)
    torch.testing.assert_close(lp, lp_all[idx])
    decoded = greedy(m.eval(), feats, mask, max_len=5, return_attn=True)  # the one greedy decoder
    assert len(decoded) == 4 and all(len(d.tokens) <= 5 and EOS not in d.tokens for d in decoded)
    assert all(d.attn.shape == (len(d.tokens) + d.ended, int(mask[i].sum())) for i, d in enumerate(decoded))


def test_loss_masks_padding_and_memorises_a_tiny_set():
    torch.manual_seed(0)
    m = ETS({**SMALL, "dropout": 0.1, "doubly_stochastic": 0.01}, D, V)
    feats, mask, tokens = make_batch()
    loss, nll, n = m.loss(feats, mask, tokens)
    assert n == int((tokens[:, 1:] != PAD).sum()) and loss > nll  # doubly stochastic term added
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = float(nll)
    for _ in range(60):
        loss, nll, _ = m.loss(feats, mask, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(nll) < 0.2 * first


def test_noam_values():
    assert noam_lr(1, 512, 1000) == pytest.approx(512 ** -0.5 * 1000 ** -1.5)
    assert noam_lr(1000, 512, 1000) == pytest.approx((512 * 1000) ** -0.5)  # the peak
    assert noam_lr(4000, 512, 1000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)
    assert noam_lr(500, 512, 1000, factor=2.0) == pytest.approx(2 * noam_lr(500, 512, 1000))
    assert noam_lr(999, 512, 1000) < noam_lr(1000, 512, 1000) > noam_lr(1001, 512, 1000)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = NoamSchedule(opt, 512, 1000)
    assert opt.param_groups[0]["lr"] == pytest.approx(noam_lr(1, 512, 1000))
    sched.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(noam_lr(3, 512, 1000))
    other = NoamSchedule(opt, 512, 1000)
    other.load_state_dict(sched.state_dict())
    assert other.lr == sched.lr


def test_subsample_rows_uniform():
    rows = np.arange(10, dtype=np.float32)[:, None]
    assert subsample_rows(rows, 20) is rows
    assert subsample_rows(rows, 4)[:, 0].tolist() == [0, 3, 6, 9]


def test_collate_pads_and_sorts_longest_caption_first():
    samples = [(np.ones((3, 2), np.float32), np.array([1, 5, 2]), 0),
               (np.ones((5, 2), np.float32), np.array([1, 5, 6, 7, 2]), 1)]
    b = collate(samples)
    assert b.index.tolist() == [1, 0] and b.feats.shape == (2, 5, 2) and b.tokens.shape == (2, 5)
    assert b.feat_mask.sum(1).tolist() == [5, 3] and b.tokens[1].tolist() == [1, 5, 2, 0, 0]


def test_bucket_sampler_groups_lengths_and_is_seeded():
    lengths = np.random.default_rng(0).uniform(0, 100, 1000)
    s = BucketBatchSampler(lengths, 16, seed=3, pool_batches=10)
    s.set_epoch(0)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(s) == len(batches)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 15  # random batches would spread ~90
    s.set_epoch(0, skip=5)
    assert list(s) == batches[5:]
    s.set_epoch(1)
    assert list(s) != batches
    ranks = [BucketBatchSampler(lengths, 16, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(0)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) and not {i for x in a for i in x} & {i for x in b for i in x}


def test_teacher_forcing_reads_nothing_back_per_word(monkeypatch):
    """On a GPU every .item() waits for the device: the loss must not read one per word."""
    m = model()
    feats, mask, tokens = make_batch(L=12)
    calls = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or original(self))
    m.loss(feats, mask, tokens)
    assert len(calls) <= 1


def test_bf16_only_where_the_cpu_has_it(monkeypatch):
    import caption_model.runs.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert not precision.uses_bf16(cpu, "bf16")  # emulated bf16 is ~25x slower than fp32: fall back
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.uses_bf16(cpu, "bf16") and not precision.uses_bf16(cpu, "auto")
    assert not precision.uses_bf16(cpu, "fp32")
    with pytest.raises(Exception, match="train.precision must be"):
        precision.uses_bf16(cpu, "fp16")


def test_dropout_keeps_with_probability_one_minus_p_and_rescales():
    """The model's own Dropout must be nn.Dropout's distribution: kept values scaled by 1/(1-p), dropped
    ones exactly 0, the kept fraction 1-p; the identity in eval mode and at p=0."""
    from caption_model.model import Dropout

    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5
    for p in (0.2, 0.5, 0.8):
        drop = Dropout(p).train()
        y = drop(x)
        kept = y != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.005
        torch.testing.assert_close(y[kept], x[kept] / (1 - p))
        assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert not Dropout(1.0).train()(x).any()


def test_shrinking_batch_gradients_equal_plain_slicing():
    """Teacher forcing shares one gradient buffer for the per-word batch prefixes of the memory; the
    gradients must equal those of plain slicing (float64, captions of different lengths)."""
    from caption_model import model as model_module

    torch.manual_seed(0)
    cfg = {"encoder": "linear", "attention": "temporal", "proj_dim": 16, "embed_dim": 8, "hidden_dim": 12,
           "attn_dim": 6, "dropout": 0.0, "doubly_stochastic": 1.0}
    net = model_module.ETS(cfg, feat_dim=10, vocab_size=30).double()
    feats = torch.randn(5, 9, 10, dtype=torch.float64)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 7, 2, 9])[:, None]
    tokens = torch.zeros(5, 8, dtype=torch.long)
    for i, n in enumerate([7, 3, 5, 2, 6]):  # ends at different words: the batch shrinks 4 times
        tokens[i, 0], tokens[i, 1:n], tokens[i, n] = 2, torch.randint(4, 30, (n - 1,)), 3

    def grads() -> list[torch.Tensor]:
        net.zero_grad()
        net.loss(feats, mask, tokens)[0].backward()
        return [p.grad.clone() for p in net.parameters()]

    shared = grads()
    original = model_module.batch_prefixes
    model_module.batch_prefixes = lambda x, sizes: {n: x[:n] for n in sizes}
    try:
        plain = grads()
    finally:
        model_module.batch_prefixes = original
    for a, b in zip(shared, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _loss_word_by_word(net, feats, mask, tokens):
    """The training objective written plainly through the step API: every word on the whole batch,
    autograd's own gradients (the reference for teacher forcing's hand-made ones)."""
    memory = net.encode(feats, mask)
    state = net.init_state(memory)
    total, count, attns = 0.0, 0, []
    for t in range(tokens.shape[1] - 1):
        log_probs, state, attn = net.step(tokens[:, t], state, memory)
        target = tokens[:, t + 1]
        real = target != PAD
        total = total - log_probs[real, target[real]].sum()
        count += int(real.sum())
        attns.append(attn * real[:, None])
    coverage = torch.stack(attns, 1).sum(1)
    return total / count + net.cfg.doubly_stochastic * (((1.0 - coverage) ** 2) * mask).sum(1).mean()


@pytest.mark.parametrize("encoder", ["linear", "bilstm"])
def test_teacher_forcing_gradients_equal_word_by_word_autograd(encoder, monkeypatch):
    """Teacher forcing takes the gradients of the encoded rows and keys in its own way (shared prefix
    buffers, the contexts' row gradient as one product after all words, the scores' hand-made
    backward); every parameter's gradient must equal plain autograd's through the step API with the
    scores as plain tensor operations (float64 model, captions of different lengths, the doubly
    stochastic term on; the scores' softmax and the cross-entropy are float32, hence the tolerance)."""
    from caption_model import model as model_module

    torch.manual_seed(0)
    net = ETS({**SMALL, "encoder": encoder, "doubly_stochastic": 0.7}, D, V).double().train()
    feats, mask, tokens = make_batch(seed=3, B=5, T=9, L=8)
    feats = feats.double()

    def grads(loss_fn) -> list[torch.Tensor]:
        net.zero_grad()
        loss_fn().backward()
        return [p.grad.clone() for p in net.parameters()]

    monkeypatch.setattr(model_module.ContextGradients, "MIN_ELEMENTS", 0)  # both taken on large batches only
    monkeypatch.setattr(model_module._Scores, "MIN_ELEMENTS", 0)
    fast = grads(lambda: net.loss(feats, mask, tokens)[0])
    plain_scores = type("PlainScores", (), {"MIN_ELEMENTS": 0, "apply": staticmethod(
        lambda wh, keys, w: torch.tanh(wh.unsqueeze(1) + keys) @ w)})
    monkeypatch.setattr(model_module, "_Scores", plain_scores)
    plain = grads(lambda: _loss_word_by_word(net, feats, mask, tokens))
    for (name, _), a, b in zip(net.named_parameters(), fast, plain, strict=True):
        assert (a - b).abs().max() <= 1e-3 * b.abs().max(), name  # float32 rounding: <= 1e-4 of the largest seen
