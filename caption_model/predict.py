"""`etspipe predict`: captions for videos (or parts of them) whose features are in a store.

The caption model never decodes video: raw files are extracted into the store
by `etspipe_flows.predict` (with `extract_features.extract_like_store`)
before this module captions store ids. The steps here: `load_predictor`
(checkpoint, model, the store's ids; a missing store is made only when a raw
file is extracted into it: `create_cache_store`), `locate` (which entries are store ids, which are files), and
`run_predict` (times checked per line, captions, result JSON, plots, and the
attention sidecar that the HTML viewer draws: `caption_model.formats.attention_sidecar`). Every
line is checked on its own; a bad one is reported with its number and the
others are still captioned, so the CLI can exit with `PartialFailure`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from caption_model.captioning import (
    SegmentRows,
    caption_segments,
    external_details,
    fallback_lines,
    resolve_weights,
)
from caption_model.formats.annotations import store_id_for
from caption_model.formats.attention_sidecar import AttentionSidecar, sidecar_path_for
from caption_model.formats.filelist import FileListEntry
from caption_model.formats.results import default_result_path, entry, make_result, write_result
from etspipe.devices import resolve_device
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

Failure = dict[str, Any]  # {"line": int, "error": "line N: ..."}


@dataclass
class Predictor:
    """A loaded checkpoint and the store its captions read from."""

    checkpoint: Path
    model: torch.nn.Module
    vocab: Any
    ckpt: dict
    device: torch.device
    store_path: str
    store_ids: frozenset[str]


def load_predictor(cfg: dict, weights: str | Path | None, store_path: str | Path | None, *,
                   device: str | None, echo: Callable[[str], None] | None = print) -> Predictor:
    """Load the checkpoint and read the store's ids (default store ``<predict.results_dir>/features.zarr``).

    A store that does not exist yet is not created here: ids that are in no store
    must not leave an empty store behind (`create_cache_store` makes it when a raw
    file is about to be extracted into it).
    """
    from caption_model.architectures import load_model
    from caption_model.runs.checkpoint import check_feat_dim
    from features_store import open_store

    ckpt_path = resolve_weights(cfg, weights, echo)
    dev = resolve_device(device)
    model, vocab, ckpt = load_model(ckpt_path, dev)
    path = str(store_path) if store_path else str(Path(cfg["predict"]["results_dir"]) / "features.zarr")
    ids: frozenset[str] = frozenset()
    if store_exists(path):
        store = open_store(path, "r")
        try:
            check_feat_dim(ckpt, store.dim, path)
            ids = frozenset(store.complete_ids())
        finally:
            store.close()
    return Predictor(ckpt_path, model, vocab, ckpt, dev, path, ids)


def store_exists(path: str) -> bool:
    """Whether `path` names a store already (a URL is taken to: the backend says otherwise when opened)."""
    return "://" in path or Path(path).exists()


def create_cache_store(predictor: Predictor) -> frozenset[str] | None:
    """Make the predictor's store, with the settings of the features its model was trained on, if missing.

    Returns the files the new store holds (None when it existed), so a caller
    whose extraction then wrote nothing can remove it again (`remove_empty_store`).
    """
    from features_store import open_store

    if store_exists(predictor.store_path):
        return None
    import numpy as np

    from features_store.projection import PCA_AUX

    meta = {**(predictor.ckpt.get("store_meta") or {}), "dim": int(predictor.ckpt["feat_dim"])}
    with open_store(predictor.store_path, "a", meta) as store:
        projection = predictor.ckpt.get("projection")
        if projection:  # the rows the model was trained on went through it: new videos must too
            store.write_aux(PCA_AUX, {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
                                      for k, v in projection.items()})
    return _files_of(Path(predictor.store_path))


def _files_of(path: Path) -> frozenset[str]:
    if path.is_file():
        return frozenset({path.name})
    return frozenset(str(p.relative_to(path)) for p in path.rglob("*"))


def remove_empty_store(path: str, created: frozenset[str]) -> None:
    """Remove a local store this run created, when nothing but its creation is in it (no stray files).

    `created` is what `create_cache_store` left: any other file (a video, a
    failure record, another process's write in progress) keeps the store.
    """
    import shutil

    target = Path(path)
    if not target.exists() or _files_of(target) != created:
        return
    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def _failure(line: int, message: str) -> Failure:
    return {"line": line, "error": f"line {line}: {message}"}


def locate(entries: Sequence[FileListEntry], store_ids: frozenset[str], base_dir: Path | None = None
           ) -> tuple[list[tuple[FileListEntry, str]], list[tuple[FileListEntry, Path]], list[Failure]]:
    """Split entries into (entry, store id), (entry, raw video file) and failed lines.

    A store id wins over a file of the same name; a relative path is tried as
    given, then relative to `base_dir` (the file list's folder).
    """
    known, files, failed = [], [], []
    for e in entries:
        sid = store_id_for(e.video, store_ids)
        if sid is not None:
            known.append((e, sid))
            continue
        path = Path(e.video)
        if base_dir is not None and not path.is_absolute() and not path.exists() and (base_dir / path).exists():
            path = base_dir / path
        if path.is_file():
            files.append((e, path))
        elif path.is_dir():
            failed.append(_failure(e.line, f"{e.video} is a folder, not a video file"))
        elif path.suffix or "/" in e.video:
            failed.append(_failure(e.line, f"video file not found: {e.video}"))
        else:
            failed.append(_failure(e.line, f"unknown video id (not in the store, not a file): {e.video}"))
    return known, files, failed


def _segment_times(e: FileListEntry, duration: float | None) -> tuple[float, float]:
    """The entry's (start, end): its own times (the alignment rule gives any of them rows), or the whole video."""
    if e.start is None:
        if duration is None:
            raise UserError("the store does not know this video's duration; give START END")
        return 0.0, float(duration)
    return float(e.start), float(e.end)


def run_predict(cfg: dict, predictor: Predictor, targets: Sequence[tuple[FileListEntry, str]],
                failed: Sequence[Failure] = (), *, name: str, out_path: str | Path | None = None,
                plot_dir: str | Path | None = None, attention: bool = False, batch_size: int | None = None,
                echo: Callable[[str], None] | None = print, proposal_scores: dict | None = None,
                notes: Sequence[str] = ()) -> dict[str, Any]:
    """Caption `targets` (entries resolved to store ids); write the result JSON (and plots); return a summary.

    Summary: `{"results_path", "attention_path", "captions": [{"line", "video",
    "start", "end", "sentence", "plot"}], "failed": [{"line", "error"}], "n_ok",
    "n_failed", "checkpoint", "notes"}`; when nothing was captioned no file is
    written and `results_path` is None. `failed` holds lines that failed earlier
    (parsing, extraction); `name` names the default result file
    (``predict_<name>_<time>.json``). With `plot_dir` or `attention` the attention
    of every caption is also saved beside it (``<stem>_attention.json``, None otherwise).
    `proposal_scores` ((line, start, end) -> score, from `proposal_dense.expand_untimed`)
    adds ``proposal_score`` to those captions; `notes` are printed with the summary.
    """
    from features_store import open_store

    failed = list(failed)
    if not targets:
        return _nothing_captioned(echo, failed, predictor, notes)
    store = open_store(predictor.store_path, "r")
    try:
        todo, durations = [], {}
        for e, sid in targets:
            try:
                durations[sid] = store.video_meta(sid).get("duration")
                todo.append((e, sid, *_segment_times(e, durations[sid])))
            except UserError as exc:
                failed.append(_failure(e.line, str(exc)))
        run_cfg = {"decode": cfg["decode"], "data": predictor.ckpt["config"]["data"]}
        reader = SegmentRows(store, run_cfg["data"]["max_rows"])
        captions = caption_segments(predictor.model, predictor.vocab, store, [(s, a, b) for _, s, a, b in todo],
                                    run_cfg, predictor.device, batch_size=batch_size or cfg["decode"]["batch_size"],
                                    progress=False, return_attn=plot_dir is not None or attention, reader=reader)
    finally:
        store.close()
    out_caps = []
    sidecar = AttentionSidecar() if plot_dir is not None or attention else None
    per_video: dict[str, int] = {}  # captions so far per video: a caption's place in the result file's list
    for (e, sid, start, end), cap in zip(todo, captions, strict=True):
        if cap is None:
            failed.append(_failure(e.line, f"cannot read the features of {sid}: {reader.unreadable[sid]}"))
            continue
        plot = _plot(plot_dir, e, sid, start, end, cap)
        if sidecar is not None and cap.get("attn") is not None:
            sidecar.add(sid, per_video.get(sid, 0), _attn_words(cap), cap["attn"], cap["times"], [start, end],
                        cap["sentence"], duration=durations.get(sid))
        out_caps.append({"line": e.line, "video": sid, "start": start, "end": end, "sentence": cap["sentence"],
                         "plot": plot})
        if proposal_scores and (e.line, start, end) in proposal_scores:
            out_caps[-1]["proposal_score"] = proposal_scores[(e.line, start, end)]
        per_video[sid] = per_video.get(sid, 0) + 1
    failed.sort(key=lambda f: f["line"])
    notes = list(notes) + fallback_lines(reader.cases)
    if not out_caps:
        return _nothing_captioned(echo, failed, predictor, notes)
    target = Path(out_path) if out_path else default_result_path(cfg["predict"]["results_dir"], f"predict_{name}")
    _write(target, out_caps, predictor.ckpt)
    attention_path = str(sidecar.write(sidecar_path_for(target))) if sidecar is not None else None
    _report(echo, out_caps, failed, notes, target)
    return {"results_path": str(target), "attention_path": attention_path, "captions": out_caps, "failed": failed,
            "n_ok": len(out_caps), "n_failed": len(failed), "checkpoint": str(predictor.checkpoint), "notes": notes}


def _nothing_captioned(echo: Callable[[str], None] | None, failed: list[Failure], predictor: Predictor,
                       notes: Sequence[str]) -> dict[str, Any]:
    """The summary of a run that captioned nothing: no result file is written (an empty one would look done)."""
    failed = sorted(failed, key=lambda f: f["line"])
    lines = [f"error: {f['error']}" for f in failed] + list(notes)
    lines.append(f"nothing was captioned ({len(failed)} line(s) failed); no result file written")
    for line in lines:
        echo(line) if echo else logger.info("%s", line)
    return {"results_path": None, "attention_path": None, "captions": [], "failed": failed, "n_ok": 0,
            "n_failed": len(failed), "checkpoint": str(predictor.checkpoint), "notes": list(notes)}


def _write(target: Path, captions: list[dict], ckpt: dict) -> None:
    results: dict[str, list] = {}
    for c in captions:
        item = entry(c["start"], c["end"], c["sentence"])
        if "proposal_score" in c:  # a dense event (null: the whole video, no proposal passed)
            score = c["proposal_score"]
            item["proposal_score"] = None if score is None else round(float(score), 4)
        results.setdefault(c["video"], []).append(item)
    write_result(target, make_result(results, external_details(ckpt.get("store_meta"))))


def _attn_words(cap: dict) -> list[str]:
    """One label per attention row: the words, and `<e>` when the model's step that ended it is kept."""
    return cap["words"] + (["<e>"] if cap["attn"].shape[0] > len(cap["words"]) else [])


def _plot(plot_dir: str | Path | None, e: FileListEntry, sid: str, start: float, end: float, cap: dict) -> str | None:
    if plot_dir is None or cap.get("attn") is None:
        return None
    from caption_model.formats.plots import plot_attention, safe_name

    png = Path(plot_dir) / f"{e.line:04d}_{safe_name(sid)}_{start:.1f}-{end:.1f}.png"
    return str(plot_attention(_attn_words(cap), cap["attn"], cap["times"], png,
                              title=f"{sid} [{start:.1f}-{end:.1f} s]: {cap['sentence']}", start=start, end=end))


def _report(echo: Callable[[str], None] | None, captions: list[dict], failed: list[Failure], notes: list[str],
            target: Path) -> None:
    """Each caption, each failed line and the summary, printed once (or logged when there is no echo)."""
    lines = [f"{c['video']} [{c['start']:.2f}-{c['end']:.2f}] {c['sentence']}" for c in captions]
    lines += [f"error: {f['error']}" for f in failed] + notes
    failures = f"; {len(failed)} line(s) failed" if failed else ""
    lines.append(f"wrote {len(captions)} caption(s) to {target}{failures}")
    for line in lines:
        if echo:
            echo(line)
        else:
            logger.info("%s", line)
