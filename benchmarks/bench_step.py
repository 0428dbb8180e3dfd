"""One training step of the ETS captioner without data loading: the levers of issue 15, A/B in one process.

A synthetic batch at the reference sizes (configs/ets.yaml's model; batch 64, row counts drawn like
ActivityNet's caption segments, mean ~134, captions of 16 tokens, vocabulary 5,180, 500-d rows) goes
through the real `ETS.loss`, backward and Adam. Each variant runs `--steps` timed steps after warm-up;
variants are interleaved over `--rounds` rounds (the machine's load drifts) and the best round is kept.
Prints one JSON line per variant: ms per step, GFLOP/s of the step (bench_train.step_flops) and its ratio
to a 2048^2 fp32 product measured in this process.

Variants (``--variants``, comma-separated):

* ``base``: the model as configured (dropout 0.5);
* ``no_dropout``: dropout 0 (what the dropout masks cost: ``aten::bernoulli_`` was 21 % of a bf16 step);
* ``torch_dropout``: ``nn.Dropout``'s Bernoulli masks instead of the model's own `Dropout`;
* ``compile_cell``: not a step but its recurrent part alone: 16 words of attention + LSTM cell at
  B 64, T 134, forward and backward, eager against ``torch.compile`` (inductor; needs a C++ compiler;
  the compile is reported, not timed). Compiling the whole loss is not offered: its Python loop over a
  shrinking batch recompiles for nearly every batch.
* ``threads1``: one intra-op thread instead of the default;

Example: ``python benchmarks/bench_step.py --variants base,no_dropout,compile --steps 8 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_train import step_flops  # noqa: E402
from machine import cpu_model, matmul_peak_gflops  # noqa: E402

from caption_model.model import ETS  # noqa: E402
from etspipe.config import reference_config  # noqa: E402

VOCAB, DIM = 5180, 500


def batches(rng: np.random.Generator, size: int, words: int, count: int = 4) -> list:
    """Batches as training makes them: rows per segment ~ ActivityNet's (3.75 rows/s, mean ~134 rows),
    at most data.max_rows (256), bucketed by length (configs/ets.yaml); `count` batches spread over the
    length range, so the mean over them is about the epoch's."""
    pool = np.sort(np.clip(rng.gamma(1.6, 84, size * 40).astype(int), 2, 256))
    picks = np.linspace(2, 37, count).astype(int)
    return [batch(rng, pool[k * size:(k + 1) * size], words) for k in picks]


def batch(rng: np.random.Generator, n_rows: np.ndarray, words: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = len(n_rows)
    feats = torch.randn(size, int(n_rows.max()), DIM)
    mask = torch.arange(int(n_rows.max()))[None, :] < torch.as_tensor(n_rows)[:, None]
    lengths = np.clip(rng.normal(words - 3, 3, size).astype(int), 4, words)
    tokens = torch.zeros(size, words + 1, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, 0] = 2  # <s>
        tokens[i, 1:n] = torch.as_tensor(rng.integers(4, VOCAB, n - 1))
        tokens[i, n] = 3  # <e>
    return feats * mask.unsqueeze(-1), mask, tokens


def run_variant(name: str, batches: list, steps: int, base_threads: int) -> dict:
    model_cfg = dict(reference_config()["model"])
    if name == "no_dropout":
        model_cfg["dropout"] = 0.0
    torch.set_num_threads(1 if name == "threads1" else base_threads)
    torch.manual_seed(0)
    model = ETS(model_cfg, DIM, VOCAB)
    if name == "torch_dropout":  # the masks of nn.Dropout (Bernoulli sampler), as before issue 15
        for owner in (model, model.encoder):
            owner.dropout = torch.nn.Dropout(model_cfg["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    def one(b) -> None:
        loss, _, _ = model.loss(*b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one(batches[0])  # warm-up (allocator, oneDNN primitives)
    t0 = time.perf_counter()
    for i in range(steps):
        one(batches[i % len(batches)])
    seconds = (time.perf_counter() - t0) / steps
    timing = {"rows": 0, "segments": 0, "tokens": 0, "token_rows": 0}
    for i in range(steps):
        feats, mask, tokens = batches[i % len(batches)]
        n_tok = int((tokens[:, 1:] != 0).sum())
        timing["rows"] += feats.shape[0] * feats.shape[1]
        timing["segments"] += feats.shape[0]
        timing["tokens"] += n_tok
        timing["token_rows"] += n_tok * feats.shape[1]
    gflops = step_flops(model_cfg, DIM, VOCAB, timing) / steps / seconds / 1e9
    return {"ms_per_step": round(seconds * 1e3, 1), "achieved_gflops": round(gflops, 1)}


def recurrent_cell(h: torch.Tensor, c: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                   gates_emb: torch.Tensor, W: torch.Tensor, w: torch.Tensor, w_rec: torch.Tensor):
    """One word of teacher forcing as `ETS._teacher_forced` computes it: attention, then the LSTM cell."""
    scores = torch.tanh((h @ W.t()).unsqueeze(1) + keys) @ w
    attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    context = torch.bmm(attn.unsqueeze(1), rows).squeeze(1)
    i, f, g, o = torch.addmm(gates_emb, torch.cat([context, h], -1), w_rec).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def bench_compile_cell(steps: int, rounds: int) -> dict:
    """16 words of the recurrent cell, forward + backward: eager vs torch.compile (ms per 16 words)."""
    B, T, P, A, H = 64, 134, 512, 256, 512
    rows, keys = torch.randn(B, T, P, requires_grad=True), torch.randn(B, T, A, requires_grad=True)
    mask = torch.arange(T)[None, :] < torch.randint(T // 2, T + 1, (B,))[:, None]
    W, w = (torch.randn(A, H) * 0.05).requires_grad_(), (torch.randn(A) * 0.05).requires_grad_()
    w_rec, gates_emb = (torch.randn(P + H, 4 * H) * 0.03).requires_grad_(), torch.randn(16, B, 4 * H)

    def words(cell) -> None:
        h, c, out = torch.zeros(B, H), torch.zeros(B, H), []
        for t in range(16):
            h, c = cell(h, c, rows, keys, mask, gates_emb[t], W, w, w_rec)
            out.append(h)
        torch.stack(out).sum().backward()

    t0 = time.perf_counter()
    compiled = torch.compile(recurrent_cell, dynamic=True)
    words(compiled)
    compile_s = time.perf_counter() - t0
    best = {"eager": float("inf"), "compiled": float("inf")}
    for _ in range(rounds):
        for name, cell in (("eager", recurrent_cell), ("compiled", compiled)):
            words(cell)
            t0 = time.perf_counter()
            for _ in range(steps):
                words(cell)
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return {"eager_ms": round(best["eager"] * 1e3, 1), "compiled_ms": round(best["compiled"] * 1e3, 1),
            "compile_s": round(compile_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base,no_dropout")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--words", type=int, default=16)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = batches(rng, args.batch_size, args.words)
    peak = matmul_peak_gflops()
    variants = args.variants.split(",")
    if "compile_cell" in variants:
        variants.remove("compile_cell")
        print(json.dumps({"bench": "recurrent_cell_16_words", **bench_compile_cell(args.steps, args.rounds),
                          "threads": threads, "cpu": cpu_model(), "load_1m": round(os.getloadavg()[0], 2)}),
              flush=True)
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name in variants:
            result = run_variant(name, data, args.steps, threads)
            if name not in best or result["ms_per_step"] < best[name]["ms_per_step"]:
                best[name] = result
    peak = max(peak, matmul_peak_gflops())
    torch.set_num_threads(threads)
    for name, result in best.items():
        print(json.dumps({"bench": "train_step", "variant": name, **result, "matmul_peak_gflops": round(peak, 1),
                          "ratio": round(result["achieved_gflops"] / peak, 3), "threads": threads,
                          "epoch_s_at_this_step": round(result["ms_per_step"] * 585 / 1e3),
                          "cpu": cpu_model(), "load_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
