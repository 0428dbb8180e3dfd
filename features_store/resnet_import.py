"""ActivityNet's ResNet-152 frame features (the seed's input) into a store that records their recipe.

`etspipe import-features activitynet-resnet152 SOURCE STORE`, where SOURCE is one of three layouts
of the same rows (../shared/SEED.md "Features"):

* the official ``resnet152_features_activitynet_5fps_320x240.pkl``: one Python 2 pickle of
  ``{"v_<id>": float32 (T, 2048)}``, ~89 GB. Read as a stream (`features_store.pickle_stream`):
  memory stays at about one video, progress is counted in bytes, and videos the store already
  holds are passed over with a seek, their data never read, so an interrupted import (or one
  into a store filled from an earlier, cut download) goes on where the store stands. A file that
  ends early or holds something else stops with one line saying how far it got; what was
  committed stays;
* Paddle's folder of per-video pickles (its ``generate_train_pickle.py``: protocol 0, one array
  per file, the file named by the id, no extension), read by the same reader;
* the ``.hdf5`` variant: one dataset per ``v_`` id.

Every video is committed on its own (`FeatureStore.write_video` is atomic). A video whose rows
cannot be used (none, another width, NaN) is recorded as failed in the store, with the reason,
and counted in the summary; one bad video never stops the import.

Row ``i`` is the frame at ``i / 5`` s: each video's metadata says fps 5, clip length 1, stride 1,
so the store's time rule gives row ``i`` the span ``[i/5, (i+1)/5)`` and a caption segment gets
the seed's rows ``[int(start*5), int(end*5 + 0.5))`` (`features_store.alignment`). The duration
recorded is ``T / 5``, the extent of the rows, not the annotation's: the seed never reads a
duration, and with ``T / 5`` a segment running past the rows is clipped exactly where the seed's
slice stops (at row T) and is counted as an overrun, while a longer annotated duration would make
rows up that the file does not have.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from etspipe.errors import UserError
from etspipe.progress import progress_bar
from features_store.base import FeatureStore
from features_store.ids import _problem
from features_store.importers import _open_for_import, _Summary
from features_store.pickle_stream import PickleReadError, PickleStream, read_pickled_array
from features_store.recipes import resnet152_store_meta

log = logging.getLogger(__name__)

KIND = "activitynet-resnet152"
FPS = 5.0
PICKLE_BUFFER = 1 << 20  # read-ahead of the big pickle: opcodes are small, the data is read in one call
WRITERS = 4              # commits at once into a Zarr store (benchmarks/bench_resnet_import.py)
IN_FLIGHT = 6            # videos read but not yet committed, at most


def import_activitynet_resnet152(source: str | Path, store_path: str | Path, dtype: str = "float16",
                                 durable: bool = True) -> dict:
    """Import ActivityNet's ResNet-152 frame features from the pickle, Paddle's folder or the HDF5 file.

    Returns the summary (``imported``, ``skipped_existing``, ``skipped_<reason>`` with ids);
    PartialFailure when no video of the source is in the store afterwards; UserError naming
    the file (and how far the import got) when the pickle ends early or is not what it should be.
    """
    source = Path(source)
    if source.is_dir():
        return _import_folder(source, store_path, dtype, durable)
    if not source.is_file():
        raise UserError(f"feature file not found: {source}")
    if h5py.is_hdf5(source):
        return _import_hdf5(source, store_path, dtype, durable)
    return _import_pickle(source, store_path, dtype, durable)


def _store_meta(source: Path, dtype: str) -> dict:
    return {**resnet152_store_meta(), "imported_from": str(source), "dtype": dtype}


class _Writer:
    """Commits one video at a time and sorts every other outcome into the summary (and the store's failures).

    On a Zarr store the commits run in a few threads (`WRITERS`): each commit waits on its fsyncs
    (`store.durable`), and one at a time held the import to a fifth of what four reach; at most
    `IN_FLIGHT` videos wait for their commit, so memory stays at a few videos. An HDF5 store has one
    writer by design (its commit is one flush of everything written), so it is written in this thread.
    """

    def __init__(self, store: FeatureStore, summary: _Summary) -> None:
        self.store, self.summary = store, summary
        self.done = set(store.complete_ids())
        self.seen = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="import") if store.backend == "zarr" else None
        self._pending: deque[Future] = deque()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def skip(self, video_id: str) -> bool:
        """Whether the rows of `video_id` need not be read: the store has them, or the id cannot name a video."""
        return video_id in self.done or _problem(video_id) is not None

    def put(self, video_id: str, rows: np.ndarray | None, where: str) -> None:
        """Write `rows` (None: not read, see `skip`) for `video_id`, read from `where`."""
        self.seen += 1
        if _problem(video_id):
            log.warning("skipping %r: invalid video id (%s)", video_id, _problem(video_id))
            self._count("skipped_invalid_id", video_id)
            return
        if video_id in self.done:
            self._count("skipped_existing")
            return
        dim = self.store.dim
        if rows is None or rows.ndim != 2 or rows.shape[1] != dim:
            shape = None if rows is None else rows.shape
            self.fail(video_id, "bad_shape", "other", f"rows of shape {shape}, the recipe's are (n, {dim})", where)
            return
        if rows.shape[0] == 0:
            self.fail(video_id, "empty", "no_frames", "no rows (0 frames) in the source", where)
            return
        self.done.add(video_id)  # a key seen twice is written once
        if self._pool is None:
            self._commit(video_id, rows, where)
            return
        while len(self._pending) >= IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._commit, video_id, rows, where))

    def wait(self) -> None:
        """Until every video handed to `put` is committed (or recorded as failed); a write error is raised here."""
        while self._pending:
            self._pending.popleft().result()

    def _commit(self, video_id: str, rows: np.ndarray, where: str) -> None:
        try:
            self.store.write_video(video_id, rows, {"source": where, "fps": FPS, "clip_len": 1, "stride": 1,
                                                    "duration": rows.shape[0] / FPS})
        except UserError as exc:  # NaN or infinity, or a value float16 cannot hold
            self.fail(video_id, "bad_rows", "other", str(exc), where)
            return
        self._count("imported")

    def unreadable(self, video_id: str, reason: str, detail: str, where: str) -> None:
        """A video whose source cannot be read (a per-video file of a folder, a dataset of the HDF5 file)."""
        self.seen += 1
        self.fail(video_id, "unreadable", reason, detail, where)

    def fail(self, video_id: str, outcome: str, reason: str, detail: str, where: str) -> None:
        log.warning("skipping %s: %s", video_id, detail)
        self.store.mark_failed(video_id, reason, detail, where)
        self._count(f"skipped_{outcome}", video_id)

    def _count(self, outcome: str, video_id: str | None = None) -> None:
        with self._lock:
            self.summary.add(outcome, video_id)


def _import_pickle(source: Path, store_path: str | Path, dtype: str, durable: bool) -> dict:
    summary = _Summary(str(store_path))
    size = source.stat().st_size
    with open(source, "rb", buffering=PICKLE_BUFFER) as f, \
            _open_for_import(store_path, _store_meta(source, dtype), durable) as store:
        stream_error = None
        with _Writer(store, summary) as writer, progress_bar(total=size, unit="B", unit_scale=True,
                                                             unit_divisor=1024, desc="import resnet152") as bar:
            stream = PickleStream(f, size=size, skip=writer.skip)
            try:
                for item in stream.items():
                    writer.put(item.key, item.rows, f"{source}:{item.key}")
                    bar.update(stream.pos - bar.n)
            except PickleReadError as exc:
                stream_error = exc
            writer.wait()  # what was read before a bad byte is committed before the error is told
        if stream_error is not None:
            raise UserError(_stopped(source, size, stream_error, writer, store_path)) from None
    summary.extra["source_bytes"] = size
    return summary.result()


def _stopped(source: Path, size: int, exc: PickleReadError, writer: _Writer, store_path: str | Path) -> str:
    """The one line for a pickle that cannot be read to its end: where, why, and what the store kept."""
    counts = writer.summary.counts
    kept = (f"{writer.seen:,} videos came before it: the {counts['imported']:,} imported now and the "
            f"{counts['skipped_existing']:,} already there stay in {store_path}")
    if exc.truncated:
        return (f"{source} ends early: cut at byte {exc.offset:,} ({exc.offset / max(size, 1):.0%}) inside a video; "
                f"{kept}; download the file again and rerun the same command to add the rest")
    return f"{source}: byte {exc.offset:,} ({exc.offset / max(size, 1):.0%}): {exc}; {kept}"


def _per_video_files(folder: Path) -> list[tuple[str, Path]]:
    """(video id, file) of each per-video pickle in `folder`: every plain file, named by its id (less a .pkl)."""
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        name = entry.name
        files.append((name[:-4] if name.endswith(".pkl") else name, Path(entry.path)))
    return files


def _import_folder(folder: Path, store_path: str | Path, dtype: str, durable: bool) -> dict:
    files = _per_video_files(folder)
    if not files:
        raise UserError(f"{folder}: no per-video feature files (Paddle's feat_data: one pickle per video, named by id)")
    summary = _Summary(str(store_path))
    with _open_for_import(store_path, _store_meta(folder, dtype), durable) as store:
        sizes = [path.stat().st_size for _, path in files]
        with _Writer(store, summary) as writer, progress_bar(total=sum(sizes), unit="B", unit_scale=True,
                                                             unit_divisor=1024, desc="import resnet152") as bar:
            for (vid, path), size in zip(files, sizes, strict=True):
                _put_loaded(writer, vid, str(path), lambda p=path: read_pickled_array(p), empty_file=size == 0)
                bar.update(size)
    return summary.result()


def _hdf5_datasets(src: h5py.File) -> Iterator[tuple[str, h5py.Dataset | None]]:
    """(id, dataset) for each top-level dataset (or group holding one dataset); None for anything else."""
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            inner = [o for o in obj.values() if isinstance(o, h5py.Dataset)]
            obj = inner[0] if len(inner) == 1 else None
        yield name, obj


def _import_hdf5(source: Path, store_path: str | Path, dtype: str, durable: bool) -> dict:
    summary = _Summary(str(store_path))
    try:
        src = h5py.File(source, "r")
    except OSError as exc:
        raise UserError(f"{source}: not a readable HDF5 file ({exc})") from None
    with src, _open_for_import(store_path, _store_meta(source, dtype), durable) as store:
        with _Writer(store, summary) as writer:
            for vid, ds in progress_bar(list(_hdf5_datasets(src)), desc="import resnet152", unit="video"):
                if ds is None:
                    writer.put(vid, None, f"{source}:{vid}")  # a group without exactly one dataset: bad shape
                    continue
                _put_loaded(writer, vid, f"{source}:{vid}", lambda d=ds: d[()])
    return summary.result()


def _put_loaded(writer: _Writer, vid: str, where: str, load: Callable[[], np.ndarray],
                empty_file: bool = False) -> None:
    """Load a video's rows only when the store needs them; an unreadable one is recorded, not raised."""
    if writer.skip(vid):
        writer.put(vid, None, where)
        return
    if empty_file:
        writer.unreadable(vid, "empty_file", "the file is empty", where)
        return
    try:
        rows = np.asarray(load())
    except (OSError, PickleReadError) as exc:
        writer.unreadable(vid, "unreadable", f"cannot read its rows ({exc})", where)
        return
    writer.put(vid, rows, where)
