"""Feature-store benchmark: an ActivityNet-shaped store in both backends.

Builds a store of `--videos` videos (default 10,009, the ActivityNet Captions
training set), 500-d float16 rows, one row per 8 frames at 30 fps, with the
real durations of `--annotations FILE` when given (else drawn from a similar
distribution: mean 117 s, max 755 s), then measures:

* write throughput (videos/s, MB/s of float16 rows) from one process,
* size on disk,
* listing the complete ids,
* random caption-segment reads/s from one process with a freshly opened store
  (segments are the file's real caption segments, else drawn like them), through
  the store's own chunk reader and, on the Zarr store, through maintained
  libraries reading the same arrays: zarr-python 3, zarr-python 3 with the Rust
  `zarrs` codec pipeline, and `tensorstore` (each skipped if not installed;
  ``pip install zarrs==0.2.3 tensorstore==0.1.86``),
* the cost of durable commits (fsync of rows, marker and directory entries)
  per video, against the extraction time of a video of the same length.

Prints one JSON line per result. A quick run: ``--videos 500``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py (the script folder is on sys.path)

from features_store import open_store

FPS, STRIDE, CLIP_LEN, DIM = 30.0, 8, 16, 500


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


Segments = list[tuple[int, float, float]]


def load_corpus(args: argparse.Namespace, rng: np.random.Generator) -> tuple[list[float], Segments]:
    """Durations of the videos and caption segments (video index, start, end)."""
    if args.annotations:
        data = json.loads(Path(args.annotations).read_text(encoding="utf-8"))
        items = [ann for ann in data.values() if ann.get("duration")][: args.videos]
        durations = [float(a["duration"]) for a in items]
        segments = [(i, float(s), float(e)) for i, a in enumerate(items) for s, e in a.get("timestamps", [])
                    if e > s]
        return durations, segments
    # lognormal with mean ~117 s, clipped like the real set (max 755 s)
    durations = np.clip(rng.lognormal(mean=4.55, sigma=0.62, size=args.videos), 1.0, 755.0).tolist()
    segments = []
    for i, d in enumerate(durations):
        for _ in range(4):  # ~3.7 captions per video, each ~30 % of it
            length = d * min(1.0, rng.beta(1.2, 2.8))
            start = rng.uniform(0, d - length)
            segments.append((i, start, start + max(length, 0.1)))
    return durations, segments


def disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_backend(name: str, path: Path, durations: list[float], segments: list, args: argparse.Namespace,
                  rng: np.random.Generator) -> None:
    n_rows = [max(1, int(d * FPS / STRIDE)) for d in durations]
    pool = (rng.standard_normal((max(n_rows) + 1000, DIM)) * 0.5).astype(np.float16)
    meta = {"extractor": "bench", "layer": "fc7+pca", "dim": DIM, "clip_len": CLIP_LEN, "stride": STRIDE,
            "dtype": "float16", "chunk_rows": args.chunk_rows}
    ids = [f"v_{i:06d}" for i in range(len(durations))]
    t0 = time.perf_counter()
    with open_store(path, "w", meta) as st:
        for i, (vid, n) in enumerate(zip(ids, n_rows, strict=True)):
            offset = (i * 37) % 1000
            st.write_video(vid, pool[offset:offset + n], {"fps": FPS, "duration": durations[i], "source": vid})
    seconds = time.perf_counter() - t0
    raw_mb = sum(n_rows) * DIM * 2 / 1e6
    emit(bench="store_write", backend=name, videos=len(ids), rows=sum(n_rows), seconds=round(seconds, 2),
         videos_per_s=round(len(ids) / seconds, 1), mb_per_s=round(raw_mb / seconds, 1))
    size = disk_size(path)
    emit(bench="store_size", backend=name, bytes=size, mb=round(size / 1e6, 1),
         ratio_to_raw=round(size / (raw_mb * 1e6), 3))

    with open_store(path, "r") as st:
        t0 = time.perf_counter()
        listed = st.complete_ids()
        emit(bench="store_list_complete", backend=name, videos=len(listed),
             seconds=round(time.perf_counter() - t0, 4))
    picks = rng.integers(0, len(segments), size=args.reads)
    readers = ["etspipe"] + ([r for r in args.readers.split(",") if r] if name == "zarr" else [])
    for reader in readers:
        bench_reads(name, path, reader, ids, segments, picks)
    if name == "zarr":
        bench_fsync(path, pool, n_rows, durations, args)


def open_library_array(reader: str, store_root: Path, rel: str):
    """One video's array through a maintained Zarr library (the store's marker names the array)."""
    if reader == "tensorstore":
        import tensorstore as ts

        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store_root / rel)}}
        handle = ts.open(spec, read=True).result()
        return lambda sl: handle[sl].read().result()
    import zarr

    array = zarr.open_array(str(store_root), path=rel, mode="r")
    return lambda sl: array[sl]


def bench_reads(name: str, path: Path, reader: str, ids: list[str], segments: list, picks: np.ndarray) -> None:
    """Random caption-segment reads/s: the store's own reader, or a library reading the same arrays."""
    from features_store.alignment import row_times, select_rows

    try:
        if reader == "zarrs":
            import zarr
            import zarrs  # noqa: F401 - registers the Rust codec pipeline

            zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
        elif reader == "tensorstore":
            import tensorstore  # noqa: F401
    except ImportError as exc:
        emit(bench="store_random_segment_reads", backend=name, reader=reader, skipped=f"not installed: {exc}")
        return
    handles: dict = {}
    if reader == "etspipe":  # one-off imports of the read path (torch's cast of float16) are not per read
        with open_store(path, "r") as st:
            st.get(ids[0], 0.0, 1.0)
    with open_store(path, "r") as st:  # fresh: no metadata or chunks cached yet
        rows = 0
        t0 = time.perf_counter()
        for k in picks:
            i, start, end = segments[k]
            if reader == "etspipe":
                feats, _ = st.get(ids[i], start, end)
            else:
                vm = st.video_meta(ids[i])
                sel = select_rows(row_times(vm["time_rule"], vm["n_rows"]), start, end, vm["duration"])
                read = handles.get(ids[i]) or handles.setdefault(
                    ids[i], open_library_array(reader, path, st.array_path(ids[i])))
                feats = np.asarray(read(sel)).astype(np.float32)
            rows += len(feats)
        seconds = time.perf_counter() - t0
    if reader == "zarrs":
        import zarr

        zarr.config.reset()
    emit(bench="store_random_segment_reads", backend=name, reader=reader, reads=len(picks),
         seconds=round(seconds, 2), reads_per_s=round(len(picks) / seconds, 1), mean_rows=round(rows / len(picks), 1),
         note="one process, fresh store object, OS page cache warm from the write")


def bench_fsync(path: Path, pool: np.ndarray, n_rows: list[int], durations: list[float],
                args: argparse.Namespace) -> None:
    """What making each commit durable (fsync of rows, marker, directories) costs per video."""
    count = min(args.fsync_videos, len(n_rows))
    seconds = {}
    for durable in (False, True, False, True):  # interleaved: the machine's load drifts
        with open_store(path, "a") as st:
            st._files.durable = durable
            t0 = time.perf_counter()
            for i in range(count):
                st.write_video(f"fsync_{durable}_{i}", pool[:n_rows[i]], {"fps": FPS, "duration": durations[i]})
            seconds[durable] = seconds.get(durable, 0.0) + time.perf_counter() - t0
    per_video = {k: v / (2 * count) for k, v in seconds.items()}
    cost = per_video[True] - per_video[False]
    extract_s = float(np.mean(n_rows[:count])) / args.clips_per_s
    emit(bench="store_fsync_cost", videos=count, ms_per_video_durable=round(per_video[True] * 1e3, 1),
         ms_per_video_no_fsync=round(per_video[False] * 1e3, 1), fsync_ms_per_video=round(cost * 1e3, 1),
         extract_s_per_video=round(extract_s, 1), clips_per_s=args.clips_per_s,
         fraction_of_extraction=round(cost / extract_s, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10009, help="number of videos (default 10,009)")
    parser.add_argument("--annotations", default=None, help="ActivityNet Captions JSON for real durations/segments")
    parser.add_argument("--workdir", default=None, help="where the stores are built (default: a temp dir)")
    parser.add_argument("--backends", default="zarr,hdf5", help="comma-separated: zarr,hdf5")
    parser.add_argument("--reads", type=int, default=20000, help="random segment reads to time")
    parser.add_argument("--chunk-rows", type=int, default=256, help="rows per chunk (store.chunk_rows)")
    parser.add_argument("--readers", default="zarr,zarrs,tensorstore",
                        help="libraries to time against the store's own reader (zarr, zarrs, tensorstore)")
    parser.add_argument("--fsync-videos", type=int, default=200, help="videos written to time the fsync cost")
    parser.add_argument("--clips-per-s", type=float, default=1.066,
                        help="extraction speed to compare the fsync cost with (default: CPU figure, PERFORMANCE.md)")
    parser.add_argument("--keep", action="store_true", help="keep the stores instead of deleting them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(args.seed)
    durations, segments = load_corpus(args, rng)
    emit(bench="store_corpus", videos=len(durations), segments=len(segments),
         mean_duration_s=round(float(np.mean(durations)), 1), max_duration_s=round(float(np.max(durations)), 1),
         source=args.annotations or "synthetic", cpu=cpu_model(), cores=os.cpu_count())
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_store_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.backends.split(","):
            path = workdir / ("bench.zarr" if name == "zarr" else "bench.h5")
            try:
                bench_backend(name, path, durations, segments, args, rng)
            finally:
                if not args.keep:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                    Path(str(path) + ".lock").unlink(missing_ok=True)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)




if __name__ == "__main__":
    main()
