"""Event proposals: learned (boundary matching, SST) against sliding windows and random segments; speed.

Part 1, quality (``--demo DIR``): the demo data set (generated with the demo's
own stage functions and extracted with configs/demo.yaml when DIR has no
``features.zarr`` yet). The proposal model trains on the demo train split
(configs/ets.yaml's `proposals` section over demo.yaml), then on the test
split the learned proposals, multi-scale sliding windows and random segments
are compared with the same number of proposals per video (the learned model's
count for that video): AR@1/5/10/100, AUC, recall at tIoU 0.5 and 0.7 with 10.
Both learned models (``proposals.model`` bmn and sst) and SST as published
(forward-only GRU, fixed anchors) are trained and measured; the baselines get
as many proposals per video as the configured default model gives.
One JSON line per method; the AR-AN curves go to ``<out>/bench_proposals_ar_an.png``.

Part 2, speed (``--anet train_modified.json``): an ActivityNet-shaped store,
built once, of ``--anet-videos`` real training videos (their durations, 30 fps,
one 500-d random row per 8 frames) and their real timestamps; one training
epoch is timed and scaled to all videos of the file, and proposals are timed
per video on the full-length rows, for each of ``--models`` (sst and bmn) one
after the other in the same run. One JSON line per model, with the load average.

Example:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_proposals.py --demo /tmp/demo \\
        --anet ../shared/data/activitynet_captions/train_modified.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model  # benchmarks/machine.py (the script folder is on sys.path)

from caption_model.proposals.baselines import random_segments, sliding_windows
from caption_model.proposals.bm_model import bm_candidates
from caption_model.proposals.data import training_window
from caption_model.proposals.evaluate import ground_truth, propose_for
from caption_model.proposals.infer import Proposer
from caption_model.proposals.model import proposals_from_scores, rank_segments, row_edges
from caption_model.proposals.train import train_proposals
from caption_model.scoring.proposal_metrics import ar_an, plot_ar_an, summary
from etspipe.config import load_config

FPS, CLIP_LEN, STRIDE, DIM = 30.0, 16, 8, 500


def demo_store(demo_dir: Path, cfg: dict) -> dict:
    """The demo videos, annotations and features (made once with the demo's own stage functions)."""
    from etspipe_demo.dataset import generate_demo_dataset
    from extract_features import extract_corpus

    data = generate_demo_dataset(demo_dir / "data", progress=False, workers=1, n_videos=450)
    store = demo_dir / "features.zarr"
    if not store.exists():
        extract_corpus([str(data["videos_dir"])], str(store), cfg, progress=False)
    return {"store": str(store), "train": str(data["train"]), "test": str(data["test"])}


def _figures(name: str, gt: dict, props: dict) -> dict:
    return {"benchmark": "proposals", "method": name,
            **{k: round(v, 4) for k, v in summary(gt, props).items()}}


def quality(demo_dir: Path, out_dir: Path, epochs: int | None) -> list[dict]:
    """Part 1: learned (ours, SST) vs sliding windows vs random on the demo test split."""
    from etspipe_demo.run import DEMO_CONFIG
    from features_store import open_store

    cfg = load_config(DEMO_CONFIG)
    paths = demo_store(demo_dir, cfg)
    gt = ground_truth([paths["test"]])
    curves, lines, learned = {}, [], {}
    variants = (("learned (bmn)", {"model": "bmn"}), ("learned (sst)", {"model": "sst"}),
                ("SST as published", {"model": "sst", "bidirectional": False, "regress_boundaries": False}))
    base = dict(cfg["proposals"])
    for name, change in variants:
        cfg["proposals"] = {**base, **change}
        if epochs:
            cfg["proposals"]["epochs"] = epochs
        t0 = time.perf_counter()
        run = train_proposals(cfg, paths["store"], [paths["train"]],
                              save_dir=out_dir / f"run_{name.replace(' ', '_').strip('()')}", progress=False)
        train_s = time.perf_counter() - t0
        with open_store(paths["store"]) as store:
            props, _ = propose_for(Proposer.load(run.best_path), store, sorted(gt), cfg["proposals"])
        curves[name] = ar_an(gt, props)
        lines.append({**_figures(name, gt, props), "train_seconds": round(train_s, 1),
                      "epochs": cfg["proposals"]["epochs"], **({"anchors": run.anchors.tolist()}
                                                                 if change["model"] == "sst" else {})})
        if change["model"] == base.get("model", "sst") and not learned:
            learned = props  # the baselines get as many proposals per video as the default model gives
    with open_store(paths["store"]) as store:
        durations = {v: float(store.video_meta(v)["duration"]) for v in gt}
    counts = {v: len(learned.get(v, [])) for v in gt}
    baselines = {"sliding windows": {v: sliding_windows(durations[v], counts[v]) for v in gt},
                 "random": {v: random_segments(durations[v], counts[v], 0, v) for v in gt}}
    for name, props in baselines.items():
        curves[name] = ar_an(gt, props)
        lines.append(_figures(name, gt, props))
    plot_ar_an(curves, out_dir / "bench_proposals_ar_an.png", title="demo test split")
    default = next(line for line, (_, change) in zip(lines, variants, strict=False)
                   if change["model"] == base.get("model", "sst"))
    ratio = default["AR@10"] / max(lines[len(variants)]["AR@10"], 1e-9)
    lines.append({"benchmark": "proposals", "targets": {
        "AR@10 learned / sliding": round(ratio, 2), "AR@10 ratio >= 1.5": ratio >= 1.5,
        "R@0.5_10 >= 0.85": default["R@0.5_10"] >= 0.85, "default model": base.get("model", "sst")}, "videos": len(gt),
        "plot": str(out_dir / "bench_proposals_ar_an.png")})
    return lines


def anet_store(path: Path, annotation: str, n_videos: int, sub_ann: Path) -> dict:
    """Random 500-d rows over the real durations of the first `n_videos` videos; their annotations beside it."""
    from features_store import open_store

    data = json.loads(Path(annotation).read_text(encoding="utf-8"))
    chosen = dict(list(data.items())[:n_videos])
    sub_ann.write_text(json.dumps(chosen), encoding="utf-8")
    if path.exists():
        return chosen
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((200_000, DIM), dtype=np.float32).astype(np.float16)
    meta = {"extractor": "random", "layer": "fc7", "dim": DIM, "clip_len": CLIP_LEN, "stride": STRIDE,
            "dtype": "float16"}
    with open_store(str(path), "w", meta=meta) as store:
        for vid, entry in chosen.items():
            n = max(int((float(entry["duration"]) * FPS - CLIP_LEN) // STRIDE) + 1, 1)
            start = int(rng.integers(0, len(pool) - n))
            store.write_video(vid, pool[start:start + n], {"fps": FPS, "duration": float(entry["duration"]),
                                                           "n_frames": int(float(entry["duration"]) * FPS)})
    return chosen


def _parts_sst(proposer: Proposer, feats: np.ndarray, edges: np.ndarray, pcfg: dict) -> tuple[float, float]:
    t1 = time.perf_counter()
    probs, offsets = proposer.scores(feats)
    t2 = time.perf_counter()
    proposals_from_scores(probs, edges, proposer.anchors, float(pcfg["nms_tiou"]), int(pcfg["max_proposals"]),
                          offsets, pcfg.get("nms_sigma"))
    return t2 - t1, time.perf_counter() - t2


def _parts_bmn(proposer: Proposer, rows: np.ndarray, edges: np.ndarray, pcfg: dict) -> tuple[float, float]:
    t1 = time.perf_counter()
    segs, scores = bm_candidates(proposer.net, rows, edges, pcfg, proposer.device)
    t2 = time.perf_counter()
    rank_segments(segs, scores, float(pcfg["nms_tiou"]), int(pcfg["max_proposals"]), pcfg.get("nms_sigma"))
    return t2 - t1, time.perf_counter() - t2


def speed(annotation: str, n_videos: int, work: Path, n_propose: int, model: str) -> dict:
    """Part 2: training seconds per epoch (scaled to the whole file) and proposal seconds per video."""
    from features_store import open_store

    store = work / f"anet_{n_videos}.zarr"
    chosen = anet_store(store, annotation, n_videos, work / "anet_subset.json")
    total_videos = len(json.loads(Path(annotation).read_text(encoding="utf-8")))
    cfg = load_config(None, ["proposals.epochs=1", "proposals.valid_interval=0", "data.val_fraction=0.0",
                             "proposals.device=cpu", "data.num_workers=0", f"proposals.model={model}"])
    run = train_proposals(cfg, str(store), [str(work / "anet_subset.json")], save_dir=work / f"anet_run_{model}",
                          progress=False)
    per_video = run.timing["train_s"] / len(chosen)
    proposer = Proposer.load(run.last_path)
    vids = list(chosen)[:n_propose]
    pcfg = cfg["proposals"]
    parts = {"read": 0.0, "network": 0.0, "segments_and_nms": 0.0}
    with open_store(str(store)) as s:
        rows = [s.video_meta(v)["n_rows"] for v in vids]
        t0 = time.perf_counter()
        for v in vids:
            proposer.propose_with(s, v, pcfg)
        propose_s = (time.perf_counter() - t0) / len(vids)
        for v in vids:  # the same work again, step by step: where a video's proposing time goes
            t = time.perf_counter()
            meta, times, feats = s.video_meta(v), s.row_times(v), s.rows(v)
            parts["read"] += time.perf_counter() - t
            edges = row_edges(times, float(meta["duration"]))
            network, rest = (_parts_bmn if model == "bmn" else _parts_sst)(proposer, feats, edges, pcfg)
            parts["network"] += network
            parts["segments_and_nms"] += rest
    shape = ({"bm_positions": pcfg["bm_positions"], "cell_lengths": len(proposer.net.lengths)} if model == "bmn"
             else {"anchors": run.anchors.tolist(), "window_rows": pcfg["window_rows"],
                   "training_window_rows": training_window(int(pcfg["window_rows"]), run.anchors)})
    return {"benchmark": "proposals_speed", "model": model, "train_videos_timed": len(chosen),
            "train_seconds_per_epoch": round(per_video * total_videos, 1),
            "train_seconds_per_video_epoch": round(per_video, 4),
            "epoch_measured": f"extrapolated from {len(chosen)} of {total_videos} videos",
            "proposal_seconds_per_video": round(propose_s, 4),
            "proposal_seconds_per_video_by_part": {k: round(v / len(vids), 4) for k, v in parts.items()},
            "proposal_videos_timed": len(vids), "mean_rows_per_video": round(float(np.mean(rows)), 1),
            **shape, "hidden_dim": pcfg["hidden_dim"], "nms_sigma": pcfg.get("nms_sigma")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default=None, help="demo folder (made when empty); part 1 runs when given")
    ap.add_argument("--anet", default=None, help="ActivityNet train_modified.json; part 2 runs when given")
    ap.add_argument("--anet-videos", type=int, default=500, help="videos in the ActivityNet-shaped store")
    ap.add_argument("--propose-videos", type=int, default=100, help="videos whose proposals are timed")
    ap.add_argument("--epochs", type=int, default=None, help="proposal epochs on the demo (default: config)")
    ap.add_argument("--out", default=None, help="work/output folder (default under the temp dir)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--models", nargs="+", default=["sst", "bmn"], choices=["sst", "bmn"],
                    help="proposal models whose speed part 2 measures, one after the other in one run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or Path(tempfile.gettempdir()) / "etspipe_bench_proposals")
    out.mkdir(parents=True, exist_ok=True)
    where = {"machine": cpu_model(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    lines = quality(Path(args.demo), out, args.epochs) if args.demo else []
    if args.anet:
        lines += [speed(args.anet, args.anet_videos, out, args.propose_videos, model) for model in args.models]
    for line in lines:
        print(json.dumps({**line, **where, "load_average": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
