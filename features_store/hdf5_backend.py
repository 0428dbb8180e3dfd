"""HDF5 backend (``.h5``/``.hdf5``): one file, one writer at a time; for exchange and single-machine use.

Layout::

    /                     attrs["etspipe_meta"] = store metadata (JSON)
    /videos/<id>          (n_rows, dim) dataset, contiguous, uncompressed; attrs["etspipe_video"] = JSON
    /complete/<id>        hard link to /videos/<id>: present only once the video is committed
    /failed/<id>          scalar string dataset: the failure record (JSON)
    /aux/<name>           opaque bytes (.npz): store-level arrays such as the PCA projection

One writer. HDF5 files are not safe for concurrent writers. A writer holds an
exclusive ``fcntl.flock`` on the sidecar ``<file>.lock`` and a reader a shared
one, so a second writer (or a reader during a write) gets a clear UserError
instead of a corrupted file. The kernel drops the lock when a process dies, so
a killed writer never leaves a stale lock.

Surviving SIGKILL. A plain h5py writer killed at the wrong moment can leave a
file HDF5 refuses to open, because the metadata cache writes modified metadata
(object headers, B-tree nodes, heaps) back whenever it evicts entries. Here:

* metadata-cache evictions are switched off, so none of a video's metadata
  reaches the file until the explicit `flush` that commits the video;
* until that flush, the only bytes written are the video's raw rows, placed in
  space no committed object refers to (new space at the end of the file; the
  default free-space map keeps raw data out of freed metadata blocks);
* a rewrite first removes the old entry and flushes, then writes the new one;
* the file uses the oldest format (superblock 0), which has no "file is open
  for writing" flag; newer formats set that flag and refuse to reopen a file
  whose writer was killed until `h5clear` is run.

So a kill while rows are written (nearly all of a writer's time) leaves the file
exactly as at the last commit plus unreferenced bytes at its end; the video is
not complete and is rewritten by the next run (tests/test_store_concurrency.py
kills writers mid-video and at random moments). Tradeoffs: the kill window is
not zero -- a kill during the few-kilobyte metadata flush that ends each video
could still damage the file (a power loss, which can reorder writes, is not
covered either; the Zarr backend has neither issue); space of deleted or
rewritten videos and of killed writes is not reused (``h5repack`` compacts a
file); the metadata cache grows with the number of videos written in one
session (a few KB per video). Datasets are uncompressed, contiguous and in
the oldest format so that any HDF5 reader opens them without filter plugins.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os

import h5py
import numpy as np

from etspipe.errors import UserError
from features_store.base import FeatureStore, check_compatible, check_store_meta, new_store_meta

log = logging.getLogger(__name__)

WRITE_BLOCK_CHUNKS = 8  # rows are written in blocks of chunk_rows * this


def _local_path(path: str) -> str:
    if "://" in path:
        scheme, rest = path.split("://", 1)
        if scheme != "file":
            raise UserError(f"{path}: HDF5 stores must be local files; use a Zarr store for {scheme}:// URLs")
        return rest
    return path


class HDF5Store(FeatureStore):
    """A feature store in one HDF5 file (see the module docstring for layout and crash safety)."""

    backend = "hdf5"

    def __init__(self, path: str, mode: str, meta: dict | None = None) -> None:
        self._file_path = _local_path(path)
        exists = os.path.exists(self._file_path)
        if mode == "r" and not exists:
            raise UserError(f"no feature store at {path}")
        if os.path.isdir(self._file_path):
            raise UserError(f"{path} is a directory; an HDF5 store is a file")
        self._lock_fd = self._lock(path, exclusive=(mode != "r"))
        self._file: h5py.File | None = None
        try:
            if mode == "w" or (mode == "a" and not exists):
                store_meta = new_store_meta(meta, path, self.backend)
                if exists:
                    self._check_is_store(path)
                    log.info("overwriting feature store %s", path)
                self._file = h5py.File(self._file_path, "w", libver="earliest")
                self._file.attrs["etspipe_meta"] = json.dumps(store_meta)
                for group in ("videos", "complete", "failed"):
                    self._file.create_group(group)
                self._file.flush()
            else:
                store_meta = self._check_is_store(path)
                if mode == "a":
                    check_compatible(path, store_meta, meta)
                self._file = h5py.File(self._file_path, "r" if mode == "r" else "a")
            if mode != "r":
                self._no_metadata_evictions()
        except BaseException:
            self._release()
            raise
        super().__init__(path, mode, store_meta)
        self._datasets: dict[str, h5py.Dataset] = {}

    # ------------------------------------------------------------------ files and locks
    def _lock(self, path: str, exclusive: bool) -> int | None:
        """Take the sidecar lock, or raise UserError naming the other user of the file."""
        lock_path = self._file_path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if exclusive:
                raise UserError(f"{path}: cannot create the lock file {lock_path}") from None
            return None  # read-only folder: nobody can be writing there through etspipe
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if exclusive:
                raise UserError(f"{path} is open in another process; an HDF5 store takes one writer at a time "
                                "(use a .zarr store for parallel writers)") from None
            raise UserError(f"{path} is being written by another process; read it when the writer is done") from None
        return fd

    def _check_is_store(self, path: str) -> dict:
        try:
            with h5py.File(self._file_path, "r") as f:
                raw = f.attrs.get("etspipe_meta")
        except OSError as exc:
            raise UserError(f"{path} is not a readable HDF5 file ({exc})") from None
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            meta = None
        return check_store_meta(path, meta)

    def _no_metadata_evictions(self) -> None:
        """Keep all modified metadata in memory until an explicit flush (see the module docstring)."""
        config = self._file.id.get_mdc_config()
        config.evictions_enabled = False
        config.incr_mode = 0  # H5C_incr__off: required when evictions are off
        config.flash_incr_mode = 0
        config.decr_mode = 0
        self._file.id.set_mdc_config(config)

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ backend API
    def _write(self, video_id: str, rows: np.ndarray, vmeta: dict) -> None:
        f = self._file
        if video_id in f["videos"] or video_id in f["complete"]:
            self._delete(video_id)
        n, dim = rows.shape
        dataset = f["videos"].create_dataset(video_id, shape=(n, dim), dtype=rows.dtype)
        dataset.attrs["etspipe_video"] = json.dumps(vmeta)
        block = self.chunk_rows * WRITE_BLOCK_CHUNKS
        for start in range(0, n, block):
            self._write_block(dataset, rows, start, min(start + block, n))
        f["complete"][video_id] = dataset
        f.flush()  # the commit: the dataset, its link and the completion link reach the file together

    def _write_block(self, dataset: h5py.Dataset, rows: np.ndarray, start: int, stop: int) -> None:
        dataset[start:stop] = rows[start:stop]

    def _delete(self, video_id: str) -> None:
        f = self._file
        self._datasets.pop(video_id, None)
        changed = False
        for group in ("complete", "videos"):
            if video_id in f[group]:
                del f[group][video_id]
                changed = True
        if changed:
            f.flush()

    def _is_complete(self, video_id: str) -> bool:
        return video_id in self._file["complete"]

    def _complete_ids(self) -> list[str]:
        return list(self._file["complete"].keys())

    def _read_video_meta(self, video_id: str) -> dict | None:
        if video_id not in self._file["complete"]:
            return None
        return json.loads(self._file["complete"][video_id].attrs["etspipe_video"])

    def _read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
        dataset = self._datasets.get(video_id)
        if dataset is None:
            if video_id not in self._file["complete"]:
                raise UserError(f"video {video_id!r} is not complete in {self.path}")
            dataset = self._datasets[video_id] = self._file["complete"][video_id]
        return dataset[start:stop]

    def _write_failure(self, video_id: str, record: dict) -> None:
        failed = self._file["failed"]
        if video_id in failed:
            del failed[video_id]
        failed.create_dataset(video_id, data=json.dumps(record))
        self._file.flush()

    def _has_failure(self, video_id: str) -> bool:
        return video_id in self._file["failed"]

    def _delete_failure(self, video_id: str) -> None:
        del self._file["failed"][video_id]
        self._file.flush()

    def _failures(self) -> dict[str, dict]:
        failed = self._file["failed"]
        return {vid: json.loads(failed[vid][()]) for vid in failed}

    def _write_aux(self, name: str, data: bytes, exclusive: bool) -> bool:
        group = self._file.require_group("aux")
        if name in group:
            if exclusive:
                return False
            del group[name]
        group.create_dataset(name, data=np.void(data))
        self._file.flush()
        return True

    def _read_aux(self, name: str) -> bytes | None:
        group = self._file.get("aux")
        if group is None or name not in group:
            return None
        return group[name][()].tobytes()

    def _write_meta(self, meta: dict) -> None:
        self._file.attrs["etspipe_meta"] = json.dumps(meta)
        self._file.flush()

    def _orphans(self) -> list[tuple[str, str]]:
        complete = set(self._file["complete"].keys())
        return [(f"videos/{vid}", "rows of an interrupted or superseded write")
                for vid in self._file["videos"] if vid not in complete]

    def _remove_orphan(self, name: str) -> None:
        del self._file["videos"][name.split("/", 1)[1]]
        self._file.flush()

    def _size_on_disk(self) -> int:
        return os.path.getsize(self._file_path)

    def _close(self) -> None:
        self._datasets.clear()
        self._release()
