"""The backend-independent part of a feature store: the API, its checks and the alignment rule.

`FeatureStore` owns everything the two backends share: argument checks, the
store and per-video metadata, the dtype cast, the time-alignment rule of
`get`, `info`, and the caches of a reader. A backend (`zarr_backend`,
`hdf5_backend`) only stores bytes: it implements the ``_``-prefixed methods and
promises that `_write` is atomic per video (rows first, completion marker last).
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

import numpy as np

from etspipe.errors import UserError
from features_store.alignment import row_times, rule_duration, select_rows, time_rule
from features_store.ids import validate_video_id
from features_store.projection import projection_identity

log = logging.getLogger(__name__)


def as_float32(rows: np.ndarray) -> np.ndarray:
    """Rows as float32 (equal to ``astype(np.float32)``, NaN stays NaN); float16 through torch's cast.

    NumPy's float16 -> float32 cast does not use the CPU's F16C instructions in these wheels: it took
    about 200 us of every ~500 us random segment read (131 x 500 rows, 2-core EPYC); torch's takes about
    25 us (docs/PERFORMANCE.md, benchmarks/bench_store.py). torch is imported on the first float16 read
    only, so listing and `store info` start without it.
    """
    if rows.dtype != np.float16:
        return rows.astype(np.float32, copy=False)
    if not rows.size:
        return rows.astype(np.float32)
    import torch

    with warnings.catch_warnings():  # decoded chunks are read-only; the cast only reads them
        warnings.simplefilter("ignore", UserWarning)
        half = torch.from_numpy(np.ascontiguousarray(rows))
    return half.float().numpy()


FORMAT_NAME = "etspipe-features"
FORMAT_VERSION = 2  # 2: Zarr videos under per-write tokens named by a checksummed marker
DEFAULT_DTYPE = "float16"
DEFAULT_CHUNK_ROWS = 256
DTYPES = ("float16", "float32")

# Why a video has no features. Fixed so that summaries can count them and a
# rerun can choose which to retry; "other" takes everything unforeseen.
FAILURE_REASONS = (
    "missing",          # the input file does not exist
    "empty_file",       # zero bytes
    "unreadable",       # not a container any reader opens
    "no_video_stream",  # e.g. an audio-only file
    "no_frames",        # a video stream without decodable frames
    "too_short",        # fewer frames than one clip and padding is off
    "decode_error",     # decoding broke part way
    "other",
)

# Store settings that change what the features mean: appending with other values is a mistake.
IDENTITY_KEYS = ("extractor", "layer", "dim", "clip_len", "stride")
# What may change after a store is created: how its rows can be remade (a projection learnt later,
# features_store.recipes), never what they are.
MUTABLE_META = ("recipe",)

MODES = ("r", "a", "w")


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so comparisons survive a round trip."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise UserError(f"metadata is not JSON serialisable: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def new_store_meta(meta: dict | None, path: str, backend: str) -> dict:
    """Complete and check the metadata of a store about to be created."""
    if not meta:
        raise UserError(f"{path}: creating a feature store needs its metadata (at least 'dim')")
    meta = dict(_jsonable(meta))
    dim = meta.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise UserError(f"{path}: store metadata 'dim' must be a positive integer, got {dim!r}")
    meta.setdefault("dtype", DEFAULT_DTYPE)
    if meta["dtype"] not in DTYPES:
        raise UserError(f"{path}: store dtype must be one of {', '.join(DTYPES)}, got {meta['dtype']!r}")
    meta["chunk_rows"] = int(meta.get("chunk_rows") or DEFAULT_CHUNK_ROWS)
    if meta["chunk_rows"] <= 0:
        raise UserError(f"{path}: store chunk_rows must be positive, got {meta['chunk_rows']}")
    meta.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, backend=backend)
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return meta


def check_compatible(path: str, old: dict, new: dict | None) -> None:
    """Refuse to append features made with other settings (extractor, layer, dim, clip_len, stride)."""
    if not new:
        return
    new = _jsonable(new)
    for key in IDENTITY_KEYS:
        if key in old and key in new and old[key] != new[key]:
            raise UserError(f"{path} holds features with {key}={old[key]!r}, but this run has {key}={new[key]!r}; "
                            "write to another store, or remove this one to start over")


def check_store_meta(path: str, meta: Any) -> dict:
    """The metadata read from an existing store, or UserError if it is not one of ours."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise UserError(f"{path} is not an etspipe feature store")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path} has store format version {meta['format_version']}; this etspipe reads "
                        f"up to {FORMAT_VERSION} (upgrade etspipe)")
    return meta


def _check_aux_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"store-level array names are letters, digits, '_' and '-'; got {name!r}")


class FeatureStore(ABC):
    """Features of one extractor configuration: one `(n_rows, dim)` array per video.

    Open it with `features_store.open_store`. Writers commit a video atomically
    (`write_video`); readers see only complete videos. Opened read-only, the
    store caches per-video metadata (and the backend its open arrays), which
    assumes that no other process rewrites a video while it is being read.
    """

    backend = "base"

    def __init__(self, path: str, mode: str, meta: dict) -> None:
        self.path = path
        self.mode = mode
        self.meta = meta
        self._video_meta: dict[str, dict] = {}
        self._closed = False

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Feature dimension (columns of every video's rows)."""
        return int(self.meta["dim"])

    @property
    def dtype(self) -> str:
        """On-disk dtype; reads always return float32."""
        return str(self.meta.get("dtype", DEFAULT_DTYPE))

    @property
    def chunk_rows(self) -> int:
        return int(self.meta.get("chunk_rows", DEFAULT_CHUNK_ROWS))

    # ------------------------------------------------------------------ writing
    def write_video(self, video_id: str, rows: np.ndarray, video_meta: dict) -> None:
        """Store all rows of one video and mark it complete, atomically.

        `video_meta` holds ``source``, ``fps``, ``n_frames``, ``duration`` and,
        for clip rows, ``clip_len``/``stride`` (default: the store's); without an
        ``fps`` the rows split ``duration`` evenly. A successful write clears an
        earlier failure of the video; rewriting a complete video replaces it.
        """
        self._check_writable()
        validate_video_id(video_id)
        rows = self._prepare_rows(video_id, rows)
        vmeta = self._prepare_video_meta(video_id, video_meta, len(rows))
        try:
            self._write(video_id, rows, vmeta)
        except OSError as exc:  # disk full, quota, I/O error: one line naming the video and the store
            raise OSError(exc.errno, f"video {video_id!r} could not be written to {self.path} "
                          f"({exc.strerror or exc}); it is not complete") from None
        self._video_meta[video_id] = vmeta
        if self._has_failure(video_id):
            self._delete_failure(video_id)

    def mark_failed(self, video_id: str, reason: str, detail: str = "", source: str = "") -> None:
        """Record that `video_id` has no features and why (`reason` in FAILURE_REASONS)."""
        self._check_writable()
        validate_video_id(video_id)
        if reason not in FAILURE_REASONS:
            raise ValueError(f"failure reason {reason!r} is not one of {', '.join(FAILURE_REASONS)}")
        record = {"reason": reason, "detail": str(detail), "source": str(source),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._write_failure(video_id, record)

    def clear_failed(self, video_id: str) -> None:
        """Forget a recorded failure (so that a rerun retries the video); no error if none."""
        self._check_writable()
        validate_video_id(video_id)
        if self._has_failure(video_id):
            self._delete_failure(video_id)

    def delete_video(self, video_id: str) -> None:
        """Remove a video's rows and completion; no error if it is not there."""
        self._check_writable()
        validate_video_id(video_id)
        self._video_meta.pop(video_id, None)
        self._delete(video_id)

    # ------------------------------------------------------------------ listing
    def is_complete(self, video_id: str) -> bool:
        """True once all rows of the video are committed."""
        validate_video_id(video_id)
        return self._is_complete(video_id)

    def complete_ids(self) -> list[str]:
        """Ids of the complete videos, sorted. Cheap even for 10k videos (one listing)."""
        return sorted(self._complete_ids())

    def failed(self) -> dict[str, dict]:
        """Recorded failures: id -> {"reason", "detail", "source", "time"}."""
        return dict(sorted(self._failures().items()))

    def __contains__(self, video_id: str) -> bool:
        return self.is_complete(video_id)

    def __len__(self) -> int:
        return len(self._complete_ids())

    # ------------------------------------------------------------------ reading
    def video_meta(self, video_id: str) -> dict:
        """Per-video metadata: source, fps, n_frames, duration, n_rows, time_rule, and any extra keys."""
        vmeta = self._video_meta.get(video_id)
        if vmeta is None:
            validate_video_id(video_id)
            vmeta = self._read_video_meta(video_id)
            if vmeta is None:
                raise UserError(f"video {video_id!r} is not complete in {self.path}")
            self._video_meta[video_id] = vmeta
        return vmeta

    def rows(self, video_id: str) -> np.ndarray:
        """All rows of a complete video as float32 `(n_rows, dim)`."""
        n = self.video_meta(video_id)["n_rows"]
        return as_float32(self._read_rows(video_id, 0, n))

    def row_times(self, video_id: str) -> np.ndarray:
        """Centre time in seconds of each row of a video."""
        vmeta = self.video_meta(video_id)
        return row_times(vmeta["time_rule"], vmeta["n_rows"])

    def get(self, video_id: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows (float32) and their times for the segment ``[start_s, end_s]``.

        Applies `alignment.select_rows`; raises `alignment.SegmentError` (a
        UserError) for an empty, reversed or out-of-video segment.
        """
        vmeta = self.video_meta(video_id)
        times = row_times(vmeta["time_rule"], vmeta["n_rows"])
        try:
            sel = select_rows(times, start_s, end_s, vmeta["duration"])
        except UserError as exc:
            raise type(exc)(f"video {video_id!r}: {exc}") from None
        rows = self._read_rows(video_id, sel.start, sel.stop)
        return as_float32(rows), times[sel]

    def info(self) -> dict:
        """Summary for `etspipe store info`: counts, rows, failures with reasons, size, extractor metadata.

        Works while another process writes: a video removed or rewritten between
        the listing and the read of its metadata is left out of the row count.
        """
        ids = self._complete_ids()
        failures = self._failures()
        total = 0
        for vid in ids:
            try:
                total += int(self.video_meta(vid)["n_rows"])
            except UserError:
                continue
        return {
            "path": self.path,
            "backend": self.backend,
            "videos_complete": len(ids),
            "videos_failed": len(failures),
            "failed_by_reason": dict(Counter(f.get("reason", "other") for f in failures.values())),
            "failed": {vid: {"reason": f.get("reason", "other"), "detail": f.get("detail", "")}
                       for vid, f in sorted(failures.items())},
            "rows_total": total,
            "dim": self.dim,
            "dtype": self.dtype,
            "chunk_rows": self.chunk_rows,
            "size_bytes": self._size_on_disk(),
            "pca_projection": self._projection_info(),
            "meta": dict(self.meta),
        }

    def _projection_info(self) -> dict | None:
        """The identity of the PCA projection kept in the store (None: none; a damaged one says so)."""
        try:
            return projection_identity(self)
        except UserError as exc:
            return {"error": str(exc)}

    def update_meta(self, changes: dict) -> None:
        """Change store-level metadata keys of `MUTABLE_META` (a replace of the one metadata record)."""
        self._check_writable()
        if set(changes) - set(MUTABLE_META):
            raise ValueError(f"only {', '.join(MUTABLE_META)} may change in a store's metadata, "
                             f"not {sorted(set(changes) - set(MUTABLE_META))}")
        meta = {**self.meta, **_jsonable(changes)}
        self._write_meta(meta)
        self.meta = meta

    def _write_meta(self, meta: dict) -> None:
        raise NotImplementedError(f"{self.backend} stores cannot change their metadata")

    # ------------------------------------------------------------------ store-level arrays
    def write_aux(self, name: str, arrays: dict[str, np.ndarray], exclusive: bool = False) -> bool:
        """Store arrays that belong to the whole store (e.g. its PCA projection) under `name`, atomically.

        They live inside the store so that a copied store carries them. With
        `exclusive` an existing entry is kept and False is returned: of several
        writers racing to create it, exactly one wins (on a local disk or HDF5).
        """
        self._check_writable()
        _check_aux_name(name)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self._write_aux(name, buf.getvalue(), exclusive)

    def read_aux(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays written with `write_aux(name, ...)`, or None if there are none."""
        _check_aux_name(name)
        data = self._read_aux(name)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{self.path}: the store's {name!r} arrays are damaged ({exc})") from None

    def _write_aux(self, name: str, data: bytes, exclusive: bool) -> bool:
        raise NotImplementedError(f"{self.backend} stores hold no store-level arrays")

    def _read_aux(self, name: str) -> bytes | None:
        raise NotImplementedError(f"{self.backend} stores hold no store-level arrays")

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release files and locks; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} mode={self.mode!r} dim={self.meta.get('dim')}>"

    # ------------------------------------------------------------------ shared checks
    def _check_writable(self) -> None:
        if self._closed:
            raise UserError(f"{self.path}: the store is closed")
        if self.mode == "r":
            raise UserError(f"{self.path} was opened read-only (mode 'r'); open it with mode 'a' to write")

    def _prepare_rows(self, video_id: str, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise UserError(f"video {video_id!r}: rows must have shape (n, {self.dim}) for {self.path}, "
                            f"got {rows.shape}")
        if rows.shape[0] == 0:
            raise UserError(f"video {video_id!r}: no rows to write (record it with mark_failed instead)")
        if not np.issubdtype(rows.dtype, np.number):
            raise UserError(f"video {video_id!r}: rows must be numbers, got dtype {rows.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            out = np.ascontiguousarray(rows, dtype=self.dtype)
        if not np.isfinite(out).all():
            raise UserError(f"video {video_id!r}: rows contain NaN or infinity (after the cast to {self.dtype})")
        return out

    def _prepare_video_meta(self, video_id: str, video_meta: dict, n_rows: int) -> dict:
        vmeta = dict(_jsonable(video_meta or {}))
        given = vmeta.get("n_rows")
        if given is not None and int(given) != n_rows:
            raise UserError(f"video {video_id!r}: metadata says n_rows={given} but {n_rows} rows were given")
        try:
            rule = time_rule(vmeta, n_rows, self.meta)
        except UserError as exc:
            raise UserError(f"video {video_id!r}: {exc}") from None
        duration = vmeta.get("duration")
        if not duration or not math.isfinite(float(duration)) or float(duration) <= 0:
            n_frames, fps = vmeta.get("n_frames"), vmeta.get("fps")
            duration = float(n_frames) / float(fps) if n_frames and fps else rule_duration(rule, n_rows)
        vmeta.update(n_rows=n_rows, duration=float(duration), time_rule=rule)
        for key in ("source", "fps", "n_frames"):
            vmeta.setdefault(key, None)
        return vmeta

    # ------------------------------------------------------------------ backend
    @abstractmethod
    def _write(self, video_id: str, rows: np.ndarray, vmeta: dict) -> None:
        """Rows first, then the completion marker holding `vmeta`; a crash in between leaves no marker."""

    @abstractmethod
    def _delete(self, video_id: str) -> None: ...

    @abstractmethod
    def _is_complete(self, video_id: str) -> bool: ...

    @abstractmethod
    def _complete_ids(self) -> list[str]: ...

    @abstractmethod
    def _read_video_meta(self, video_id: str) -> dict | None: ...

    @abstractmethod
    def _read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` in the on-disk dtype."""

    @abstractmethod
    def _write_failure(self, video_id: str, record: dict) -> None: ...

    @abstractmethod
    def _has_failure(self, video_id: str) -> bool: ...

    @abstractmethod
    def _delete_failure(self, video_id: str) -> None: ...

    @abstractmethod
    def _failures(self) -> dict[str, dict]: ...

    @abstractmethod
    def _size_on_disk(self) -> int: ...

    @abstractmethod
    def _close(self) -> None: ...

    # ------------------------------------------------------------------ verification (store verify)
    def _check_video(self, video_id: str) -> list[str]:
        """Backend-specific problems of a complete video (e.g. chunk checksums); none by default."""
        return []

    def _orphans(self) -> list[tuple[str, str]]:
        """(name, why) of stored things no complete video uses and no live write owns."""
        return []

    def _remove_orphan(self, name: str) -> None:
        """Remove one thing `_orphans` listed."""
        raise NotImplementedError(f"{type(self).__name__} lists no orphans, so it removes none ({name})")
