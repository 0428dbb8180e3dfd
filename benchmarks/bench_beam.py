"""Greedy vs beam search (and beam length normalisation): scores and caption lengths against the references.

    # a trained model on a split (e.g. the demo's held-out test split):
    python benchmarks/bench_beam.py eval --weights demo_out/checkpoints --store demo_out/features.zarr \
        --annotations demo_out/data/test.json
    # the real-shaped rehearsal: real annotations, random feature rows, a small model trained here
    python benchmarks/bench_beam.py rehearsal --train-json train_modified.json --val-json val_1.json \
        --out /tmp/rehearsal

Prints one JSON line per decoding setting (greedy; beam 3 with length_norm 0,
0.7, 1.0): the official-protocol scores of the ground-truth segments' captions
(METEOR, BLEU-4, CIDEr, ROUGE-L), the caption length distribution in words
(mean, quartiles, share of empty captions) next to the references', and the
decoding time. Rows of the rehearsal store are random, so its scores say
little about the video; its length distribution shows how each setting reacts
to a language model trained on the real captions.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

SETTINGS = (("greedy", 1, 0.0), ("beam3", 3, 0.0), ("beam3", 3, 0.7), ("beam3", 3, 1.0))


def emit(**kw) -> None:
    print(json.dumps({**kw, **machine()}), flush=True)


def _lengths(sentences) -> dict:
    from caption_model.formats.text import tokenize

    n = np.array([len(tokenize(s)) for s in sentences], dtype=np.float64)
    q = np.percentile(n, [25, 50, 75]) if len(n) else [0, 0, 0]
    return {"mean": round(float(n.mean()), 2) if len(n) else 0.0, "q25_50_75": [float(x) for x in q],
            "empty": round(float((n == 0).mean()), 4) if len(n) else 0.0}


def bench_settings(cfg: dict, weights: str, store_path: str, annotations: list[str], label: str) -> None:
    """Caption every distinct segment of the first file with each setting; score against all files."""
    from caption_model.architectures import load_model
    from caption_model.captioning import SegmentRows, caption_segments
    from caption_model.evaluate import distinct_segments
    from caption_model.scoring.densevid import evaluate_results, load_references
    from features_store import open_store

    refs = load_references(annotations)
    model, vocab, ckpt = load_model(weights, "cpu")
    segments = distinct_segments(refs[0])
    ref_sentences = [s for ann in refs[0].values() for s in ann["sentences"]]
    emit(bench="beam", split=label, setting="references", lengths=_lengths(ref_sentences), segments=len(segments))
    with open_store(store_path, "r") as store:
        ids = set(store.complete_ids())
        segments = [s for s in segments if s[0] in ids]
        for name, beam, alpha in SETTINGS:
            run_cfg = {"decode": {**cfg["decode"], "beam_size": beam, "length_norm": alpha},
                       "data": ckpt["config"]["data"]}
            t0 = time.perf_counter()
            caps = caption_segments(model, vocab, store, segments, run_cfg, model_device(model),
                                    batch_size=int(cfg["decode"]["batch_size"]), progress=False,
                                    reader=SegmentRows(store, run_cfg["data"]["max_rows"]))
            seconds = time.perf_counter() - t0
            results: dict[str, list] = {}
            for (vid, start, end), cap in zip(segments, caps, strict=True):
                results.setdefault(vid, []).append({"timestamp": [start, end], "sentence": cap["sentence"]})
            avg = evaluate_results(results, references=refs)["average"]
            emit(bench="beam", split=label, setting=name, beam_size=beam, length_norm=alpha,
                 segments=len(segments), decode_s=round(seconds, 2),
                 scores={k: None if avg[k] is None else round(avg[k], 3)
                         for k in ("METEOR", "Bleu_4", "CIDEr", "ROUGE_L")},
                 lengths=_lengths([c["sentence"] for c in caps]))


def model_device(model):
    return next(model.parameters()).device


def rehearsal(args: argparse.Namespace, cfg: dict) -> None:
    """A store of random rows for real videos (copies 1 s shorter than annotated), a small model, the table."""
    from caption_model.train import train
    from features_store import open_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train_ann = _subset(json.loads(Path(args.train_json).read_text()), args.n_train, rng)
    val_ann = _subset(json.loads(Path(args.val_json).read_text()), args.n_val, rng)
    (out / "train.json").write_text(json.dumps(train_ann))
    (out / "val.json").write_text(json.dumps(val_ann))
    store_path = str(out / "rows.zarr")
    meta = {"extractor": "c3d-sports1m", "layer": "fc7", "dim": args.dim, "clip_len": 16, "stride": 8}
    with open_store(store_path, "w", meta=meta) as store:
        for vid, ann in {**train_ann, **val_ann}.items():
            duration = max(float(ann["duration"]) - 1.0, 1.0)
            n = max(1, int((duration * 30 - 16) // 8) + 1)
            store.write_video(vid, rng.normal(size=(n, args.dim)).astype(np.float32),
                              {"fps": 30.0, "n_frames": int(duration * 30), "duration": duration})
    tcfg = copy.deepcopy(cfg)
    size = args.size
    for key, value in (("model.proj_dim", size), ("model.embed_dim", size), ("model.hidden_dim", size),
                       ("model.attn_dim", size // 2), ("data.num_workers", 0), ("data.max_rows", 32),
                       ("data.min_word_count", 2),
                       ("train.epochs", args.epochs), ("train.batch_size", 32), ("train.warmup_steps", 100),
                       ("train.val_meteor", False), ("train.device", "cpu"), ("train.save_dir", str(out / "ckpt"))):
        section, name = key.split(".")
        tcfg[section][name] = value
    t0 = time.perf_counter()
    best = train(tcfg, store_path, [str(out / "train.json")], progress=False)
    emit(bench="beam", split="rehearsal", setting="train", seconds=round(time.perf_counter() - t0, 1),
         train_videos=len(train_ann), val_videos=len(val_ann), epochs=args.epochs, size=size, feature_dim=args.dim)
    bench_settings(cfg, str(best), store_path, [str(out / "val.json")], "rehearsal")


def _subset(ann: dict, n: int, rng: np.random.Generator) -> dict:
    keys = sorted(ann)
    chosen = sorted(rng.choice(len(keys), size=min(n, len(keys)), replace=False))
    return {keys[i]: ann[keys[i]] for i in chosen}


def main() -> None:
    from etspipe.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--weights", required=True)
    e.add_argument("--store", required=True)
    e.add_argument("--annotations", nargs="+", required=True)
    e.add_argument("--config", default=None, help="config whose decode section (max_len, batch) applies")
    e.add_argument("--label", default="split")
    r = sub.add_parser("rehearsal")
    r.add_argument("--train-json", required=True)
    r.add_argument("--val-json", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--n-train", type=int, default=600)
    r.add_argument("--n-val", type=int, default=150)
    r.add_argument("--dim", type=int, default=64)
    r.add_argument("--epochs", type=int, default=5)
    r.add_argument("--size", type=int, default=128, help="proj/embed/hidden size of the small model")
    r.add_argument("--config", default=None)
    args = p.parse_args()
    cfg = load_config(args.config)
    import torch

    torch.set_num_threads(2)
    if args.mode == "eval":
        from caption_model.runs.checkpoint import find_best

        weights = str(find_best(args.weights)) if Path(args.weights).is_dir() else args.weights
        bench_settings(cfg, weights, args.store, args.annotations, args.label)
    else:
        rehearsal(args, cfg)


if __name__ == "__main__":
    main()
