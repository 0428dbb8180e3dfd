"""Benchmark stage 1: end-to-end C3D extraction vs the bare network, decode rate, peak memory.

Prints one JSON line per result:

* ``throughput``: end-to-end clips/s of `extract_corpus` with the full-size C3D
  (width 1.0, fc7, fp32 on CPU) on a 720p video of exactly ``--clips`` clips,
  and, in the same process, clips/s of the bare network (input transform +
  forward) on pre-decoded uint8 clips at the same batch size and clip count;
  their ratio is how much of the network's speed survives decoding, batching
  and writing (target >= 0.9).
* ``decode``: frames/s of one reader decoding the 1-minute 720p video straight
  to 128x171 (decord), i.e. the per-core decode rate.
* ``rss``: peak RSS of a fresh process extracting each whole video (1 and 10
  minutes of 720p) with ``--rss-width`` (a narrow network, so the run fits in
  minutes on a CPU; the network's own memory is a constant that does not grow
  with video length). Target: 10-minute peak within 1.2x of the 1-minute one,
  and under 3 GiB.

Videos are generated with PyAV in a temporary folder (or kept in ``--video-dir``
and reused). ``--short`` shrinks the durations (6 s and 60 s, 16 clips) for a
quick check; ``--rss-only`` runs only the two RSS measurements (and their
ratio); ``--decord-reset-every N`` sets `DecordReader.reset_every` in the RSS
children (0: never reset decord's queues, i.e. the behaviour before the fix), for
an A/B on the same machine.

``--device cuda`` / ``--precision`` set where and how the network runs. ``--decode-scaling
1 2 4 8 16`` and ``--corpus 32 --decode-workers 8 14`` run only those (the GPU machine's checks,
benchmarks/gpu_check.sh): the aggregate decode rate of N readers at once, and `extract_corpus`
over N one-minute 720p videos with clips/s and the GPU's mean busy %.

    .venv/bin/python benchmarks/bench_extract.py [--short] [--rss-only] [--video-dir DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import load, machine  # benchmarks/machine.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))




def write_720p(path: Path, n_frames: int, fps: int = 25) -> Path:
    """A 1280x720 H.264 video with moving content, cheap to generate."""
    from etspipe_demo.mp4 import write_mp4

    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], axis=-1).astype(np.uint8)

    def frames():
        for i in range(n_frames):
            img = np.roll(base, shift=(i * 7) % w, axis=1)
            top, left = (i * 5) % (h - 160), (i * 11) % (w - 160)
            img[top : top + 160, left : left + 160] = (250, 240, 30)
            yield img

    write_mp4(path, frames(), fps, crf=23, preset="ultrafast")
    return path


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def bench_throughput(video: Path, n_clips: int, batch_size: int, workdir: Path, device: str = "cpu",
                     precision: str = "auto") -> dict:
    import torch

    from extract_features import extract_corpus
    from extract_features.options import ExtractOptions
    from extract_features.runner import make_extractor

    cfg = {"extract": {"width_mult": 1.0, "batch_size": batch_size, "device": device, "precision": precision}}
    opts = ExtractOptions.from_config(cfg)
    extractor = make_extractor(opts, warn=False)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(batch_size, 16, 112, 112, 3), dtype=np.uint8)
    extractor.forward(clips[:1])  # warm-up

    def bare_rate() -> float:
        t0 = time.perf_counter()
        done = 0
        while done < n_clips:
            b = min(batch_size, n_clips - done)
            extractor.forward(clips[:b])
            done += b
        return n_clips / (time.perf_counter() - t0)

    # bare network before and after the end-to-end run: a shared machine's load drifts
    bare_before = bare_rate()
    t0 = time.perf_counter()
    summary = extract_corpus([str(video)], str(workdir / "tp.zarr"), cfg, overwrite=True, progress=False)
    seconds = time.perf_counter() - t0  # includes building the network (~1 s), as a user sees it
    assert summary["done"] == 1, summary
    e2e = n_clips / seconds
    bare_after = bare_rate()
    bare = (bare_before + bare_after) / 2
    amp = opts.autocast_dtype(extractor.device)
    return {"bench": "throughput", "network": f"C3D fc7 width 1.0 {amp or 'fp32'}", "device": device,
            "channels_last": extractor.transform.channels_last, **load(),
            "torch_threads": torch.get_num_threads(), "batch_size": batch_size, "clips": n_clips,
            "video": "1280x720 H.264 25 fps", "end_to_end_clips_per_s": round(e2e, 3),
            "bare_network_clips_per_s": round(bare, 3),
            "bare_before_after": [round(bare_before, 3), round(bare_after, 3)], "ratio": round(e2e / bare, 3),
            "end_to_end_seconds": round(seconds, 1)}


def bench_decode(video: Path) -> dict:
    from extract_features.video_reader import open_video

    reader = open_video(video, (128, 171), backend="auto", threads=1)
    n = reader.info.n_frames
    t0 = time.perf_counter()
    for start in range(0, n, 64):
        reader.read(np.arange(start, min(start + 64, n)))
    dt = time.perf_counter() - t0
    backend = reader.info.backend
    reader.close()
    return {"bench": "decode", "video": "1280x720 H.264", "frames": n, "reader": backend,
            "decoder_threads": 1, "frames_per_s": round(n / dt, 1)}


def bench_decode_scaling(video: Path, threads: list[int]) -> list[dict]:
    """Aggregate frames/s of N readers decoding the same 720p video at once, one per thread (decode_workers N)."""
    from concurrent.futures import ThreadPoolExecutor

    from extract_features.video_reader import open_video

    def decode_all(_i: int) -> tuple[int, str]:
        reader = open_video(video, (128, 171), backend="auto", threads=1)
        n = reader.info.n_frames
        for start in range(0, n, 64):
            reader.read(np.arange(start, min(start + 64, n)))
        backend = reader.info.backend
        reader.close()
        return n, backend

    out = []
    for n_threads in threads:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n_threads) as pool:
            done = list(pool.map(decode_all, range(n_threads)))
        dt = time.perf_counter() - t0
        frames = sum(n for n, _ in done)
        out.append({"bench": "decode_scaling", "threads": n_threads, "reader": done[0][1], "frames": frames,
                    "frames_per_s": round(frames / dt, 1), "clips_per_s_equiv": round(frames / dt / 8, 1)} | load())
    return out


class GpuBusy:
    """Samples the GPU's utilisation (NVML through torch) every 0.1 s while the block runs: mean busy %."""

    def __init__(self) -> None:
        import threading

        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self.stop.wait(0.1):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: report None rather than fail the benchmark
                return

    def __enter__(self) -> GpuBusy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def bench_corpus(videos: list[Path], clips: int, workers: int, batch_size: int, width: float, device: str,
                 precision: str, workdir: Path) -> dict:
    """`extract_corpus` over many videos: clips/s end to end and how busy the GPU was meanwhile."""
    from extract_features import extract_corpus

    cfg = {"extract": {"width_mult": width, "batch_size": batch_size, "device": device,
                       "decode_workers": workers, "precision": precision}}
    busy = GpuBusy()
    t0 = time.perf_counter()
    if device == "cuda":
        with busy:
            summary = extract_corpus([str(v) for v in videos], str(workdir / f"corpus{workers}.zarr"), cfg,
                                     overwrite=True, progress=False)
    else:
        summary = extract_corpus([str(v) for v in videos], str(workdir / f"corpus{workers}.zarr"), cfg,
                                 overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    return {"bench": "corpus", "videos": len(videos), "done": summary["done"], "failed": summary["failed"],
            "decode_workers": workers, "batch_size": batch_size, "width": width, "device": device,
            "precision": precision, "clips": clips, "seconds": round(seconds, 1),
            "clips_per_s": round(clips / seconds, 1),
            "gpu_busy_pct": busy.mean()} | load()


RSS_CHILD = """
import json, resource, sys, time
sys.path.append(sys.argv[4])
from extract_features import extract_corpus
from extract_features.video_reader import DecordReader
if sys.argv[5] != "default":
    DecordReader.reset_every = int(sys.argv[5]) or 10**18
cfg = {"extract": {"width_mult": float(sys.argv[3]), "device": "cpu"}}
t0 = time.perf_counter()
s = extract_corpus([sys.argv[1]], sys.argv[2], cfg, overwrite=True, progress=False)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "done": s["done"]}))
"""


def bench_rss(video: Path, minutes: float, width: float, workdir: Path, reset_every: int | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(video), str(workdir / f"rss{minutes}.zarr"),
                          str(width), str(ROOT), "default" if reset_every is None else str(reset_every)],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    from extract_features.video_reader import DecordReader

    resets = DecordReader.reset_every if reset_every is None else (reset_every or "never")
    return {"bench": "rss", "video_minutes": minutes, "video": "1280x720 H.264 25 fps",
            "network": f"C3D fc7 width {width}", "decord_reset_every": resets,
            "peak_rss_mib": round(res["peak_rss_mib"], 1), "seconds": round(res["seconds"], 1),
            "done": res["done"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="6 s and 60 s videos, 16 clips: a quick check")
    ap.add_argument("--clips", type=int, default=None, help="clips in the throughput run (default 64; 16 short)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the network runs")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="extract.precision")
    ap.add_argument("--rss-width", type=float, default=1 / 32, help="width_mult of the RSS runs")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--rss-only", action="store_true", help="only the two peak-RSS runs and their ratio")
    ap.add_argument("--decord-reset-every", type=int, default=None,
                    help="DecordReader.reset_every in the RSS runs (0: never, the pre-fix behaviour)")
    ap.add_argument("--video-dir", type=Path, default=None, help="keep the generated videos here and reuse them")
    ap.add_argument("--decode-scaling", type=int, nargs="+", default=None, metavar="N",
                    help="only: aggregate decode rate with N readers at once (e.g. 1 2 4 8 16)")
    ap.add_argument("--corpus", type=int, default=0, metavar="N",
                    help="only: extract_corpus over N videos of --corpus-seconds 720p (see --decode-workers)")
    ap.add_argument("--corpus-seconds", type=float, default=60)
    ap.add_argument("--corpus-width", type=float, default=1.0, help="width_mult of the corpus runs")
    ap.add_argument("--decode-workers", type=int, nargs="+", default=[0], help="corpus runs, one per value")
    args = ap.parse_args()
    emit({"bench": "machine", **machine()} | load())
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        vids = args.video_dir or tmp
        vids.mkdir(parents=True, exist_ok=True)

        def video(name: str, n_frames: int) -> Path:
            path = vids / f"{name}_{n_frames}f.mp4"
            return path if path.is_file() else write_720p(path, n_frames)

        if args.decode_scaling or args.corpus:
            only_scaling_and_corpus(args, video, tmp)
            return
        n_clips = args.clips or (16 if args.short else 64)
        short_s, long_s = (6, 60) if args.short else (60, 600)
        t0 = time.perf_counter()
        one = video("v_short", short_s * 25)
        ten = video("v_long", long_s * 25)
        tp = None if args.rss_only else video("v_tp", (n_clips - 1) * 8 + 16)
        emit({"bench": "generate", "seconds": round(time.perf_counter() - t0, 1),
              "videos_s": [short_s, long_s], "throughput_frames": (n_clips - 1) * 8 + 16})
        if not args.rss_only:
            emit(bench_decode(one))
        r1 = bench_rss(one, short_s / 60, args.rss_width, tmp, args.decord_reset_every)
        emit(r1)
        r10 = bench_rss(ten, long_s / 60, args.rss_width, tmp, args.decord_reset_every)
        emit(r10)
        emit({"bench": "rss_ratio", "ratio_long_to_short": round(r10["peak_rss_mib"] / r1["peak_rss_mib"], 3),
              "decord_reset_every": r10["decord_reset_every"], "target": "<= 1.2 and < 3072 MiB"})
        if not args.skip_throughput and not args.rss_only:
            emit(bench_throughput(tp, n_clips, args.batch_size, tmp, args.device, args.precision))


def only_scaling_and_corpus(args, video, tmp: Path) -> None:
    """The GPU-machine runs: decode scaling and/or a corpus of distinct-named copies of 4 generated videos."""
    import shutil

    frames = int(args.corpus_seconds * 25)
    t0 = time.perf_counter()
    sources = [video(f"v_corpus{i}", frames + i) for i in range(min(4, max(args.corpus, 1)))]
    emit({"bench": "generate", "seconds": round(time.perf_counter() - t0, 1), "videos": len(sources),
          "frames": frames})
    if args.decode_scaling:
        for rec in bench_decode_scaling(sources[0], args.decode_scaling):
            emit(rec)
    if not args.corpus:
        return
    corpus_dir = tmp / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    paths, clips = [], 0
    for i in range(args.corpus):
        src = sources[i % len(sources)]
        dst = corpus_dir / f"c{i:03d}.mp4"
        shutil.copyfile(src, dst)  # a copy, not a link: each video is its own file, as in a real corpus
        paths.append(dst)
        clips += (frames + i % len(sources) - 16) // 8 + 1
    batch = args.batch_size if args.device == "cpu" else max(args.batch_size, 128)
    for workers in args.decode_workers:
        emit(bench_corpus(paths, clips, workers, batch, args.corpus_width, args.device, args.precision, tmp))


if __name__ == "__main__":
    main()
