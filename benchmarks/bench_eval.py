"""Speed of evaluation: the official-protocol scorer and caption decoding.

    python benchmarks/bench_eval.py --annotations val_1.json val_2.json [--skip-gt] \\
        [--decode-segments 0] [--max-len 20] [--beams 1 3] [--device cpu|cuda] [--decode-and-score]

Prints one JSON line per result (each with the machine and its load average):

* `score_constant`: a result file of every val_1 segment with one constant
  sentence, scored against all given files (all metrics, METEOR included,
  JVM start-up included);
* `score_ground_truth`: the val_1 sentences themselves as predictions (many more
  distinct pairs: the heavy case);
* `decode_greedy` / `decode_beam3`: segments per second of an untrained ETS with
  the reference sizes (proj/hidden/embed 512, attention 256, vocabulary 5,000,
  500-d features) on random features whose row counts follow val_1's segments
  (3.75 rows/s, at most 256 rows); ``--decode-segments 0`` decodes all 17,505.
  The untrained model's ``<e>`` is banned (its output bias set to -inf: beam
  search would otherwise end every caption within a few steps, an untrained
  model having no better word than ``<e>``), so every caption runs
  to ``--max-len`` (20 emulates a trained model's ~12-15 words). ``--archs ets paddle_ets`` adds the
  seed's network (configs/paddle_ets.yaml sizes, vocabulary 5,185) on 2048-d rows at 5 per second,
  every row of a segment (its recipe), in the same run. `achieved_gflops` counts the
  matrix products of a 128-segment sample (torch's FLOP counter) scaled to
  the segments decoded; `matmul_peak_gflops` is a 2048^2 fp32 product in this
  process; their ratio is the figure to compare on a shared machine;
* `decode_and_score` (``--decode-and-score``): decode every val_1 segment
  (beam 3) into words of a vocabulary built from val_1's sentences and score
  the captions against all given files: the whole evaluation of a model.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from machine import cpu_model, load, matmul_peak_gflops  # benchmarks/machine.py (the script folder is on sys.path)

MODEL = {"proj_dim": 512, "embed_dim": 512, "hidden_dim": 512, "attn_dim": 256, "dropout": 0.5}
ROWS_PER_S, MAX_ROWS, DIM, VOCAB = 3.75, 256, 500, 5000
PADDLE = {"arch": "paddle_ets", "proj_dim": 1024, "gru_dim": 512, "hidden_dim": 512, "embed_dim": 512}
LAYOUT = {"ets": (ROWS_PER_S, MAX_ROWS, DIM, VOCAB), "paddle_ets": (5.0, 0, 2048, 5185)}  # rows/s, cap, dim, V


def emit(**kw) -> None:
    kw.setdefault("cpu", cpu_model())
    kw.setdefault("cores", os.cpu_count())
    kw.setdefault("torch_threads", torch.get_num_threads())
    kw.update(load())
    print(json.dumps(kw), flush=True)


def bench_scoring(annotations: list[str], ground_truth: bool) -> None:
    from caption_model.scoring.densevid import evaluate_results, load_references

    refs = load_references(annotations)
    results = {vid: [{"timestamp": ts, "sentence": s if ground_truth else "a man is standing in a room"}
                     for ts, s in zip(ann["timestamps"], ann["sentences"], strict=True)]
               for vid, ann in refs[0].items()}
    t0 = time.perf_counter()
    scores = evaluate_results(results, references=refs)
    seconds = time.perf_counter() - t0
    emit(bench="score_ground_truth" if ground_truth else "score_constant", seconds=round(seconds, 2),
         predictions=scores["n_predictions"], reference_videos=scores["n_reference_videos"],
         pairs=scores["n_pairs"], distinct_pairs=scores["n_distinct_pairs"],
         average={k: (None if v is None else round(v, 4)) for k, v in scores["average"].items()})


def val_segments(annotations: list[str], n_segments: int, arch: str = "ets"
                 ) -> tuple[list[tuple[str, list[float]]], list[np.ndarray]]:
    """(video, timestamp) of val_1's segments (all when n_segments is 0) and random rows of their lengths."""
    rows_per_s, max_rows, dim, _ = LAYOUT[arch]
    from caption_model.scoring.densevid import load_references

    segs = [(vid, ts) for vid, ann in load_references(annotations[:1])[0].items() for ts in ann["timestamps"]]
    rng = np.random.default_rng(0)
    if n_segments:
        segs = [segs[i] for i in rng.choice(len(segs), size=n_segments)]
    rows = [rng.normal(size=(int(np.clip(round(max(0.0, e - s) * rows_per_s), 1, max_rows or None)), dim)
                       ).astype(np.float32) for _, (s, e) in segs]
    return segs, rows


def sample_flops(model, rows: list[np.ndarray], beam: int, max_len: int, device: str) -> float:
    """Matrix-product FLOPs per segment, counted on a 128-segment sample decoded the same way."""
    from torch.utils.flop_counter import FlopCounterMode

    from caption_model.decode import decode_segments

    sample = rows[:: max(1, len(rows) // 128)][:128]
    with FlopCounterMode(display=False) as counter:
        decode_segments(model, sample, beam_size=beam, max_len=max_len, length_norm=0.0, batch_size=64,
                        device=device)
    return counter.get_total_flops() / len(sample)


def untrained_model(vocab_size: int, device: str, arch: str = "ets"):
    """The reference-size captioner, untrained, whose captions always run to max_len (see the module docstring)."""
    from caption_model.architectures import build_captioner
    from caption_model.formats.text import EOS

    torch.manual_seed(0)
    if arch == "paddle_ets":
        model = build_captioner(PADDLE, LAYOUT[arch][2], vocab_size)
        with torch.no_grad():
            model.out_b[EOS - 1] = float("-inf")  # Paddle's ids are etspipe's - 1
        return model.to(device).eval()
    model = build_captioner(MODEL, DIM, vocab_size)
    with torch.no_grad():
        model.logits.bias[EOS] = float("-inf")
    return model.to(device).eval()


def bench_decoding(annotations: list[str], n_segments: int, batch_size: int, max_len: int, beams: list[int],
                   device: str, compile_setting: str = "auto", arch: str = "ets") -> None:
    from caption_model import compiled_attention
    from caption_model.decode import decode_segments

    _, rows = val_segments(annotations, n_segments, arch)
    model = untrained_model(LAYOUT[arch][3], device, arch)
    peak = matmul_peak_gflops(torch.float32, device)
    for beam in beams:
        if arch == "ets":
            model.attention.fused_scores = None  # FLOPs counted on the eager ops
        flops = sample_flops(model, rows, beam, max_len, device)
        compiled = compiled_attention.enable(model, compile_setting, len(rows))
        compile_s = None
        if compiled:  # the one-off compile (cached on disk for later processes) is reported, not timed
            t0 = time.perf_counter()
            decode_segments(model, rows[:batch_size], beam_size=beam, max_len=2, length_norm=0.0,
                            batch_size=batch_size, device=device)
            compile_s = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        out = decode_segments(model, rows, beam_size=beam, max_len=max_len, length_norm=0.0, batch_size=batch_size,
                              device=device)
        seconds = time.perf_counter() - t0
        peak = max(peak, matmul_peak_gflops(torch.float32, device))
        achieved = flops * len(rows) / seconds / 1e9
        emit(bench="decode_greedy" if beam == 1 else f"decode_beam{beam}", arch=arch, device=device, segments=len(rows),
             seconds=round(seconds, 2), segments_per_s=round(len(rows) / seconds, 1), batch_size=batch_size,
             max_len=max_len, mean_tokens=round(float(np.mean([len(d.tokens) for d in out])), 1),
             mean_rows=round(float(np.mean([len(r) for r in rows])), 1), achieved_gflops=round(achieved, 1),
             matmul_peak_gflops=round(peak, 1), ratio_to_peak=round(achieved / peak, 3),
             compiled_attention=compiled, compile_seconds=compile_s)


def bench_decode_and_score(annotations: list[str], batch_size: int, max_len: int, device: str) -> None:
    """Decode all val_1 segments (beam 3) and score them: what `evaluate` costs beyond reading features."""
    from caption_model.decode import decode_segments
    from caption_model.formats.text import Vocab, tokenize
    from caption_model.scoring.densevid import evaluate_results, load_references

    refs = load_references(annotations)
    segs, rows = val_segments(annotations, 0)
    vocab = Vocab.build((tokenize(s) for ann in refs[0].values() for s in ann["sentences"]), 3)
    model = untrained_model(len(vocab), device)
    t0 = time.perf_counter()
    out = decode_segments(model, rows, beam_size=3, max_len=max_len, length_norm=0.0, batch_size=batch_size,
                          device=device)
    t_decode = time.perf_counter() - t0
    results: dict[str, list[dict]] = {}
    for (vid, ts), d in zip(segs, out, strict=True):
        results.setdefault(vid, []).append({"timestamp": ts, "sentence": vocab.decode(d.tokens)})
    t1 = time.perf_counter()
    scores = evaluate_results(results, references=refs)
    t_score = time.perf_counter() - t1
    emit(bench="decode_and_score", device=device, segments=len(rows), vocab=len(vocab), max_len=max_len,
         decode_seconds=round(t_decode, 1), score_seconds=round(t_score, 1), seconds=round(t_decode + t_score, 1),
         distinct_pairs=scores["n_distinct_pairs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", nargs="+", required=True, help="val_1.json [val_2.json ...]")
    ap.add_argument("--skip-gt", action="store_true", help="skip scoring the ground truth as predictions")
    ap.add_argument("--skip-score", action="store_true", help="skip both scoring benchmarks")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--decode-segments", type=int, default=256, help="segments to decode; 0 = all of val_1")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--archs", nargs="+", default=["ets"], choices=["ets", "paddle_ets"],
                    help="captioners to decode with, one after the other in this process")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--decode-and-score", action="store_true", help="decode all val_1 segments and score them")
    ap.add_argument("--compile", default="auto", choices=["auto", "always", "never"],
                    help="decode.compile: the attention scores through torch.compile (auto: 4,000+ segments)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_score:
        bench_scoring(args.annotations, ground_truth=False)
        if not args.skip_gt:
            bench_scoring(args.annotations, ground_truth=True)
    if not args.skip_decode:
        for arch in args.archs:
            bench_decoding(args.annotations, args.decode_segments, args.batch_size, args.max_len, args.beams,
                           args.device, args.compile, arch)
    if args.decode_and_score:
        bench_decode_and_score(args.annotations, args.batch_size, args.max_len, args.device)


if __name__ == "__main__":
    main()
