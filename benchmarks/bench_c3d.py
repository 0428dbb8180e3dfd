"""Benchmark the bare C3D network: precision and layout variants, interleaved, and their features' agreement.

Prints one JSON line per result:

* ``machine``: CPU, cores, native bf16 flags (avx512_bf16 / amx_bf16 from /proc/cpuinfo),
  torch threads, load average; on CUDA the card's name.
* ``c3d``: for each batch size and each variant (``fp32`` NCDHW, ``fp32_cl`` channels-last 3-D,
  ``bf16`` / ``bf16_cl`` autocast), clips/s over ``--rounds`` rounds that interleave the variants in
  one process (a shared machine's load drifts; ratios taken in the same round hold), the ratio to
  ``fp32``, and on CUDA the peak GPU memory. CUDA times come from CUDA events, CPU times from the clock.
* ``agreement``: each variant's rows against ``fp32`` on the same clips: cosine similarity per row
  (min, mean; target >= 0.999) and, a check that needs no trained captioner, whether each row's
  nearest neighbour among the other rows after a PCA fitted on the fp32 rows is the same one.
* ``extractor`` (``--extractor``): `Extractor.forward` (uint8 clips in, rows on the host out)
  against the bare network at the same batch size and precision: what the transform and copies cost.

Clips are real-looking rather than noise: 1/f-spectrum textures (the spectrum of natural images)
panned like a camera, with a moving blurred object, a few scenes with clips at several times, so
rows of the same scene are near neighbours. ``--video`` takes clips from a real file instead.

    .venv/bin/python benchmarks/bench_c3d.py [--device cpu|cuda] [--width 1.0] [--batches 4]
        [--variants fp32,fp32_cl,bf16,bf16_cl] [--clips 8] [--rounds 2] [--extractor]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from machine import load, machine  # benchmarks/machine.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

VARIANTS = ("fp32", "fp32_cl", "bf16", "bf16_cl")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def natural_clips(n: int, scenes: int = 4, seed: int = 0) -> np.ndarray:
    """(n, 16, 112, 112, 3) uint8 clips: panned 1/f textures with a moving blurred disc, `scenes` scenes."""
    rng = np.random.default_rng(seed)
    h, w = 192, 256
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    yy, xx = np.mgrid[0:112, 0:112]
    out = np.empty((n, 16, 112, 112, 3), dtype=np.uint8)
    textures = []
    for _ in range(scenes):
        chans = [np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((h, w))))) for _ in range(3)]
        tex = np.stack(chans, -1)
        tex = (tex - tex.mean()) / tex.std() * 40 + rng.uniform(80, 170, 3)
        textures.append((tex, rng.uniform(-3, 3, 2), rng.uniform(0, 255, 3)))
    for i in range(n):
        tex, (vy, vx), colour = textures[i % scenes]
        t0 = 8 * (i // scenes)
        for f in range(16):
            t = t0 + f
            y0, x0 = int(40 + vy * t) % (h - 112), int(60 + vx * t) % (w - 112)
            img = tex[y0:y0 + 112, x0:x0 + 112].copy()
            cy, cx = 56 + 35 * np.sin(t / 9), 56 + 35 * np.cos(t / 7)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2))[..., None]
            img = img * (1 - blob) + colour * blob + rng.normal(0, 2, img.shape)
            out[i, f] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def video_clips(path: str, n: int) -> np.ndarray:
    from extract_features.clips import ClipStream, frame_positions
    from extract_features.video_reader import open_video

    reader = open_video(path, (128, 171), "auto", threads=1)
    positions = frame_positions(reader.info.n_frames, reader.info.fps, None)
    clips = [c for _, c in ClipStream(reader, positions, 16, 8, 112, chunk_clips=8)]
    reader.close()
    take = np.linspace(0, len(clips) - 1, min(n, len(clips))).astype(int)
    return np.stack([clips[i] for i in take])


class Variant:
    """One way to run the net: a model copy in its layout and an autocast dtype (None: fp32)."""

    def __init__(self, name: str, width: float, device, torch):
        from extract_features.c3d import C3DInput, build_c3d

        self.name, self.torch, self.device = name, torch, device
        self.channels_last = name.endswith("_cl")
        self.amp = torch.bfloat16 if name.startswith("bf16") else None
        model = build_c3d("fc7", width).to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.transform = C3DInput(channels_last=self.channels_last)

    def run(self, x_uint8) -> object:
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                     enabled=self.amp is not None):
            return self.model(self.transform(x_uint8)).float()


def timed(fn, device, torch) -> float:
    """Seconds of `fn()`: CUDA events on a GPU (no host clock around async work), the clock on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def agreement(ref: np.ndarray, other: np.ndarray) -> dict:
    """Cosine per row, and nearest neighbours agreeing after a PCA fitted on `ref`."""
    cos = (ref * other).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1), 1e-12)
    mean = ref.mean(0)
    k = max(1, min(32, ref.shape[0] - 1))
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    pa, pb = (ref - mean) @ vt[:k].T, (other - mean) @ vt[:k].T

    def nn(p: np.ndarray) -> np.ndarray:
        d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return d.argmin(1)

    return {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
            "pca_dims": k, "nn_agree": round(float((nn(pa) == nn(pb)).mean()), 4)}


def bench_batch(variants: list[Variant], clips_dev, batch: int, rounds: int, device, torch) -> list[dict]:
    n = clips_dev.shape[0]
    times = {v.name: [] for v in variants}
    peaks = {}
    for v in variants:  # warm-up (and cudnn.benchmark's tuning) outside the timed rounds
        v.run(clips_dev[:batch])
    for _ in range(rounds):
        for v in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            secs = sum(timed(lambda s=s, v=v: v.run(clips_dev[s:s + batch]), device, torch)
                       for s in range(0, n - batch + 1, batch))
            times[v.name].append((n // batch) * batch / secs)
            if device.type == "cuda":
                peaks[v.name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    base = statistics.median(times[variants[0].name])
    out = []
    for v in variants:
        med = statistics.median(times[v.name])
        rec = {"bench": "c3d", "variant": v.name, "batch": batch, "clips_per_s": round(med, 3),
               "rounds": [round(t, 3) for t in times[v.name]], f"ratio_to_{variants[0].name}": round(med / base, 3)}
        if v.name in peaks:
            rec["peak_gpu_mib"] = peaks[v.name]
        out.append(rec | load())
    return out


def bench_extractor(width: float, batch: int, clips: np.ndarray, device, torch, precision: str) -> dict:
    from extract_features.options import ExtractOptions
    from extract_features.runner import make_extractor

    opts = ExtractOptions(width_mult=width, precision=precision, device=device.type)
    ex = make_extractor(opts, device=device, warn=False)
    amp = opts.autocast_dtype(device)
    bare = Variant(("bf16" if amp is not None else "fp32") + ("_cl" if ex.transform.channels_last else ""),
                   width, device, torch)
    xb = torch.from_numpy(clips[:batch]).to(device)
    ex.forward(clips[:batch])
    bare.run(xb)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rates = {"extractor": [], "bare": []}
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        ex.forward(clips[:batch])  # uint8 on the host in, float32 rows on the host out
        rates["extractor"].append(batch / (time.perf_counter() - t0))
        rates["bare"].append(batch / timed(lambda: bare.run(xb), device, torch))
    e, b = statistics.median(rates["extractor"]), statistics.median(rates["bare"])
    return {"bench": "extractor", "precision": precision, "variant": bare.name, "batch": batch,
            "extractor_clips_per_s": round(e, 3), "bare_clips_per_s": round(b, 3), "ratio": round(e / b, 3)} | load()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--width", type=float, default=1.0, help="width_mult (1.0 is the real network)")
    ap.add_argument("--batches", type=int, nargs="+", default=[4])
    ap.add_argument("--variants", default="fp32,fp32_cl,bf16,bf16_cl")
    ap.add_argument("--clips", type=int, default=8, help="clips per round and for the agreement (>= the batch)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (0: torch's default)")
    ap.add_argument("--video", default=None, help="take the clips from this video instead of generating them")
    ap.add_argument("--extractor", action="store_true", help="also Extractor.forward vs the bare net")
    args = ap.parse_args()
    import torch

    from etspipe.devices import cpu_has_native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine() | {"native_bf16": cpu_has_native_bf16(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "cpu_capability":
                        torch.backends.cpu.get_cpu_capability(), "pid": os.getpid()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    emit({"bench": "machine", **info} | load())
    n = max(args.clips, max(args.batches))
    clips = video_clips(args.video, n) if args.video else natural_clips(n)
    clips_dev = torch.from_numpy(clips).to(device)
    names = [v for v in args.variants.split(",") if v]
    variants = [Variant(v, args.width, device, torch) for v in names]
    rows = {v.name: v.run(clips_dev).cpu().numpy() for v in variants}  # also the first warm-up
    for v in variants[1:]:
        emit({"bench": "agreement", "variant": v.name, "against": variants[0].name, "width": args.width,
              "clips": n, "source": args.video or "natural_clips"} | agreement(rows[variants[0].name], rows[v.name]))
    for batch in args.batches:
        for rec in bench_batch(variants, clips_dev, batch, args.rounds, device, torch):
            emit(rec | {"width": args.width, "device": args.device})
    if args.extractor:
        for precision in ("fp32", "auto"):
            emit(bench_extractor(args.width, max(args.batches), clips, device, torch, precision))


if __name__ == "__main__":
    main()
