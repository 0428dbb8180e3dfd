"""Import of ActivityNet's ResNet-152 pickle at its real layout: speed against the disk, peak memory, rows equal.

Writes a multi-GB pickle in the official layout (``cPickle.dump(d, f, 2)`` of ``{"v_<id>": float32
(T, 2048)}``, tests/py2_pickle.py's `write_py27`, one video in memory at a time), evicts it from the
page cache (posix_fadvise DONTNEED on that file only), reads it raw once to measure the disk, evicts it
again, then runs ``etspipe import-features activitynet-resnet152`` in a child process whose peak RSS
is taken from the kernel (getrusage of children) and sampled with psutil. Checks every video's rows
read back equal to what was written (at the store's dtype), times a rerun (every video skipped by a
seek), times the reader alone and an import with ``-o store.durable=false`` (no fsync per commit) to
show what bounds the import, and deletes the file and the stores. Prints one JSON line (issue 27: disk
speed, peak RSS <= 1 GiB).

    .venv/bin/python benchmarks/bench_resnet_import.py --videos 1500 --rows 300 --dir /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DIM = 2048


def video(i: int, mean_rows: int) -> tuple[str, np.ndarray]:
    """Video `i`: T between 0.5 and 1.5 times `mean_rows`, values like post-ReLU averages (>= 0, small)."""
    rng = np.random.default_rng(i)
    n = int(rng.integers(mean_rows // 2, mean_rows * 3 // 2 + 1))
    return f"v_{i:011d}", rng.random((n, DIM), dtype=np.float32) * 2.0


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def raw_read_speed(path: Path) -> float:
    """MB/s of a plain sequential read of the file in 1 MiB blocks."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(1 << 20)
        while f.readinto(buffer):
            pass
    return path.stat().st_size / 1e6 / (time.perf_counter() - t0)


def reader_speed(path: Path) -> float:
    """MB/s of the stream reader alone (every array built, nothing written): what the store's writes leave."""
    from features_store.pickle_stream import PickleStream

    size = path.stat().st_size
    t0 = time.perf_counter()
    with open(path, "rb", buffering=1 << 20) as f:
        for _item in PickleStream(f, size).items():
            pass
    return size / 1e6 / (time.perf_counter() - t0)


def run_import(src: Path, store: Path, *extra: str) -> dict:
    """The CLI in a child process: seconds, peak RSS (kernel: first child only; psutil samples), exit status."""
    import psutil

    cmd = [sys.executable, str(ROOT / "pipeline.py"), "import-features", "activitynet-resnet152", str(src), str(store),
           *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampled = [0]

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                sampled[0] = max(sampled[0], p.memory_info().rss)
                time.sleep(0.05)
        except psutil.NoSuchProcess:
            pass

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output = proc.communicate()[0].decode(errors="replace")
    seconds = time.perf_counter() - t0
    watcher.join()
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return {"rc": proc.returncode, "seconds": seconds, "output": output[-2000:],
            "peak_rss_mib": round(peak_kib / 1024, 1) if before == 0 else None,
            "psutil_peak_rss_mib": round(sampled[0] / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1500)
    parser.add_argument("--rows", type=int, default=300, help="mean rows (frames at 5 fps) per video")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the pickle and the store go")
    args = parser.parse_args()

    from machine import cpu_model
    from py2_pickle import write_py27

    from features_store import open_store

    work = Path(tempfile.mkdtemp(prefix="bench_resnet_import_", dir=args.dir))
    src, store = work / "resnet152_features_activitynet_5fps_320x240.pkl", work / "anet_resnet152.zarr"
    try:
        t0 = time.perf_counter()
        with open(src, "wb", buffering=1 << 20) as f:
            size = write_py27(f, (video(i, args.rows) for i in range(args.videos)), args.videos)
        write_s = time.perf_counter() - t0
        evict(src)
        disk = raw_read_speed(src)
        evict(src)
        first = run_import(src, store)
        if first["rc"] != 0:
            raise SystemExit(f"import failed ({first['rc']}):\n{first['output']}")
        rerun = run_import(src, store)
        evict(src)
        reader = reader_speed(src)
        evict(src)
        loose = run_import(src, work / "not_durable.zarr", "-o", "store.durable=false")
        shutil.rmtree(work / "not_durable.zarr", ignore_errors=True)
        equal, rows_total = True, 0
        with open_store(str(store), "r") as st:
            dtype = np.dtype(st.dtype)
            complete = st.complete_ids()
            for i in range(args.videos):
                vid, want = video(i, args.rows)
                got = st.rows(vid)
                rows_total += len(got)
                equal &= bool(np.array_equal(got, want.astype(dtype).astype(np.float32)))
        store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        print(json.dumps({
            "bench": "resnet152_pickle_import", "cpu": cpu_model(), "cores": os.cpu_count(),
            "file_bytes": size, "file_gb": round(size / 1e9, 2), "videos": args.videos, "rows": rows_total,
            "videos_complete": len(complete), "store_dtype": str(dtype), "store_gb": round(store_bytes / 1e9, 2),
            "write_mb_s": round(size / 1e6 / write_s, 1), "disk_read_mb_s": round(disk, 1),
            "import_s": round(first["seconds"], 1), "import_mb_s": round(size / 1e6 / first["seconds"], 1),
            "import_vs_disk": round(size / 1e6 / first["seconds"] / disk, 2), "reader_only_mb_s": round(reader, 1),
            "import_not_durable_mb_s": round(size / 1e6 / loose["seconds"], 1),
            "peak_rss_mib": first["peak_rss_mib"], "psutil_peak_rss_mib": first["psutil_peak_rss_mib"],
            "rerun_s": round(rerun["seconds"], 2), "rerun_psutil_peak_rss_mib": rerun["psutil_peak_rss_mib"],
            "rows_equal": equal,
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
