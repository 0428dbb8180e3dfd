"""`extract_corpus`: a corpus of videos into a feature store, resumable, with optional PCA.

Resuming is the store's commit rule put to work: a video is complete only once
all its rows are written, so a rerun skips complete videos and redoes the rest.
Failed videos are skipped too unless `retry_failed`; `overwrite` starts over.

PCA: the projection lives inside the store (`pca.STORE_AUX`), written once, and
every projected video records its sha256, so a copied store is complete and a
store never mixes two projections. With `pca_dim` and no projection yet:
1. raw features go to the working store `<store>.raw.zarr` (resumable);
2. the PCA is fitted on every complete raw video -- refused, with one line,
   from no more rows than dimensions -- and stored in the store (if two runs
   race, the first stored projection is the one both use);
3. each raw video is projected into the store (resumable per video).
Once the store holds a projection, later runs (new videos, a rerun after a
kill) project with it: from the working store where it holds the video, on
the fly otherwise. The store is opened first, so a wrong output path fails
before any work. `--pca-file` puts a saved projection into the store instead
of fitting one; a store holding another projection is refused (`overwrite`
starts over).

`recipe="activitynet-resnet152"` extracts by ActivityNet's ResNet-152 frame
recipe instead of the config's C3D (`resnet_recipe`); the same plan, resume,
failures and dask fan-out apply, with no PCA.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import fsspec
import numpy as np

from etspipe.errors import UserError
from extract_features import resnet152, resnet_recipe
from extract_features.c3d import feature_dim
from extract_features.clips import PAD_RULES
from extract_features.inputs import assign_ids, collect_videos, input_problem
from extract_features.mean_cube import cube_identity, load_mean_cube
from extract_features.options import ExtractOptions
from extract_features.pca import (
    STORE_AUX,
    IncrementalPCA,
    load_projection,
    raw_store_path_for,
    store_pca_meta,
    stored_projection,
)
from extract_features.runner import make_extractor, record_failure, run_pipeline
from extract_features.weights import UNTRAINED, file_sha256, warn_untrained
from features_store import anet_pca

log = logging.getLogger(__name__)

EXTRACTOR_NAME = "c3d-sports1m"
# store meta keys that must agree for a rerun to add to an existing store
_COMPATIBLE_KEYS = ("extractor", "layer", "dim", "clip_len", "stride", "fps", "frame_size", "crop",
                    "normalisation", "weights", "width_mult", "pca")


def is_hdf5(path: str) -> bool:
    from features_store import backend_for  # the store's own rule (it also ignores a trailing slash)

    return backend_for(path) == "hdf5"


def store_meta(opts: ExtractOptions, dim: int, weights_id: str, pca: dict | None = None,
               mean_cube: dict | None = None) -> dict:
    """Store-level metadata of an extraction with `opts` (docs/ARCHITECTURE.md, the store contract).

    `mean_cube` (`mean_cube.cube_identity`) is recorded in the normalisation only when a cube is
    used, so stores made without one keep the metadata they always had.
    """
    normalisation = {"channel_order": opts.channel_order, "mean": list(opts.mean),
                     "scale": opts.scale, "pixel_range": [0, 255]}
    if mean_cube is not None:
        normalisation["mean_cube"] = mean_cube
    return {
        "extractor": EXTRACTOR_NAME,
        "layer": opts.layer,
        "dim": int(dim),
        "clip_len": opts.clip_len,
        "stride": opts.stride,
        "fps": opts.fps,
        "frame_size": list(opts.frame_size),
        "crop": opts.crop,
        "normalisation": normalisation,
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


def open_output_store(path: str, meta: dict, overwrite: bool, durable: bool):
    """Open (or create) the store; an existing store made with other settings is a UserError."""
    from features_store import open_store

    try:
        store = open_store(path, "w" if overwrite else "a", meta=meta, durable=durable)
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


def _summary(store, videos, done: int, skipped: int) -> dict:
    """done/skipped this run; failed = inputs the store records as failed (this run or before)."""
    ids = {vid for vid, _ in videos}
    failures = {vid: {"reason": f.get("reason"), "detail": f.get("detail", "")}
                for vid, f in store.failed().items() if vid in ids}
    return {"done": done, "skipped": skipped, "failed": len(failures), "failures": failures,
            "store": str(store.path)}


@dataclass(frozen=True)
class _Run:
    """The settings of one `extract_corpus` call that every pass shares."""

    opts: ExtractOptions
    weights: str | None
    overwrite: bool
    retry_failed: bool
    workers: int
    scheduler: str | None
    progress: bool

    @cached_property
    def weights_id(self) -> str:
        return file_sha256(self.weights) if self.weights else UNTRAINED

    @cached_property
    def mean_cube_id(self) -> dict | None:
        """The identity of the mean cube (extract.mean_cube), checked once before any work; None without one."""
        opts = self.opts
        if not opts.mean_cube:
            return None
        return cube_identity(opts.mean_cube, load_mean_cube(opts.mean_cube, opts.clip_len, opts.frame_size))

    @property
    def source_dim(self) -> int:
        if self.opts.network == "resnet152":
            return resnet152.feature_dim(self.opts.width_mult)
        return feature_dim(self.opts.layer, self.opts.width_mult)

    def meta(self, dim: int, pca: dict | None = None) -> dict:
        if self.opts.network == "resnet152":
            return resnet_recipe.store_meta(self.opts, self.weights_id)
        return store_meta(self.opts, dim, self.weights_id, pca, self.mean_cube_id)


def _extract_into(store, videos, run: _Run, pca: IncrementalPCA | None) -> dict:
    """Extract the videos `store` lacks (projected by `pca`, if any) into the open `store`."""
    todo, skipped = _plan(store, videos, run.retry_failed)
    if not run.weights:
        warn_untrained(run.opts.network)
    if run.workers or run.scheduler:
        from extract_features.distributed import run_distributed

        done = run_distributed(todo, store, store.path, run.opts, run.weights, pca, run.workers, run.scheduler,
                               run.progress)
        return _summary(store, videos, done, skipped)
    extractor = make_extractor(run.opts, run.weights, warn=False) if todo else None
    paths = dict(todo)

    def on_done(vid: str, rows: np.ndarray, vmeta: dict) -> None:
        if pca is not None:
            rows, vmeta = pca.project(rows, vmeta)
        store.write_video(vid, rows, vmeta)

    def on_failed(vid: str, reason: str, detail: str) -> None:
        log.warning("%s (%s) failed: %s %s", vid, paths[vid], reason, detail)
        record_failure(store, vid, reason, detail, str(paths[vid]))

    counts = run_pipeline(todo, extractor, on_done, on_failed, progress=run.progress) if todo else {"done": 0}
    return _summary(store, videos, counts["done"], skipped)


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
    recipe: str | None = None,
) -> dict:
    """Extract C3D features (or, with `recipe`, the recipe's) of every input video into `store_path`.

    Returns {"done", "skipped", "failed", "seconds", "failures": {id: {reason, detail}}}.
    """
    t0 = time.perf_counter()
    opts = _recipe_options(cfg, recipe, pca_file) if recipe else ExtractOptions.from_config(cfg)
    if (workers or scheduler) and is_hdf5(store_path):
        raise UserError(f"{store_path}: HDF5 stores take one writer; use a Zarr store with --workers/--scheduler")
    if weights and not Path(weights).is_file():
        raise UserError(f"weights file not found: {weights}")
    check_output_path(store_path)
    videos = assign_ids(collect_videos(inputs))
    run = _Run(opts, weights, overwrite, retry_failed, workers, scheduler, progress)
    if pca_file:
        summary = _extract_with_given_pca(store_path, videos, run, pca_file)
    elif opts.pca_dim:
        summary = _extract_with_fitted_pca(store_path, videos, run)
    else:
        with open_output_store(store_path, run.meta(run.source_dim), overwrite, opts.store_durable) as store:
            summary = _extract_into(store, videos, run, None)
    summary["seconds"] = time.perf_counter() - t0
    log.info("extract: %d done, %d skipped, %d failed in %.1f s", summary["done"], summary["skipped"],
             summary["failed"], summary["seconds"])
    return summary


def _recipe_options(cfg: dict, recipe: str, pca_file: str | None) -> ExtractOptions:
    """Options of a named recipe; what the recipe does not have (a projection) is one line."""
    if recipe != resnet_recipe.RECIPE_CHOICE:
        raise UserError(f"unknown recipe {recipe!r}; etspipe extracts by {resnet_recipe.RECIPE_CHOICE}")
    if pca_file or cfg["extract"].get("pca_dim"):
        raise UserError(f"the {recipe} recipe's rows are layer4 averaged, with no projection: leave out "
                        f"{'--pca-file' if pca_file else '--pca / extract.pca_dim'}")
    if cfg["extract"].get("mean_cube"):
        raise UserError(f"the {recipe} recipe takes ImageNet's mean and std: leave out --mean-cube")
    return resnet_recipe.resnet_options(cfg)


def check_output_path(path: str) -> None:
    """Refuse, before any work, an output that exists and is not a feature store (a plain file, a
    text file named .h5, a folder of other things)."""
    fs, root = fsspec.core.url_to_fs(str(path))
    if not fs.exists(root) or (fs.isdir(root) and not fs.ls(root, detail=False)):
        return
    if not is_hdf5(path) and fs.isfile(root):
        raise UserError(f"{path} is a file, not a Zarr feature store; choose another output")
    from features_store import open_store

    open_store(path, "r").close()  # one line if it is not a store of ours


def _check_pca_source(pca: IncrementalPCA, opts: ExtractOptions, where: str) -> None:
    dim = feature_dim(opts.layer, opts.width_mult)
    if pca.dim != dim:
        raise UserError(f"{where} projects {pca.dim}-d features, layer {opts.layer} gives {dim}")
    if opts.pca_dim and opts.pca_dim != pca.n_components:
        raise UserError(f"{where} reduces to {pca.n_components} dimensions, extract.pca_dim is {opts.pca_dim}"
                        "; use --overwrite to start the store over")


def _attach_projection(store, pca: IncrementalPCA) -> IncrementalPCA:
    """Keep `pca` in the store unless it holds one already; the store's own projection wins a race
    (two runs fitting at once end with one projection), another given projection is refused."""
    if store.write_aux(STORE_AUX, pca.arrays(), exclusive=True):
        return pca
    stored = stored_projection(store)
    if stored.checksum() != pca.checksum():
        log.warning("another run stored its PCA projection in %s first; using that one", store.path)
    return stored


def given_projection(pca_file: str, opts: ExtractOptions) -> IncrementalPCA:
    """The projection of `--pca-file` (etspipe's .npz or ActivityNet's HDF5), checked against the layer.

    From an ActivityNet file the first `extract.pca_dim` components are kept, or
    `extract.pca_file_dim` (500: the published rows) when no --pca is given.
    """
    k = opts.pca_dim or (opts.pca_file_dim if anet_pca.is_hdf5(pca_file) else None)
    pca = load_projection(pca_file, k, opts.pca_file_u)
    _check_pca_source(pca, opts, pca_file)
    return pca


def _extract_with_given_pca(store_path: str, videos, run: _Run, pca_file: str) -> dict:
    pca = given_projection(pca_file, run.opts)
    meta = run.meta(pca.n_components, store_pca_meta(pca.n_components, pca.dim, pca.kind))
    with open_output_store(store_path, meta, run.overwrite, run.opts.store_durable) as store:
        stored = stored_projection(store)
        if stored is None and store.complete_ids():
            raise UserError(f"{store_path} holds videos but not the PCA projection they went through; "
                            "use --overwrite to start over")
        if stored is not None and stored.checksum() != pca.checksum():
            raise UserError(f"{store_path} holds videos projected by another PCA (sha256 "
                            f"{stored.checksum()[:12]}, not {pca_file}'s); use another store or --overwrite")
        pca = _attach_projection(store, pca)
        return _extract_into(store, videos, run, pca) | {"pca": pca.identity()}


def _extract_with_fitted_pca(store_path: str, videos, run: _Run) -> dict:
    """Fit the store's projection on the raw features of the first run, then project (module docstring)."""
    k = run.opts.pca_dim
    with open_output_store(store_path, run.meta(k, store_pca_meta(k, run.source_dim)), run.overwrite,
                           run.opts.store_durable) as out:
        pca = stored_projection(out)
        if pca is None:
            if out.complete_ids():
                raise UserError(f"{store_path} holds videos but not the PCA projection they went through (an "
                                "older etspipe kept it beside the store); use --overwrite to start over")
            pca = _fit_projection(out, videos, run)
        _check_pca_source(pca, run.opts, store_path)
        projected = _project_raw(out, videos, pca, run.opts)
        summary = _extract_into(out, videos, run, pca)
        summary["done"] += projected  # done: videos new in the store this run
        summary["skipped"] -= projected
        return summary | {"pca": pca.identity(), "projected": projected}


def _fit_projection(out, videos, run: _Run) -> IncrementalPCA:
    """Pass 1 (raw features into the working store) and the fit; returns the store's projection."""
    from features_store import open_store

    raw_path = raw_store_path_for(out.path)
    with open_output_store(raw_path, run.meta(run.source_dim), run.overwrite, run.opts.store_durable) as raw:
        _extract_into(raw, videos, run, None)
        complete = [vid for vid, _ in videos if raw.is_complete(vid)]
    with open_store(raw_path, "r") as raw:
        log.info("fitting PCA to %d dimensions on %d videos of %s", run.opts.pca_dim, len(complete), raw_path)
        fitter = IncrementalPCA(raw.dim)
        for vid in complete:
            fitter.partial_fit(raw.rows(vid))
    return _attach_projection(out, fitter.finish(run.opts.pca_dim))


def _project_raw(out, videos, pca: IncrementalPCA, opts: ExtractOptions) -> int:
    """Pass 2: project the working store's videos that `out` lacks; copy its failures. Returns projected."""
    from features_store import open_store

    raw_path = raw_store_path_for(out.path)
    try:
        raw = open_store(raw_path, "r")
    except UserError:  # no working store: every video is extracted and projected on the fly
        return 0
    projected, wanted = 0, {vid for vid, _ in videos}
    with raw:
        for vid in [v for v in raw.complete_ids() if v in wanted and not out.is_complete(v)]:
            out.write_video(vid, *pca.project(raw.rows(vid), raw.video_meta(vid)))
            projected += 1
        out_failed = out.failed()
        for vid, f in raw.failed().items():
            if vid in wanted and vid not in out_failed and not out.is_complete(vid):
                out.mark_failed(vid, f.get("reason", "other"), f.get("detail", ""), source=f.get("source", ""))
        for vid in wanted & set(out_failed) - set(raw.failed()):
            if raw.is_complete(vid):  # retried and now complete
                out.clear_failed(vid)
    return projected
