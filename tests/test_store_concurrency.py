"""Crashes and concurrency: SIGKILLed writers, parallel Zarr writers, a second HDF5 writer.

The writers run as real processes. The kill tests slow the row writes down
(a patched `_write_block` that sleeps and reports progress through a file) so
that the parent can SIGKILL the child while a video is half written.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from etspipe.errors import UserError
from features_store import open_store

DIM = 16
META = {"extractor": "test", "layer": "fc7", "dim": DIM, "clip_len": 16, "stride": 8, "chunk_rows": 8}
VMETA = {"fps": 30.0, "source": "synthetic"}


def rows_for(video_id: str, n: int) -> np.ndarray:
    """Content derived from the id, so a reader can check every row it gets."""
    seed = sum(map(ord, video_id))
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float16).astype(np.float32)


@pytest.fixture(params=["zarr", "hdf5"])
def store_path(request, tmp_path) -> str:
    return str(tmp_path / ("s.zarr" if request.param == "zarr" else "s.h5"))


CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from features_store import open_store
    from features_store.hdf5_backend import HDF5Store
    from features_store.zarr_backend import ZarrStore
    sys.path.insert(0, {tests!r})
    from test_store_concurrency import rows_for, VMETA

    path, progress, mode = {path!r}, Path({progress!r}), {mode!r}
    for cls in (ZarrStore, HDF5Store):
        original = cls._write_block
        def slow(self, handle, rows, start, stop, _original=original):
            _original(self, handle, rows, start, stop)
            progress.with_suffix(".tmp").write_text(str(stop))
            os.replace(progress.with_suffix(".tmp"), progress)  # atomic: the parent never reads a half-written number
            time.sleep({sleep})
        cls._write_block = slow
    with open_store(path, "a") as st:
        if mode == "one":
            st.write_video("v_big", rows_for("v_big", 20000), VMETA)
        else:
            i = 0
            while True:
                vid = f"v_{{i % 7}}"
                st.write_video(vid, rows_for(vid, 20 + 13 * i % 150), VMETA)
                i += 1
""")


def run_child(path: str, progress: Path, mode: str, sleep: float) -> subprocess.Popen:
    code = CHILD.format(tests=str(Path(__file__).parent), path=path, progress=str(progress), mode=mode, sleep=sleep)
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "child made no progress"
        time.sleep(0.01)


def test_sigkill_mid_video_leaves_it_incomplete_and_rewritable(store_path, tmp_path):
    with open_store(store_path, "w", META) as st:
        st.write_video("v_done", rows_for("v_done", 50), VMETA)
    size_before = sum(f.stat().st_size for f in Path(store_path).rglob("*")) if store_path.endswith(".zarr") \
        else os.path.getsize(store_path)
    progress = tmp_path / "progress"
    proc = run_child(store_path, progress, "one", sleep=0.01)
    # 20000 rows in blocks of 64 (HDF5 buffers 64 KB): killed after 5000 rows, long before the end
    wait_for(lambda: progress.exists() and progress.read_text() and int(progress.read_text()) >= 5000, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert int(progress.read_text()) < 20000
    size_after = sum(f.stat().st_size for f in Path(store_path).rglob("*")) if store_path.endswith(".zarr") \
        else os.path.getsize(store_path)
    assert size_after > size_before  # rows of v_big did reach the disk before the kill

    with open_store(store_path, "a") as st:
        assert st.complete_ids() == ["v_done"]
        assert not st.is_complete("v_big")
        np.testing.assert_array_equal(st.rows("v_done"), rows_for("v_done", 50))
        with pytest.raises(UserError):
            st.rows("v_big")
        st.write_video("v_big", rows_for("v_big", 300), VMETA)  # the rerun rewrites it
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == ["v_big", "v_done"]
        np.testing.assert_array_equal(st.rows("v_big"), rows_for("v_big", 300))


def test_sigkill_at_random_moments_never_shows_a_bad_video(store_path, tmp_path):
    """Kill a writer that commits and rewrites videos nonstop at random times, commits included."""
    with open_store(store_path, "w", META):
        pass
    rng = random.Random(1)
    for attempt in range(4):
        progress = tmp_path / f"progress{attempt}"
        proc = run_child(store_path, progress, "loop", sleep=0.0)
        wait_for(progress.exists, proc)
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_store(store_path, "r") as st:
            for vid in st.complete_ids():
                rows = st.rows(vid)
                assert rows.shape[0] == st.video_meta(vid)["n_rows"]
                np.testing.assert_array_equal(rows, rows_for(vid, rows.shape[0]))
    with open_store(store_path, "a") as st:  # still writable
        st.write_video("v_after", rows_for("v_after", 10), VMETA)
        assert "v_after" in st.complete_ids()


def _zarr_writer(path: str, worker: int, n_videos: int) -> None:
    with open_store(path, "a", META) as st:
        for i in range(n_videos):
            vid = f"v_w{worker}_{i}"
            st.write_video(vid, rows_for(vid, 30 + 17 * i), VMETA)
            if i % 3 == 2:
                st.mark_failed(f"v_w{worker}_bad{i}", "unreadable", "synthetic")


def test_parallel_zarr_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "s.zarr")
    with open_store(path, "w", META):
        pass
    workers, n_videos = 4, 6
    ctx = multiprocessing.get_context("spawn")  # zarr runs an event-loop thread: do not fork it
    procs = [ctx.Process(target=_zarr_writer, args=(path, w, n_videos)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_store(path, "r") as st:
        expected = sorted(f"v_w{w}_{i}" for w in range(workers) for i in range(n_videos))
        assert st.complete_ids() == expected
        assert len(st.failed()) == workers * 2
        for vid in expected:
            np.testing.assert_array_equal(st.rows(vid), rows_for(vid, st.video_meta(vid)["n_rows"]))


def test_hdf5_refuses_a_second_writer(tmp_path):
    path = str(tmp_path / "s.h5")
    code = textwrap.dedent(f"""
        from etspipe.errors import UserError
        from features_store import open_store
        for mode in ("a", "r"):
            try:
                open_store({path!r}, mode).close()
            except UserError as exc:
                print(mode, exc)
            else:
                print(mode, "opened")
    """)
    with open_store(path, "w", META) as st:
        st.write_video("v_a", rows_for("v_a", 5), VMETA)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        assert "a " + path + " is open in another process; an HDF5 store takes one writer" in out
        assert "r " + path + " is being written by another process" in out
        with pytest.raises(UserError, match="one writer at a time"):  # also from the same process
            open_store(path, "a")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines() == ["a opened", "r opened"]  # the lock went with the writer
    with open_store(path, "r") as r1, open_store(path, "r") as r2:  # readers share
        assert r1.complete_ids() == r2.complete_ids() == ["v_a"]
