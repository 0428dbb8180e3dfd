"""`extract_corpus`: a corpus of videos into a feature store, resumable, with optional PCA.

Resuming is the store's commit rule put to work: a video is complete only once
all its rows are written, so a rerun skips complete videos and redoes the rest.
Failed videos are skipped too unless `retry_failed`; `overwrite` starts over.

PCA (`pca_dim` without a PCA file) runs in two passes so that it resumes just
as simply:
1. raw features go to `<store>.raw.zarr` (a normal, resumable store);
2. once every input is complete or failed there, the PCA is fitted on all its
   rows and saved atomically to `<store>.pca.npz`;
3. each raw video is projected into the final store (resumable per video).
A kill in any step and a rerun give the same store: step 1 resumes, step 2 is
redone unless its file exists (it only exists once fitted on the complete raw
store), step 3 resumes. A PCA file that exists is reused, also for videos
added later; delete it (or use overwrite) to refit. With a given PCA file,
rows are projected on the fly and no raw store is kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from etspipe.errors import UserError
from extract_features.c3d import feature_dim
from extract_features.clips import PAD_RULES
from extract_features.inputs import assign_ids, collect_videos, input_problem
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA, pca_path_for, raw_store_path_for
from extract_features.runner import make_extractor, run_pipeline
from extract_features.weights import UNTRAINED, file_sha256, warn_untrained

log = logging.getLogger(__name__)

EXTRACTOR_NAME = "c3d-sports1m"
# store meta keys that must agree for a rerun to add to an existing store
_COMPATIBLE_KEYS = ("extractor", "layer", "dim", "clip_len", "stride", "fps", "frame_size", "crop",
                    "normalisation", "weights", "width_mult")


def is_hdf5(path: str) -> bool:
    return str(path).lower().endswith((".h5", ".hdf5"))


def store_meta(opts: ExtractOptions, dim: int, weights_id: str, pca: dict | None = None) -> dict:
    """Store-level metadata of an extraction with `opts` (DESIGN.md, the feature store)."""
    return {
        "extractor": EXTRACTOR_NAME,
        "layer": opts.layer,
        "dim": int(dim),
        "clip_len": opts.clip_len,
        "stride": opts.stride,
        "fps": opts.fps,
        "frame_size": list(opts.frame_size),
        "crop": opts.crop,
        "normalisation": {"channel_order": opts.channel_order, "mean": list(opts.mean),
                          "scale": opts.scale, "pixel_range": [0, 255]},
        "pad_short": {"rule": opts.pad_short, "doc": PAD_RULES_DOC[opts.pad_short]},
        "weights": weights_id,
        "width_mult": opts.width_mult,
        "pca": pca,
        "dtype": opts.store_dtype,
        "chunk_rows": opts.chunk_rows,
    }


PAD_RULES_DOC = {
    "repeat_last": "a video shorter than clip_len frames gives one row from its frames "
                   "followed by its last frame repeated up to clip_len",
}
assert set(PAD_RULES_DOC) == set(PAD_RULES)


def open_output_store(path: str, meta: dict, overwrite: bool):
    """Open (or create) the store; an existing store made with other settings is a UserError."""
    from features_store import open_store

    try:
        store = open_store(path, "w" if overwrite else "a", meta=meta)
    except OSError as exc:
        raise UserError(f"cannot write the feature store {path}: {exc.strerror or exc}") from None
    if overwrite:
        return store
    old = store.meta or {}
    for key in _COMPATIBLE_KEYS:
        if key in old and old[key] != meta[key] and not _same(old[key], meta[key]):
            store.close()
            raise UserError(f"{path} holds features made with {key}={old[key]!r}, this run uses "
                            f"{meta[key]!r}; use another store or --overwrite")
    return store


def _same(a, b) -> bool:
    """Equality that survives a JSON round trip (tuples become lists, ints floats)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _plan(store, videos: list[tuple[str, Path]], retry_failed: bool) -> tuple[list, int]:
    """Videos still to extract, and how many are skipped because they are complete.

    An input that is no readable file (a folder named like a video, a link loop) is
    recorded as failed here, with one line, and never reaches a decoder.
    """
    complete = set(store.complete_ids())
    failed = store.failed()
    todo, skipped = [], 0
    for vid, path in videos:
        if vid in complete:
            skipped += 1
        elif vid in failed and not retry_failed:
            continue  # counted with the failures
        elif problem := input_problem(path):
            log.warning("%s (%s) failed: %s", vid, path, problem[1])
            store.mark_failed(vid, problem[0], problem[1], source=str(path))
        else:
            if vid in failed:
                store.clear_failed(vid)
            todo.append((vid, path))
    return todo, skipped


def record_failure(store, video_id: str, reason: str, detail: str, source: str) -> None:
    """Record one video's failure; a store that cannot even take that stops the run with one line."""
    try:
        store.mark_failed(video_id, reason, detail, source=source)
    except OSError as exc:
        raise UserError(f"cannot write to the feature store {store.path} ({exc.strerror or exc}); "
                        f"stopped at video {video_id}") from None


def _summary(store, store_path: str, videos, done: int, skipped: int, t0: float) -> dict:
    """done/skipped this run; failed = inputs the store records as failed (this run or before)."""
    ids = {vid for vid, _ in videos}
    failures = {vid: {"reason": f.get("reason"), "detail": f.get("detail", "")}
                for vid, f in store.failed().items() if vid in ids}
    return {"done": done, "skipped": skipped, "failed": len(failures), "seconds": time.perf_counter() - t0,
            "failures": failures, "store": str(store_path)}


def _extract_into(store_path: str, videos, opts: ExtractOptions, weights: str | None,
                  pca: IncrementalPCA | None, pca_info: dict | None, overwrite: bool, retry_failed: bool,
                  workers: int, scheduler: str | None, progress: bool) -> dict:
    t0 = time.perf_counter()
    dim = pca.n_components if pca is not None else feature_dim(opts.layer, opts.width_mult)
    weights_id = file_sha256(weights) if weights else UNTRAINED
    meta = store_meta(opts, dim, weights_id, pca_info)
    store = open_output_store(store_path, meta, overwrite)
    try:
        todo, skipped = _plan(store, videos, retry_failed)
        if not weights:
            warn_untrained()
        if workers or scheduler:
            from extract_features.distributed import run_distributed

            done = run_distributed(todo, store, store_path, opts, weights, pca, workers, scheduler, progress)
        else:
            extractor = make_extractor(opts, weights, warn=False) if todo else None

            def on_done(vid: str, rows: np.ndarray, vmeta: dict) -> None:
                if pca is not None:
                    rows = pca.transform(rows)
                store.write_video(vid, rows, vmeta)

            paths = dict(todo)

            def on_failed(vid: str, reason: str, detail: str) -> None:
                log.warning("%s (%s) failed: %s %s", vid, paths[vid], reason, detail)
                record_failure(store, vid, reason, detail, str(paths[vid]))

            counts = run_pipeline(todo, extractor, on_done, on_failed, progress=progress) if todo else {"done": 0}
            done = counts["done"]
        return _summary(store, store_path, videos, done, skipped, t0)
    finally:
        store.close()


def extract_corpus(
    inputs: list[str],
    store_path: str,
    cfg: dict,
    weights: str | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    workers: int = 0,
    scheduler: str | None = None,
    progress: bool = True,
    pca_file: str | None = None,
) -> dict:
    """Extract C3D features of every input video into `store_path`.

    Returns {"done", "skipped", "failed", "seconds", "failures": {id: {reason, detail}}}.
    """
    t0 = time.perf_counter()
    opts = ExtractOptions.from_config(cfg)
    videos = assign_ids(collect_videos(inputs))
    if (workers or scheduler) and is_hdf5(store_path):
        raise UserError(f"{store_path}: HDF5 stores take one writer; use a Zarr store with --workers/--scheduler")
    if weights and not Path(weights).is_file():
        raise UserError(f"weights file not found: {weights}")
    if pca_file:
        pca = IncrementalPCA.load(pca_file)
        if opts.pca_dim and opts.pca_dim != pca.n_components:
            raise UserError(f"{pca_file} reduces to {pca.n_components} dimensions, extract.pca_dim is {opts.pca_dim}")
        _check_pca_source(pca, opts, pca_file)
        summary = _extract_into(store_path, videos, opts, weights, pca, pca.describe(pca_file), overwrite,
                                retry_failed, workers, scheduler, progress)
    elif opts.pca_dim:
        summary = _extract_with_fitted_pca(store_path, videos, opts, weights, overwrite, retry_failed,
                                           workers, scheduler, progress)
    else:
        summary = _extract_into(store_path, videos, opts, weights, None, None, overwrite, retry_failed,
                                workers, scheduler, progress)
    summary["seconds"] = time.perf_counter() - t0
    log.info("extract: %d done, %d skipped, %d failed in %.1f s", summary["done"], summary["skipped"],
             summary["failed"], summary["seconds"])
    return summary


def _check_pca_source(pca: IncrementalPCA, opts: ExtractOptions, path: str) -> None:
    dim = feature_dim(opts.layer, opts.width_mult)
    if pca.dim != dim:
        raise UserError(f"{path} was fitted on {pca.dim}-d features, layer {opts.layer} gives {dim}")


def _extract_with_fitted_pca(store_path: str, videos, opts: ExtractOptions, weights, overwrite, retry_failed,
                             workers, scheduler, progress) -> dict:
    from features_store import open_store

    raw_path = raw_store_path_for(store_path)
    pca_path = Path(pca_path_for(store_path))
    if overwrite and pca_path.exists():
        pca_path.unlink()
    raw_summary = _extract_into(raw_path, videos, opts, weights, None, None, overwrite, retry_failed,
                                workers, scheduler, progress)
    ids = [vid for vid, _ in videos]
    with open_store(raw_path, "r") as raw:
        complete = [vid for vid in ids if raw.is_complete(vid)]
        if pca_path.exists():
            pca = IncrementalPCA.load(pca_path)
            if pca.n_components != opts.pca_dim:
                raise UserError(f"{pca_path} reduces to {pca.n_components} dimensions, not {opts.pca_dim}; "
                                "delete it or use --overwrite to refit")
        else:
            log.info("fitting PCA to %d dimensions on %d videos of %s", opts.pca_dim, len(complete), raw_path)
            fitter = IncrementalPCA(raw.dim)
            for vid in complete:
                fitter.partial_fit(raw.rows(vid))
            pca = fitter.finish(opts.pca_dim)
            pca.save(pca_path)
        weights_id = (raw.meta or {}).get("weights", UNTRAINED)
        meta = store_meta(opts, pca.n_components, weights_id, pca.describe(pca_path) | {"raw_store": raw_path})
        out = open_output_store(store_path, meta, overwrite)
        try:
            projected = 0
            for vid in complete:
                if not out.is_complete(vid):
                    out.write_video(vid, pca.transform(raw.rows(vid)), raw.video_meta(vid))
                    projected += 1
            raw_failed, out_failed, wanted = raw.failed(), out.failed(), set(ids)
            for vid, f in raw_failed.items():
                if vid in wanted and vid not in out_failed:
                    out.mark_failed(vid, f.get("reason", "other"), f.get("detail", ""), source=f.get("source", ""))
            for vid in wanted & set(out_failed) - set(raw_failed):  # retried and now complete
                out.clear_failed(vid)
            summary = _summary(out, store_path, videos, raw_summary["done"], raw_summary["skipped"],
                               time.perf_counter())
        finally:
            out.close()
    summary["pca_file"] = str(pca_path)
    summary["projected"] = projected
    return summary
