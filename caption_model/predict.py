"""`etspipe predict --filelist FILE`: captions for listed videos, from raw video to sentences.

Each file-list entry names a video file or a store id, optionally with a time
segment (see `caption_model.filelist`). A video file whose features are not in
the store yet is extracted on the fly with the checkpoint's extractor settings
(`extract_features.extract_one`) and written to the store, so the next run
reuses it. Every line is checked (missing file, unknown id, END <= START, times
past the video's end, unparsable numbers); bad lines are reported with their
numbers and the good ones are still captioned. The summary says how many
failed, so the CLI can exit with `PartialFailure`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from caption_model.evaluate import caption_segments, external_details, pick_device, resolve_weights
from caption_model.filelist import FileListEntry, LineError, read_filelist
from caption_model.results import default_result_path, entry, make_result, write_result
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

END_TOLERANCE_S = 1e-3  # END may exceed the stored duration by rounding only


def _open_store(path: str, mode: str, meta: dict | None = None):
    from features_store import open_store

    return open_store(path, mode, meta=meta)


def _video_id_from_path(path: Path) -> str:
    """The store's id rule for a file (its name without extension); the stem if the store lacks the rule."""
    try:
        from features_store import video_id_from_path
    except ImportError:  # store package without the helper (it is being written in parallel)
        return path.stem
    return video_id_from_path(path)


def _duration(store, sid: str) -> float | None:
    meta = store.video_meta(sid) or {}
    d = meta.get("duration")
    return float(d) if d is not None else None


def _options_of_store(cfg: dict, store_meta: dict, path: Path):
    """Extraction settings of the features the model was trained on (the store's record wins).

    The training config's `extract` section may differ from what `etspipe extract`
    actually ran with (a --layer flag, another config file); the store metadata is
    what the rows really are, so a raw video is extracted exactly like them.
    """
    from extract_features import ExtractOptions
    from extract_features.corpus import EXTRACTOR_NAME

    if store_meta and store_meta.get("extractor") != EXTRACTOR_NAME:
        raise UserError(f"{path}: not in the store, and the model's features were not made by etspipe's C3D "
                        f"extractor ({store_meta.get('extractor')}); extract or import them into the store first")
    ext = dict(cfg.get("extract", {}))
    norm = store_meta.get("normalisation") or {}
    for key in ("layer", "clip_len", "stride", "fps", "frame_size", "crop", "width_mult"):
        if key in store_meta:
            ext[key] = store_meta[key]
    for key in ("channel_order", "mean", "scale"):
        if key in norm:
            ext[key] = norm[key]
    if isinstance(store_meta.get("pad_short"), dict) and "rule" in store_meta["pad_short"]:
        ext["pad_short"] = store_meta["pad_short"]["rule"]
    return ExtractOptions.from_config({**cfg, "extract": ext})


class _Extractor:
    """Builds the C3D extractor once, on first need, with the checkpoint's settings."""

    def __init__(self, ckpt: dict, c3d_weights: str | None, device: torch.device):
        self.ckpt, self.c3d_weights, self.device = ckpt, c3d_weights, device
        self._model = None

    def __call__(self, path: Path):
        from extract_features import extract_one, make_extractor

        cfg = self.ckpt.get("config", {})
        store_meta = self.ckpt.get("store_meta") or {}
        trained = store_meta.get("weights") not in (None, "untrained")
        if trained and not self.c3d_weights:
            raise UserError(f"{path}: not in the store, and extracting it needs the C3D weights the model's "
                            f"features were made with (weights {str(store_meta.get('weights'))[:12]}...): "
                            "pass --c3d-weights")
        if store_meta.get("pca"):
            raise UserError(f"{path}: not in the store, and the model's features went through a PCA; "
                            "extract it first with `etspipe extract` into the store")
        opts = _options_of_store(cfg, store_meta, path)
        if self._model is None:
            self._model = make_extractor(opts, self.c3d_weights if trained else None, self.device, warn=trained)
        return extract_one(path, opts, self._model)


def run_predict(
    cfg: dict,
    weights: str | Path | None,
    filelist: str | Path,
    store_path: str | Path | None = None,
    out_path: str | Path | None = None,
    plot_dir: str | Path | None = None,
    *,
    c3d_weights: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Caption the entries of `filelist`; write the result JSON (and plots); return a summary.

    Summary: `{"results_path", "captions": [{"line", "video", "start", "end",
    "sentence", "plot"}], "failed": [{"line", "error"}], "n_ok", "n_failed"}`.
    `store_path` None caches extracted features in `<results_dir>/features.zarr`.
    """
    from caption_model.checkpoint import check_feat_dim, load_model

    entries, errors = read_filelist(filelist)
    failed: list[dict[str, Any]] = [{"line": e.line, "error": str(e)} for e in errors]
    ckpt_path = resolve_weights(cfg, weights, echo)
    dev = pick_device(device or cfg.get("train", {}).get("device"))
    model, vocab, ckpt = load_model(ckpt_path, dev)
    results_dir = Path(cfg.get("predict", {}).get("results_dir", "data/predict_results"))
    store_path = str(store_path) if store_path else str(results_dir / "features.zarr")
    exists = Path(store_path).exists() or "://" in store_path
    store = _open_store(store_path, "a", None if exists else dict(ckpt.get("store_meta") or {}))
    extractor = _Extractor(ckpt, c3d_weights, dev)
    base = Path(filelist).parent
    try:
        check_feat_dim(ckpt, store.dim, store_path)
        available = set(store.complete_ids())
        todo: list[tuple[FileListEntry, str, float, float]] = []
        for e in entries:
            try:
                sid = _resolve_video(e, store, available, extractor, base)
                duration = _duration(store, sid)
                start, end = (0.0, duration) if e.start is None else (e.start, e.end)
                if end is None:
                    raise UserError("the store does not know this video's duration; give START END")
                if duration is not None and end > duration + END_TOLERANCE_S:
                    raise UserError(f"END {end:g} is past the end of the video ({duration:g} s)")
                todo.append((e, sid, float(start), float(end)))
            except UserError as exc:
                failed.append({"line": e.line, "error": f"line {e.line}: {exc}"})
        failed.sort(key=lambda f: f["line"])
        for f in failed:
            if echo:
                echo(f"error: {f['error']}")
            else:
                logger.warning("%s", f["error"])
        captions = caption_segments(model, vocab, store, [(sid, s, t) for _, sid, s, t in todo],
                                    {"decode": cfg.get("decode", {}), "data": ckpt.get("config", {}).get("data", {})},
                                    dev, batch_size, progress=False, return_attn=plot_dir is not None)
    finally:
        store.close()

    results: dict[str, list] = {}
    out_caps = []
    for (e, sid, start, end), cap in zip(todo, captions, strict=False):
        results.setdefault(sid, []).append(entry(start, end, cap["sentence"]))
        plot = None
        if plot_dir is not None and cap.get("attn") is not None:
            from caption_model.plots import plot_attention, safe_name

            words = cap["words"] + (["<e>"] if cap["attn"].shape[0] > len(cap["words"]) else [])
            png = Path(plot_dir) / f"{e.line:04d}_{safe_name(sid)}_{start:.1f}-{end:.1f}.png"
            plot = str(plot_attention(
                words, cap["attn"], cap["times"], png,
                title=f"{sid} [{start:.1f}-{end:.1f} s]: {cap['sentence']}", start=start, end=end))
        out_caps.append({"line": e.line, "video": sid, "start": start, "end": end, "sentence": cap["sentence"],
                         "plot": plot})
        if echo:
            echo(f"{sid} [{start:.2f}-{end:.2f}] {cap['sentence']}")
    doc = make_result(results, external_details(ckpt.get("store_meta")))
    target = Path(out_path) if out_path else default_result_path(results_dir, f"predict_{Path(filelist).stem}")
    write_result(target, doc)
    if echo:
        echo(f"wrote {len(out_caps)} caption(s) to {target}"
             + (f"; {len(failed)} line(s) failed" if failed else ""))
    return {"results_path": str(target), "captions": out_caps, "failed": failed, "n_ok": len(out_caps),
            "n_failed": len(failed), "checkpoint": str(ckpt_path)}


def _resolve_video(e: FileListEntry, store, available: set[str], extract, base: Path) -> str:
    """Store id of an entry's video: a known id, or a file (extracted and stored if new)."""
    sid = store_id_for(e.video, frozenset(available))
    if sid is not None:
        return sid
    path = Path(e.video)
    if not path.is_absolute() and not path.exists() and (base / path).exists():
        path = base / path
    if not path.exists():
        if path.suffix or "/" in e.video:
            raise UserError(f"video file not found: {e.video}")
        raise UserError(f"unknown video id (not in the store, not a file): {e.video}")
    if path.is_dir():
        raise UserError(f"{e.video} is a folder, not a video file")
    vid = _video_id_from_path(path)
    sid = store_id_for(vid, frozenset(available))
    if sid is not None:
        return sid
    logger.info("extracting %s (not in the store yet)", path)
    rows, meta = extract(path)
    store.write_video(vid, rows, meta)
    available.add(vid)
    return vid


def store_id_for(video_id: str, available: frozenset[str]) -> str | None:
    from caption_model.dataset import store_id_for as _sid

    return _sid(video_id, available)


__all__ = ["LineError", "run_predict"]
