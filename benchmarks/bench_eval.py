"""Speed of evaluation: the official-protocol scorer and caption decoding.

    python benchmarks/bench_eval.py --annotations val_1.json val_2.json [--skip-gt] [--decode-segments 256]

Prints one JSON line per result:

* `score_constant`: a result file of every val_1 segment with one constant
  sentence, scored against all given files (all metrics, METEOR included,
  JVM start-up included);
* `score_ground_truth`: the val_1 sentences themselves as predictions (many more
  distinct pairs: the heavy case);
* `decode_greedy` / `decode_beam3`: segments per second of an untrained ETS with
  the reference sizes (proj/hidden/embed 512, attention 256, vocabulary 5,000,
  500-d features) on random features whose row counts follow val_1's segment
  lengths (3.75 rows/s, at most 256 rows). An untrained model rarely says
  ``<e>``, so nearly every caption runs to max_len: a worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(**kw) -> None:
    kw.setdefault("cpu", cpu_name())
    kw.setdefault("cores", os.cpu_count())
    print(json.dumps(kw), flush=True)


def bench_scoring(annotations: list[str], ground_truth: bool) -> None:
    from caption_model.densevid import evaluate_results, load_references

    refs = load_references(annotations)
    first = refs[0]
    results = {vid: [{"timestamp": ts, "sentence": s if ground_truth else "a man is standing in a room"}
                     for ts, s in zip(ann["timestamps"], ann["sentences"], strict=True)]
               for vid, ann in first.items()}
    t0 = time.perf_counter()
    scores = evaluate_results(results, references=refs)
    seconds = time.perf_counter() - t0
    emit(bench="score_ground_truth" if ground_truth else "score_constant", seconds=round(seconds, 2),
         predictions=scores["n_predictions"], reference_videos=scores["n_reference_videos"],
         pairs=scores["n_pairs"], distinct_pairs=scores["n_distinct_pairs"],
         average={k: (None if v is None else round(v, 4)) for k, v in scores["average"].items()})


def bench_decoding(annotations: list[str], n_segments: int, batch_size: int, max_len: int) -> None:
    from caption_model.decode import decode_segments
    from caption_model.densevid import load_references
    from caption_model.model import ETS

    torch.manual_seed(0)
    durations = [max(0.0, e - s) for ann in load_references(annotations[:1])[0].values()
                 for s, e in ann["timestamps"]]
    rng = np.random.default_rng(0)
    picked = rng.choice(durations, size=n_segments)
    rows = [rng.normal(size=(int(np.clip(round(d * 3.75), 1, 256)), 500)).astype(np.float32) for d in picked]
    cfg = {"proj_dim": 512, "embed_dim": 512, "hidden_dim": 512, "attn_dim": 256, "dropout": 0.5}
    model = ETS(cfg, feat_dim=500, vocab_size=5000).eval()
    for name, beam in (("decode_greedy", 1), ("decode_beam3", 3)):
        t0 = time.perf_counter()
        out = decode_segments(model, rows, beam_size=beam, max_len=max_len, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        emit(bench=name, segments=n_segments, seconds=round(seconds, 2),
             segments_per_s=round(n_segments / seconds, 2), batch_size=batch_size, max_len=max_len,
             mean_tokens=round(float(np.mean([len(d.tokens) for d in out])), 1),
             mean_rows=round(float(np.mean([len(r) for r in rows])), 1), torch_threads=torch.get_num_threads())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", nargs="+", required=True, help="val_1.json [val_2.json ...]")
    ap.add_argument("--skip-gt", action="store_true", help="skip scoring the ground truth as predictions")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--decode-segments", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=80)
    args = ap.parse_args()
    bench_scoring(args.annotations, ground_truth=False)
    if not args.skip_gt:
        bench_scoring(args.annotations, ground_truth=True)
    if not args.skip_decode:
        bench_decoding(args.annotations, args.decode_segments, args.batch_size, args.max_len)


if __name__ == "__main__":
    main()
