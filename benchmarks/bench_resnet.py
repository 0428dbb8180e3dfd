"""Benchmark ActivityNet's ResNet-152 frame recipe: whole extraction vs the bare network, and decoding.

Prints one JSON line per result:

* ``machine``: CPU, cores, torch threads, load average.
* ``throughput`` (one per ``--widths``): frames/s of the extraction pipeline
  (`runner.run_pipeline`: decoding the kept frames in a decoder thread, batching,
  the network, writing each video into a Zarr store) on a generated ``--seconds`` s
  320x240 video at ``--fps``, beside frames/s of the bare network (input transform
  + forward, same batch size, same network) on the same frames, pre-decoded, in the
  same process. The two run in the order bare, pipeline, pipeline, bare, so a
  steady drift of the load of a shared machine hits both alike; ``ratio`` is
  pipeline / bare (goal >= 0.9), ``ratio_cpu`` the same from CPU seconds per frame
  (every thread of the process, decoding included). Then the whole command's work,
  `extract_corpus(recipe="activitynet-resnet152")` from a fresh network (build,
  store, pipeline): ``whole_extraction_fps`` and its ratio to the bare network,
  which the network's build (``build_s``, once per run) weighs on for a short video.
  Untrained weights, full depth; width 1.0 is the real network, a narrower one
  stresses the pipeline (decoding weighs more).
* ``decode``: seconds to read the kept frames (1 in 6 at 30 fps) by index through
  `DecordReader.read` against reading every frame and keeping 1 in 6, on the
  benchmark video and on a 1280x720 one (``--hd-seconds``): why the runner asks
  the reader for the kept frames only.

    .venv/bin/python benchmarks/bench_resnet.py [--seconds 20] [--widths 1.0 0.25] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import load, machine  # benchmarks/machine.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """A video with camera-like motion (a panned 1/f texture, a moving disc), cheap to generate."""
    from etspipe_demo.mp4 import write_mp4

    h, w = size
    rng = np.random.default_rng(0)
    th, tw = h + 64, w + 256
    fy, fx = np.fft.fftfreq(th)[:, None], np.fft.fftfreq(tw)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(th, tw))
    tex = np.stack([np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((th, tw))))) for _ in range(3)], -1)
    tex = np.clip((tex - tex.mean()) / tex.std() * 40 + 120, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    n = int(round(seconds * fps))

    def frames():
        for i in range(n):
            x0 = int(128 + 100 * np.sin(i / 40))
            img = tex[32 : 32 + h, x0 : x0 + w].copy()
            cy, cx = h / 2 + h / 3 * np.sin(i / 23), w / 2 + w / 3 * np.cos(i / 31)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (h / 8) ** 2
            img[disc] = (230, 200, 40)
            yield img

    write_mp4(path, frames(), fps, crf=23, preset="ultrafast")
    return path


def kept_frames(video: Path) -> np.ndarray:
    from extract_features.fps_filter import fps_filter_positions
    from extract_features.resnet_recipe import FRAME_SIZE
    from extract_features.video_reader import open_video

    reader = open_video(video, FRAME_SIZE)
    frames = reader.read(fps_filter_positions(reader.info.n_frames, reader.info.fps, 5.0))
    reader.close()
    return frames[:, None]  # one-frame clips, as the runner batches them


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = _clock()
    return t1[0] - t0[0], t1[1] - t0[1]


def bare_run(extractor, frames: np.ndarray, batch: int) -> tuple[float, float]:
    """(wall, CPU) seconds of transform + forward over `frames` in batches of `batch`."""
    import torch

    model, transform = extractor.model, extractor.transform
    t0 = _clock()
    with torch.inference_mode():
        for s in range(0, len(frames), batch):
            model(transform(torch.from_numpy(frames[s : s + batch])))
    return _since(t0)


def pipeline_run(extractor, video: Path, store, video_id: str, batch: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the runner on `video`, its rows written into `store`."""
    from extract_features.runner import run_pipeline

    def failed(vid: str, reason: str, detail: str) -> None:
        raise RuntimeError(f"{vid} failed: {reason} {detail}")

    t0 = _clock()
    counts = run_pipeline([(video_id, video)], extractor, store.write_video, failed, progress=False,
                          batch_size=batch, decode_workers=1)
    assert counts["done"] == 1, counts
    return _since(t0)


def bench_throughput(video: Path, width: float, batch: int, workdir: Path) -> dict:
    import torch

    from etspipe.config import load_config
    from extract_features import extract_corpus
    from extract_features.resnet_recipe import RECIPE_CHOICE, resnet_options, store_meta
    from extract_features.runner import make_extractor
    from features_store import open_store

    cfg = load_config(None, [f"extract.width_mult={width}", f"extract.batch_size={batch}", "extract.device=cpu",
                             "store.durable=false"])
    opts = resnet_options(cfg)
    frames = kept_frames(video)
    n = len(frames)
    t0 = _clock()
    extractor = make_extractor(opts, warn=False)
    build = _since(t0)
    with torch.inference_mode():  # warm-up (oneDNN's first call builds its kernels)
        extractor.model(extractor.transform(torch.from_numpy(frames[:batch])))
    load_before = load()
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "pipeline": []}
    with open_store(str(workdir / f"p{width}.zarr"), "w", meta=store_meta(opts, "untrained"), durable=False) as store:
        for k, kind in enumerate(("bare", "pipeline", "pipeline", "bare")):
            runs[kind].append(bare_run(extractor, frames, batch) if kind == "bare"
                              else pipeline_run(extractor, video, store, f"v_{k}", batch))
    t0 = _clock()
    summary = extract_corpus([str(video)], str(workdir / f"r{width}.zarr"), cfg, recipe=RECIPE_CHOICE,
                             overwrite=True, progress=False)
    whole = _since(t0)
    assert summary["done"] == 1, summary

    def rate(kind: str) -> float:
        return 2 * n / sum(w for w, _ in runs[kind])

    def cpu(kind: str) -> float:
        return sum(c for _, c in runs[kind]) / (2 * n)

    bare, pipe = rate("bare"), rate("pipeline")
    return {"bench": "throughput", "width": width, "batch": batch, "frames": n, "video": "320x240 30 fps",
            "pipeline_fps": round(pipe, 3), "bare_network_fps": round(bare, 3), "ratio": round(pipe / bare, 3),
            "cpu_s_per_frame_pipeline": round(cpu("pipeline"), 3), "cpu_s_per_frame_bare": round(cpu("bare"), 3),
            "ratio_cpu": round(cpu("bare") / cpu("pipeline"), 3),
            "runs_fps": {k: [round(n / w, 3) for w, _ in v] for k, v in runs.items()},
            "whole_extraction_fps": round(n / whole[0], 3), "whole_ratio": round(n / whole[0] / bare, 3),
            "whole_seconds": round(whole[0], 1), "build_s": round(build[0], 2),
            "torch_threads": torch.get_num_threads(), "load_before": load_before, **load()}


def bench_decode(video: Path, label: str) -> dict:
    from extract_features.fps_filter import fps_filter_positions
    from extract_features.resnet_recipe import FRAME_SIZE
    from extract_features.video_reader import open_video

    times = {}
    for how in ("kept_only", "every_frame", "kept_only", "every_frame"):
        reader = open_video(video, FRAME_SIZE)
        n = reader.info.n_frames
        kept = fps_filter_positions(n, reader.info.fps, 5.0)
        t0 = time.perf_counter()
        if how == "kept_only":
            for s in range(0, len(kept), 16):  # the runner's chunks
                reader.read(kept[s : s + 16])
        else:
            for s in range(0, n, 96):
                reader.read(np.arange(s, min(s + 96, n)))[np.isin(np.arange(s, min(s + 96, n)), kept)]
        times.setdefault(how, []).append(time.perf_counter() - t0)
        reader.close()
    best = {k: min(v) for k, v in times.items()}
    return {"bench": "decode", "video": label, "frames": int(n), "kept": int(len(kept)),
            "kept_only_s": round(best["kept_only"], 3), "every_frame_s": round(best["every_frame"], 3),
            "speedup": round(best["every_frame"] / best["kept_only"], 2), **load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the 320x240 benchmark video")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25], help="width_mult (1.0: the real one)")
    ap.add_argument("--batch", type=int, default=16, help="frames per network batch (the CPU default)")
    ap.add_argument("--hd-seconds", type=float, default=10.0, help="length of the 1280x720 decode video (0: skip)")
    ap.add_argument("--video-dir", default=None, help="keep and reuse the generated videos here")
    args = ap.parse_args()

    import torch

    emit({"bench": "machine", **machine(), "torch_threads": torch.get_num_threads(), **load()})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.video_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        video = folder / f"v_bench_{args.seconds:g}s_{args.fps}.mp4"
        if not video.exists():
            write_video(video, args.seconds, args.fps, (240, 320))
        emit(bench_decode(video, f"320x240 {args.fps} fps {args.seconds:g} s"))
        if args.hd_seconds:
            hd = folder / f"v_hd_{args.hd_seconds:g}s.mp4"
            if not hd.exists():
                write_video(hd, args.hd_seconds, 30, (720, 1280))
            emit(bench_decode(hd, f"1280x720 30 fps {args.hd_seconds:g} s"))
        for width in args.widths:
            emit(bench_throughput(video, width, args.batch, Path(tmp)))


if __name__ == "__main__":
    main()
