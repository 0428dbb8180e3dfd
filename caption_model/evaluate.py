"""`etspipe evaluate`: caption the ground-truth segments of a split and score them officially.

With a checkpoint, every distinct ground-truth segment (video, start, end) of
the FIRST annotation file is captioned (the result file keeps the file's own
timestamps, so each caption meets its reference at tIoU 1 whatever clipping the
feature lookup applies), the ActivityNet result JSON is written, and it is
scored against ALL annotation files together (`caption_model.densevid`). With
`results_path`, an existing result file from any model is scored, no
checkpoint needed. The printed table and the JSON of scores beside the result
file hold the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caption_model import densevid
from caption_model.results import (
    default_result_path,
    make_result,
    read_result,
    write_json_atomic,
    write_result,
)
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

CHUNK_SEGMENTS = 1024  # segments whose rows are in memory at once


def resolve_weights(cfg: dict, weights: str | Path | None, echo: Callable[[str], None] | None = print) -> Path:
    """The checkpoint to use: `weights`, else the best one under `train.save_dir` (said aloud)."""
    from caption_model.checkpoint import find_best

    if weights:
        path = Path(weights)
        if not path.exists():
            raise UserError(f"checkpoint not found: {path}")
        return find_best(path) if path.is_dir() else path
    save_dir = Path(cfg["train"]["save_dir"])
    if not save_dir.is_dir():
        raise UserError(f"no --weights given and no checkpoint folder {save_dir} (train a model first, "
                        f"or pass --weights CKPT)")
    best = find_best(save_dir)
    if echo:
        echo(f"using checkpoint {best} (best under {save_dir})")
    else:
        logger.info("using checkpoint %s", best)
    return best


def pick_device(name: str | None) -> torch.device:
    """`auto` takes CUDA when present; asking for CUDA without a GPU is the user's mistake."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def row_indices(n_rows: int, max_rows: int) -> np.ndarray:
    """Which of a segment's rows the model sees: the training rule (`dataset.subsample_rows`)."""
    from caption_model.dataset import subsample_rows

    return subsample_rows(np.arange(n_rows)[:, None], max_rows)[:, 0]


def distinct_segments(reference: dict) -> list[tuple[str, float, float]]:
    """Every distinct (video, start, end) of an annotation file, in file order."""
    out, seen = [], set()
    for vid, ann in reference.items():
        for ts in ann["timestamps"]:
            key = (vid, float(ts[0]), float(ts[1]))
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


def caption_segments(model, vocab, store, segments: Sequence[tuple[str, float, float]], cfg: dict,
                     device: torch.device, batch_size: int = 64, progress: bool = True,
                     return_attn: bool = False) -> list[dict[str, Any]]:
    """Caption (store id, start, end) segments in chunks; one dict per segment, in order.

    Each dict holds `sentence`, `tokens`, `words`, `score`, and with
    `return_attn` the attention (words+1, rows) and the rows' times.
    """
    from caption_model.decode import decode_segments

    dcfg = cfg.get("decode", {})
    max_rows = int(cfg.get("data", {}).get("max_rows", 256))
    out: list[dict[str, Any]] = []
    for c in range(0, len(segments), CHUNK_SEGMENTS):
        chunk = segments[c : c + CHUNK_SEGMENTS]
        rows, times = [], []
        for sid, start, end in chunk:
            lo, hi = min(start, end), max(start, end)
            r, t = store.get(sid, lo, hi)
            idx = row_indices(len(r), max_rows)
            rows.append(np.asarray(r, dtype=np.float32)[idx])
            times.append(np.asarray(t, dtype=np.float64)[idx])
        decoded = decode_segments(
            model, rows, beam_size=int(dcfg.get("beam_size", 3)), max_len=int(dcfg.get("max_len", 80)),
            length_norm=float(dcfg.get("length_norm", 0.0)), batch_size=batch_size, device=device,
            return_attn=return_attn, progress=progress)
        for d, t in zip(decoded, times, strict=False):
            words = [vocab.itos[i] if 0 <= i < len(vocab.itos) else "<unk>" for i in d.tokens]
            item = {"sentence": vocab.decode(d.tokens), "tokens": d.tokens, "words": words, "score": d.score}
            if return_attn:
                item["attn"], item["times"] = d.attn, t
            out.append(item)
        if len(segments) > CHUNK_SEGMENTS:  # progress of a long run, not a second summary of a short one
            logger.info("captioned %d / %d segments", min(c + CHUNK_SEGMENTS, len(segments)), len(segments))
    return out


def external_details(store_meta: dict | None) -> str:
    meta = store_meta or {}
    parts = [str(meta.get("extractor", "C3D")), str(meta.get("layer", "")), "features"]
    if meta.get("pca"):
        parts.insert(2, "PCA")
    return " ".join(p for p in parts if p)


def scores_path_for(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + "_scores.json")


def run_evaluate(
    cfg: dict,
    weights: str | Path | None,
    store_path: str | Path | None,
    annotation_paths: Sequence[str | Path],
    results_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Caption (or take `results_path`), write the result JSON, score it, print and save the table.

    Returns `{"results_path", "scores_path", "scores", "checkpoint", "n_segments", "skipped"}`.
    Mistakes (no checkpoint, missing store or annotation file, feature
    dimension mismatch, bad result file) are UserErrors naming the culprit.
    """
    if not annotation_paths:
        raise UserError("evaluate needs at least one --annotations file")
    references = densevid.load_references(annotation_paths)  # validates every file up front
    ecfg = cfg.get("eval", {})
    checkpoint = None
    skipped: dict[str, str] = {}
    n_segments = 0
    if results_path is not None:
        result_file = Path(results_path)
        doc = read_result(result_file)
    else:
        if store_path is None:
            raise UserError("evaluate needs --store (the features) unless --results scores an existing file")
        doc, checkpoint, n_segments, skipped = _caption_first_file(
            cfg, weights, store_path, references[0], device, batch_size, progress, echo)
        folder = Path(out_dir) if out_dir else Path(ecfg.get("results_dir", "data/evaluate_results"))
        stem = f"evaluate_{Path(annotation_paths[0]).stem}"
        result_file = write_result(default_result_path(folder, stem), doc)
        if echo:
            echo(f"wrote {n_segments} captions to {result_file}")

    scores = densevid.evaluate_results(
        doc["results"], references=references, tious=ecfg.get("tious", densevid.TIOUS),
        max_proposals=int(ecfg.get("max_proposals", 1000)))
    scores["results_file"] = str(result_file)
    scores["reference_files"] = [str(p) for p in annotation_paths]
    if checkpoint is not None:
        scores["checkpoint"] = str(checkpoint)
    scores_file = scores_path_for(result_file)
    if out_dir and results_path is not None:
        scores_file = Path(out_dir) / scores_file.name
    write_json_atomic(scores_file, scores)
    if echo:
        echo(densevid.format_table(scores))
        echo(f"scores written to {scores_file}")
    return {"results_path": str(result_file), "scores_path": str(scores_file), "scores": scores,
            "checkpoint": None if checkpoint is None else str(checkpoint), "n_segments": n_segments,
            "skipped": skipped}


def _caption_first_file(cfg, weights, store_path, reference, device, batch_size, progress, echo):
    from caption_model.checkpoint import check_feat_dim, load_model
    from caption_model.dataset import open_store, store_id_for

    ckpt_path = resolve_weights(cfg, weights, echo)
    dev = pick_device(device or cfg.get("train", {}).get("device"))
    model, vocab, ckpt = load_model(ckpt_path, dev)
    if not Path(str(store_path)).exists() and "://" not in str(store_path):
        raise UserError(f"feature store not found: {store_path}")
    store = open_store(str(store_path), "r")
    try:
        check_feat_dim(ckpt, store.dim, store_path)
        available = frozenset(store.complete_ids())
        wanted, skipped = [], {}
        for vid, start, end in distinct_segments(reference):
            sid = store_id_for(vid, available)
            if sid is None:
                skipped[vid] = "missing from store"
                continue
            wanted.append((vid, sid, start, end))
        if skipped:
            msg = (f"{len(skipped)} video(s) of the annotation file are not in the store and get no "
                   f"captions (they score 0), e.g. {next(iter(skipped))}")
            if echo:
                echo(f"warning: {msg}")
            else:
                logger.warning(msg)
        if not wanted:
            raise UserError(f"no video of the annotation file is in the store {store_path}")
        # Merge the checkpoint's decoding/data settings under the current config's decode section.
        run_cfg = {"decode": cfg.get("decode", {}), "data": ckpt.get("config", {}).get("data", cfg.get("data", {}))}
        captions = caption_segments(model, vocab, store, [(s, a, b) for _, s, a, b in wanted], run_cfg, dev,
                                    batch_size, progress)
    finally:
        store.close()
    results: dict[str, list] = {}
    for (vid, _sid, start, end), cap in zip(wanted, captions, strict=False):
        # the annotation's own timestamps, unrounded, so the caption meets its reference at tIoU 1
        results.setdefault(vid, []).append({"timestamp": [start, end], "sentence": cap["sentence"]})
    doc = make_result(results, external_details(ckpt.get("store_meta")))
    return doc, ckpt_path, len(wanted), skipped
