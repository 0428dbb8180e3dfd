"""Training speed and memory of a captioner at its reference sizes: etspipe's ETS or the seed's network.

Builds (once, then reuses) an ActivityNet-shaped feature store with random
rows over each annotated video's real duration — for `--arch ets` 500-d rows, one per 8 frames at
30 fps (ActivityNet's C3D layout), for `--arch paddle_ets` 2048-d rows at 5 per second (the
ResNet-152 frame features the seed trains on, every row of a segment) — and runs the real training
entry point (`caption_model.train.fit`) on it with configs/ets.yaml's (or configs/paddle_ets.yaml's)
settings. Prints one JSON line:

    segments_per_s, tokens_per_s, peak_rss_gib (this process + its DataLoader
    workers, proportional set size so shared pages count once), epoch_seconds
    (one pass over all annotated segments) and `epoch_measured`: "full" or
    "extrapolated" from `steps` steps (--steps, at least 300 for the record);
    achieved_gflops (the model's FLOPs of the steps run, from the batch shapes:
    see `step_flops`) over `matmul_peak_gflops` (a 2048^2 product in the dtype
    the run used, measured in this process before and after, the best kept),
    and the load average: on a shared machine the ratio is the figure to compare. For paddle_ets the
    FLOPs are those of the real rows (padding the encoder computes on is not counted).

The store is kept for the next run (its path and size are printed); the run folder is removed.

Example:
    .venv/bin/python benchmarks/bench_train.py \\
        --annotations ../shared/data/activitynet_captions/train_modified.json
    .venv/bin/python benchmarks/bench_train.py --arch paddle_ets --store-videos 600 --steps 12 \
        --annotations ../shared/data/activitynet_captions/train_modified.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from machine import cpu_model, load, matmul_peak_gflops  # benchmarks/machine.py (the script folder is on sys.path)

from caption_model.formats.annotations import load_annotations
from caption_model.train import fit
from etspipe.config import load_config

FPS, CLIP_LEN, STRIDE, DIM = 30.0, 16, 8, 500
LAYOUTS = {"ets": (30.0, 16, 8, 500), "paddle_ets": (5.0, 1, 1, 2048)}  # fps, clip_len, stride, dim


def step_flops(model_cfg: dict, feat_dim: int, vocab: int, timing: dict) -> float:
    """Forward + backward FLOPs (3 x forward, matrix products and attention) of the steps in `timing`.

    Per padded row: the projection and the attention keys (and the BiLSTM when
    on); per segment: h_0, c_0; per target word: the attention (W h, then over
    every row of its batch w tanh(...) and the context), the LSTM cell, the deep
    output and the vocabulary projection. Elementwise work is not counted.
    """
    P, E, H, A = (int(model_cfg[k]) for k in ("proj_dim", "embed_dim", "hidden_dim", "attn_dim"))
    per_row = 2 * feat_dim * P + 2 * P * A
    if model_cfg["encoder"] == "bilstm":
        per_row += 2 * 2 * 4 * (P // 2) * (P + P // 2)
    per_word = 2 * H * A + 2 * (P + H + E) * 4 * H + 2 * (H + P + E) * E + 2 * E * vocab
    per_word_row = 2 * A + 2 * P  # w^T tanh(.) and the context, per word and row
    forward = (timing["rows"] * per_row + timing["segments"] * 2 * 2 * P * H + timing["tokens"] * per_word
               + timing["token_rows"] * per_word_row)
    return 3.0 * forward


def paddle_step_flops(model_cfg: dict, feat_dim: int, vocab: int, timing: dict) -> float:
    """Forward + backward FLOPs (3 x forward) of the seed's network over the REAL rows of the steps run.

    Per row: the input layer, both GRUs' input projections and recurrences (3 G^2 each), the pooling
    and attention scores, the key projection, the pooled sum and the context; per segment: the boot
    state and the context's decoder input; per target word: the word input, the GRU unit, the output
    layer over Paddle's V - 1 words.
    """
    P, G, H, E = (int(model_cfg[k]) for k in ("proj_dim", "gru_dim", "hidden_dim", "embed_dim"))
    per_row = 2 * feat_dim * P + 2 * 2 * P * 3 * G + 2 * 2 * 3 * G * G + 2 * 2 * G * (H + 1) + 2 * H + 2 * 2 * 2 * G
    per_segment = 2 * 2 * G * H + 2 * 2 * G * 3 * H
    per_word = 2 * E * 3 * H + 2 * 3 * H * H + 2 * H * (vocab - 1)
    forward = timing["real_rows"] * per_row + timing["segments"] * per_segment + timing["tokens"] * per_word
    return 3.0 * forward


def build_store(path: Path, annotation_paths: list[str], seed: int = 0, arch: str = "ets") -> dict:
    """One random-featured video per annotated video; rows from the real duration in the arch's layout."""
    from features_store import open_store

    fps, clip_len, stride, dim = LAYOUTS[arch]
    segments, _ = load_annotations(annotation_paths)
    durations = {s.video_id: s.duration for s in segments}
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((200_000 if dim <= 512 else 40_000, dim), dtype=np.float32).astype(np.float16)
    meta = {"extractor": "random", "layer": "fc7", "dim": dim, "clip_len": clip_len, "stride": stride,
            "dtype": "float16", "weights": "untrained", "pca": None}
    t0, rows_total = time.perf_counter(), 0
    with open_store(str(path), "w", meta=meta) as store:
        for vid, duration in durations.items():
            n = max(int((duration * fps - clip_len) // stride) + 1, 1)
            if n >= len(pool):
                rows = np.concatenate([pool] * (n // len(pool) + 1))[:n]
            else:
                start = int(rng.integers(0, len(pool) - n))
                rows = pool[start: start + n]
            store.write_video(vid, rows, {"source": f"{vid}.mp4", "fps": fps, "n_frames": int(duration * fps),
                                          "duration": duration, "clip_len": clip_len, "stride": stride})
            rows_total += n
    return {"videos": len(durations), "rows": rows_total, "build_seconds": round(time.perf_counter() - t0, 1)}


def first_videos(annotation_paths: list[str], n: int, folder: Path) -> Path:
    """An annotation file with the first `n` videos of the given files (same segment statistics, smaller store)."""
    merged: dict = {}
    for path in annotation_paths:
        merged.update(json.loads(Path(path).read_text(encoding="utf-8")))
    out = folder / f"first_{n}_videos.json"
    folder.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(list(merged.items())[:n])), encoding="utf-8")
    return out


class PeakMemory:
    """Samples the proportional set size of this process and its children (DataLoader workers)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", nargs="+", required=True, help="ActivityNet Captions training JSON(s)")
    ap.add_argument("--store", default=None, help="store to build/reuse (default: a folder under the temp dir)")
    ap.add_argument("--store-videos", type=int, default=0,
                    help="train on the first N annotated videos only (a smaller store to build on a busy machine); "
                         "epoch_seconds is still extrapolated to all annotated segments")
    ap.add_argument("--steps", type=int, default=300, help="steps to time; 0 = one full epoch")
    ap.add_argument("--arch", default="ets", choices=["ets", "paddle_ets"],
                    help="ets: configs/ets.yaml on 500-d C3D rows; "
                         "paddle_ets: configs/paddle_ets.yaml on 2048-d 5 fps rows")
    ap.add_argument("--batch-size", type=int, default=None, help="segments per step (default: the arch's config)")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: data.num_workers)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--encoder", default=None, choices=["linear", "bilstm"], help="model.encoder (default: config)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    segments, _ = load_annotations(args.annotations)
    train_files = list(args.annotations)
    tag = "" if args.arch == "ets" else "_5fps_2048"
    default = Path(tempfile.gettempdir()) / "etspipe_bench_train" / (
        f"store{tag}_{args.store_videos}.zarr" if args.store_videos else f"store{tag}.zarr")
    store = Path(args.store or default)
    if args.store_videos:
        train_files = [str(first_videos(args.annotations, args.store_videos, store.parent))]
    built = None
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        built = build_store(store, train_files, arch=args.arch)
        logging.info("built %s: %s", store, built)

    run_dir = Path(tempfile.mkdtemp(prefix="bench_train_run_"))
    overrides = ["train.epochs=1", "data.val_fraction=0.0", "train.log_interval=10", f"train.save_dir={run_dir}",
                 f"train.device={args.device}"] + ([f"train.batch_size={args.batch_size}"] if args.batch_size else [])
    if args.num_workers is not None:
        overrides.append(f"data.num_workers={args.num_workers}")
    if args.encoder:
        overrides.append(f"model.encoder={args.encoder}")
    config_file = Path(__file__).resolve().parent.parent / "configs" / "paddle_ets.yaml" if args.arch != "ets" else None
    cfg = load_config(config_file, overrides)
    dim = LAYOUTS[args.arch][3]
    cfg["train"]["max_steps"] = args.steps
    cfg["train"]["precision"] = args.precision
    from caption_model.runs.distributed import DistInfo, resolve_device
    from caption_model.runs.precision import uses_bf16

    device_name = resolve_device(args.device, DistInfo())
    bf16 = uses_bf16(device_name, args.precision)
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak_gflops(peak_dtype, device_name.type)
    try:
        with PeakMemory() as mem:
            result = fit(cfg, str(store), train_files, progress=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # the run is throw-away; the store is kept for the next run
    peak = max(peak, matmul_peak_gflops(peak_dtype, device_name.type))
    t = result.timing
    flops = (paddle_step_flops if args.arch == "paddle_ets" else step_flops)(cfg["model"], dim, len(result.vocab), t)
    achieved = flops / t["train_s"] / 1e9
    seg_per_s = t["segments"] / t["train_s"]
    full = args.steps == 0 or t["segments"] >= len(segments)
    device = "cuda: " + torch.cuda.get_device_name() if next(result.model.parameters()).is_cuda else "cpu"
    out = {
        "benchmark": "train",
        "machine": cpu_model(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
        "arch": args.arch, "precision": args.precision, "autocast_bf16": bf16,
        "batch_size": cfg["train"]["batch_size"], "max_batch_rows": cfg["train"]["max_batch_rows"],
        "num_workers": cfg["data"]["num_workers"],
        "model": {k: cfg["model"][k] for k in ("arch", "encoder", "attention", "proj_dim", "embed_dim", "hidden_dim",
                                                "attn_dim", "gru_dim")},
        "rows_per_segment": round(t["real_rows"] / max(t["segments"], 1), 1),
        "padded_row_share": round(1 - t["real_rows"] / max(t["rows"], 1), 3),
        "vocab": len(result.vocab), "epoch_segments": len(segments),
        "steps": t["steps"], "segments_per_s": round(seg_per_s, 1), "tokens_per_s": round(t["tokens"] / t["train_s"]),
        "seconds_per_step": round(t["train_s"] / max(t["steps"], 1), 3),
        "data_wait_share": round(t["data_s"] / t["train_s"], 3),  # share of the step spent waiting for rows
        "epoch_seconds": round(t["train_s"] if full else len(segments) / seg_per_s, 1),
        "epoch_measured": "full" if full else f"extrapolated from {t['steps']} steps",
        "setup_seconds": round(t["setup_s"], 1), "peak_rss_gib": round(mem.peak / 2**30, 2),
        "achieved_gflops": round(achieved, 1), "matmul_peak_gflops": round(peak, 1),
        "ratio_to_peak": round(achieved / peak, 3), "gflop_per_step": round(flops / max(t["steps"], 1) / 1e9, 1),
        "store": str(store),
        "store_gib": round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30, 2),
        **load(),
    }
    if built:
        out["store_build"] = built
    print(json.dumps(out))


if __name__ == "__main__":
    main()
