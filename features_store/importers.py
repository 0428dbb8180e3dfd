"""Bring published feature files into a store.

Three layouts are common in dense-captioning work:

* the official ActivityNet Captions C3D file: one HDF5 group per video
  (``v_<youtube id>``) holding ``c3d_features`` (n, 500), one row per 8 frames
  but no fps, so the rows split the video's duration (taken from the
  annotation files) evenly;
* an HDF5 file with one dataset per video at a known frame rate (e.g. the
  ResNet-152 frame features at 5 fps that the reference implementation used);
* a folder of ``<video_id>.npy`` files at a known frame rate and stride.

Each importer resumes: videos already complete in the store are skipped. Each
returns a summary dict (counts; ids of skipped videos in lists) and shows a
tqdm progress bar on a terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from etspipe.errors import PartialFailure, UserError
from etspipe.files import read_json
from etspipe.progress import progress_bar
from features_store.anet_pca import read_activitynet_pca
from features_store.api import open_store
from features_store.base import FeatureStore
from features_store.ids import _problem
from features_store.recipes import OFFICIAL_IMPORT_EXTRACTOR, official_recipe, set_projection

log = logging.getLogger(__name__)

ACTIVITYNET_DATASET = "c3d_features"
MAX_LISTED = 20  # ids listed per skip reason in a summary
# What the rows of an imported store mean: another value in a re-import would mix two time rules
# (fps) or two features (extractor, dim) under one store, so it is refused, not skipped.
SOURCE_KEYS = ("extractor", "layer", "dim", "clip_len", "stride", "fps")


def load_durations(annotation_paths: Iterable[str | Path]) -> dict[str, float]:
    """Video durations from ActivityNet Captions style files ``{id: {"duration": ...}}``; later files win."""
    durations: dict[str, float] = {}
    for path in annotation_paths:
        data = read_json(path, "annotation file")
        if isinstance(data, dict) and isinstance(data.get("database"), dict):
            data = data["database"]  # the ActivityNet v1.3 layout
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected an object mapping video ids to annotations")
        for vid, ann in data.items():
            duration = ann.get("duration") if isinstance(ann, dict) else None
            if isinstance(duration, (int, float)) and duration > 0:
                durations[vid] = float(duration)
    return durations


class _Summary:
    """Counts and (a few) ids per outcome of an import."""

    def __init__(self, store_path: str) -> None:
        self.t0 = time.perf_counter()
        self.counts: dict[str, int] = {"imported": 0, "skipped_existing": 0}
        self.ids: dict[str, list[str]] = {}
        self.extra: dict = {}  # other keys of the summary (the projection kept, ...)
        self.store_path = store_path

    def add(self, outcome: str, video_id: str | None = None) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if video_id is not None and outcome not in ("imported", "skipped_existing"):
            listed = self.ids.setdefault(f"{outcome}_ids", [])
            if len(listed) < MAX_LISTED:
                listed.append(video_id)

    def result(self) -> dict:
        """The summary; PartialFailure (exit 3) when not one video of the source went into the store."""
        out: dict = {"store": self.store_path, **self.counts, "seconds": round(time.perf_counter() - self.t0, 2)}
        out.update(self.ids)
        out.update(self.extra)
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        log.info("import into %s: %s", self.store_path, counts)
        if self.counts["imported"] == 0 and self.counts["skipped_existing"] == 0:
            skipped = ", ".join(f"{k.removeprefix('skipped_')} {v}" for k, v in self.counts.items()
                                if k.startswith("skipped_") and v)
            error = PartialFailure(f"import into {self.store_path} matched no video"
                                   + (f" (skipped: {skipped})" if skipped else ""))
            error.summary = out
            raise error
        return out


def _open_h5(path: str | Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise UserError(f"feature file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None


def _open_for_import(store_path: str | Path, meta: dict, durable: bool) -> FeatureStore:
    """The store opened to append, refused with one line when its rows come from another source setting."""
    store = open_store(store_path, "a", meta, durable=durable)
    for key in SOURCE_KEYS:
        old, new = store.meta.get(key), meta.get(key)
        if old is not None and new is not None and old != new and not (
                isinstance(old, (int, float)) and isinstance(new, (int, float)) and float(old) == float(new)):
            store.close()
            raise UserError(f"{store_path} holds features imported with {key}={old!r}, this import has "
                            f"{key}={new!r}; use another store")
    return store


def _import(items: Iterator[tuple[str, object]], total: int, store: FeatureStore, summary: _Summary,
            load: Callable[[object], np.ndarray], video_meta: Callable[[str, object, np.ndarray], dict],
            desc: str, has_duration: Callable[[str], bool] | None = None) -> None:
    """The shared loop: skip bad ids, complete videos and missing durations; load, check the shape, write."""
    done = set(store.complete_ids())
    for vid, item in progress_bar(items, total=total, desc=desc, unit="video"):
        if _problem(vid):
            log.warning("skipping %r: invalid video id (%s)", vid, _problem(vid))
            summary.add("skipped_invalid_id", vid)
            continue
        if vid in done:
            summary.add("skipped_existing")
            continue
        if has_duration is not None and not has_duration(vid):
            summary.add("skipped_no_duration", vid)
            continue
        try:
            rows = np.asarray(load(item))
        except (OSError, ValueError, EOFError) as exc:
            log.warning("skipping %s: cannot read its features (%s)", vid, exc)
            summary.add("skipped_unreadable", vid)
            continue
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != store.dim:
            log.warning("skipping %s: rows of shape %s, the store needs (n, %d)", vid, rows.shape, store.dim)
            summary.add("skipped_bad_shape", vid)
            continue
        store.write_video(vid, rows, video_meta(vid, item, rows))
        summary.add("imported")


def import_activitynet_c3d(h5_path: str | Path, store_path: str | Path,
                           annotation_paths: Iterable[str | Path], dtype: str = "float16",
                           durable: bool = True, pca_file: str | Path | None = None,
                           pca_u: str = "columns") -> dict:
    """Import the official ActivityNet Captions C3D file (groups ``v_*`` with ``c3d_features``).

    Row times come from the durations in `annotation_paths` (each row covers
    ``duration / n_rows`` seconds); videos without a duration are skipped and
    counted in ``skipped_no_duration``. The store records the recipe that made
    the rows (`features_store.recipes`), so raw videos can be extracted to rows of
    the same meaning; `pca_file` (ActivityNet's ``PCA_activitynet_v1-3.hdf5``, its
    square U read as `pca_u` says) is that recipe's projection, kept in the store
    (summary key ``pca``).
    """
    durations = load_durations(annotation_paths)
    if not durations:
        raise UserError("no video durations found in the annotation files")
    summary = _Summary(str(store_path))
    with _open_h5(h5_path) as src:
        names = [k for k in src if isinstance(src[k], h5py.Group) and ACTIVITYNET_DATASET in src[k]]
        if not names:
            raise UserError(f"{h5_path}: no groups with a '{ACTIVITYNET_DATASET}' dataset "
                            "(is this the official ActivityNet Captions C3D file?)")
        if not any(n in durations for n in names):
            raise PartialFailure(f"{h5_path}: none of its {len(names)} videos has a duration in the annotation "
                                 f"files (e.g. {names[0]}); nothing imported into {store_path}")
        dim = int(src[names[0]][ACTIVITYNET_DATASET].shape[1])
        projection = read_activitynet_pca(pca_file, dim, pca_u) if pca_file else None
        meta = {"extractor": OFFICIAL_IMPORT_EXTRACTOR, "layer": "fc7+pca", "dim": dim, "clip_len": 16,
                "stride": 8, "pca": {"dim": dim, "source": "official release"}, "weights": "official",
                "recipe": official_recipe(dim), "imported_from": str(h5_path), "dtype": dtype}
        with _open_for_import(store_path, meta, durable) as store:
            if projection is not None:
                summary.extra["pca"] = set_projection(store, projection, str(pca_file))
            _import(((n, src[n][ACTIVITYNET_DATASET]) for n in names), len(names), store, summary,
                    load=lambda ds: ds[()],
                    video_meta=lambda vid, ds, rows: {"duration": durations[vid], "source": f"{h5_path}:{vid}"},
                    desc="import c3d", has_duration=durations.__contains__)
    return summary.result()


def _clip_meta(source: str, n_rows: int, fps: float, stride: int, clip_len: int) -> dict:
    return {"source": source, "fps": float(fps), "stride": stride, "clip_len": clip_len,
            "duration": ((n_rows - 1) * stride + clip_len) / float(fps)}


def _check_rate(fps: float, stride: int, clip_len: int) -> None:
    if not fps or fps <= 0 or stride < 1 or clip_len < 1:
        raise UserError(f"fps must be > 0 and stride, clip_len >= 1 (got fps={fps}, stride={stride}, "
                        f"clip_len={clip_len})")


def import_hdf5_per_video(h5_path: str | Path, store_path: str | Path, fps: float, stride: int = 1,
                          clip_len: int = 1, extractor: str = "imported", dtype: str = "float16",
                          durable: bool = True) -> dict:
    """Import an HDF5 file with one 2-D dataset per video (top-level, or the only dataset of a group).

    `fps` is the frame rate the rows were taken at; row ``i`` covers frames
    ``[i*stride, i*stride + clip_len)``.
    """
    _check_rate(fps, stride, clip_len)
    summary = _Summary(str(store_path))
    with _open_h5(h5_path) as src:
        found: list[tuple[str, h5py.Dataset]] = []
        for name, obj in src.items():
            if isinstance(obj, h5py.Dataset):
                found.append((name, obj))
            else:
                inner = [o for o in obj.values() if isinstance(o, h5py.Dataset)]
                if len(inner) == 1:
                    found.append((name, inner[0]))
        two_d = [ds for _, ds in found if ds.ndim == 2]
        if not two_d:
            raise UserError(f"{h5_path}: no 2-D per-video datasets found")
        meta = {"extractor": extractor, "layer": "imported", "dim": int(two_d[0].shape[1]), "clip_len": clip_len,
                "stride": stride, "fps": float(fps), "imported_from": str(h5_path), "dtype": dtype}
        with _open_for_import(store_path, meta, durable) as store:
            _import(iter(found), len(found), store, summary, load=lambda ds: ds[()],
                    video_meta=lambda vid, ds, rows: _clip_meta(f"{h5_path}:{vid}", len(rows), fps, stride, clip_len),
                    desc="import hdf5")
    return summary.result()


def _first_dim(files: list[Path]) -> int:
    """Columns of the first readable 2-D array: the store's dimension."""
    for f in files:
        try:
            array = np.load(f, mmap_mode="r")
        except (OSError, ValueError, EOFError):
            continue
        if array.ndim == 2:
            return int(array.shape[1])
    raise UserError(f"{files[0].parent}: no readable 2-D (n, dim) .npy file")


def import_npy_folder(folder: str | Path, store_path: str | Path, fps: float, stride: int,
                      clip_len: int = 1, extractor: str = "imported", dtype: str = "float16",
                      durable: bool = True) -> dict:
    """Import a folder of ``<video_id>.npy`` files of shape (n, dim) taken at `fps` every `stride` frames.

    The dimension is that of the first readable file (in name order); files of another width are skipped.
    """
    _check_rate(fps, stride, clip_len)
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise UserError(f"{folder}: no .npy files")
    meta = {"extractor": extractor, "layer": "imported", "dim": _first_dim(files), "clip_len": clip_len,
            "stride": stride, "fps": float(fps), "imported_from": str(folder), "dtype": dtype}
    summary = _Summary(str(store_path))
    with _open_for_import(store_path, meta, durable) as store:
        _import(((f.stem, f) for f in files), len(files), store, summary,
                load=lambda f: np.load(f),
                video_meta=lambda vid, f, rows: _clip_meta(str(f), len(rows), fps, stride, clip_len),
                desc="import npy")
    return summary.result()
