"""`etspipe evaluate`: caption the ground-truth segments of a split and score them officially.

With a checkpoint, every distinct ground-truth segment (video, start, end) of
the FIRST annotation file whose video is in the store is captioned. The result
file keeps the file's own timestamps, so each caption meets its reference at
tIoU 1 whatever the feature lookup did. No segment stops the run: one past the
stored end (a download shorter than the annotated duration), zero-length or
reversed gets rows by the alignment rule (`features_store.alignment
.rows_for_segment`, as in training) and is counted in one summary line per
case. A video missing from the store (or unreadable) gets no prediction, is
listed, and scores 0, as the official protocol scores a missing prediction.
Only a problem that affects every video (no checkpoint, no such store, no
video of the file in the store, another feature dimension) stops the run.

The result JSON is scored against ALL annotation files together
(`caption_model.scoring.densevid`). With `results_path`, an existing result file from
any model is scored, no checkpoint needed. The printed table and the JSON of
scores beside the result file hold the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caption_model.captioning import (
    SegmentRows,
    caption_segments,
    external_details,
    fallback_lines,
    resolve_weights,
)
from caption_model.formats.results import default_result_path, make_result, read_result, write_json_atomic, write_result
from caption_model.scoring import densevid
from etspipe.devices import resolve_device
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

N_LISTED = 5  # ids named when videos are missing


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


def scores_path_for(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + "_scores.json")


@dataclass
class Captioned:
    """What captioning one annotation file produced."""

    doc: dict[str, Any]
    checkpoint: Path
    n_segments: int
    skipped: dict[str, str] = field(default_factory=dict)  # video -> why it has no captions
    notes: list[str] = field(default_factory=list)  # the summary lines (fallback cases, missing videos)


def run_evaluate(
    cfg: dict,
    weights: str | Path | None,
    store_path: str | Path | None,
    annotation_paths: Sequence[str | Path],
    results_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Caption (or take `results_path`), write the result JSON, score it, print and save the table.

    Returns `{"results_path", "scores_path", "scores", "checkpoint", "n_segments", "skipped", "notes"}`.
    `device` and `batch_size` default to ``train.device`` and ``decode.batch_size``.
    """
    if not annotation_paths:
        raise UserError("evaluate needs at least one --annotations file")
    references = densevid.load_references(annotation_paths)  # validates every file up front
    captioned = None
    if results_path is not None:
        result_file = Path(results_path)
        doc = read_result(result_file)
    else:
        if store_path is None:
            raise UserError("evaluate needs --store (the features) unless --results scores an existing file")
        captioned = caption_reference(cfg, weights, store_path, references[0], Path(annotation_paths[0]).name,
                                      device=device or cfg["train"]["device"],
                                      batch_size=batch_size or cfg["decode"]["batch_size"],
                                      progress=progress, echo=echo)
        doc = captioned.doc
        folder = Path(out_dir) if out_dir else Path(cfg["eval"]["results_dir"])
        result_file = write_result(default_result_path(folder, f"evaluate_{Path(annotation_paths[0]).stem}"), doc)
        _say(echo, f"wrote {captioned.n_segments} captions to {result_file}")
    scores_file = scores_path_for(result_file)
    if out_dir and results_path is not None:
        scores_file = Path(out_dir) / scores_file.name
    scores = score_and_save(cfg, doc, references, annotation_paths, result_file, scores_file,
                            None if captioned is None else captioned.checkpoint, echo)
    return {"results_path": str(result_file), "scores_path": str(scores_file), "scores": scores,
            "checkpoint": None if captioned is None else str(captioned.checkpoint),
            "n_segments": 0 if captioned is None else captioned.n_segments,
            "skipped": {} if captioned is None else captioned.skipped,
            "notes": [] if captioned is None else captioned.notes}


def score_and_save(cfg: dict, doc: dict, references: list, annotation_paths: Sequence[str | Path],
                   result_file: Path, scores_file: Path, checkpoint: Path | None,
                   echo: Callable[[str], None] | None) -> dict[str, Any]:
    """Score a result document with the official protocol; write the scores JSON and print the table."""
    ecfg = cfg["eval"]
    scores = densevid.evaluate_results(doc["results"], references=references, tious=ecfg["tious"],
                                       max_proposals=int(ecfg["max_proposals"]))
    scores["results_file"] = str(result_file)
    scores["reference_files"] = [str(p) for p in annotation_paths]
    if checkpoint is not None:
        scores["checkpoint"] = str(checkpoint)
    write_json_atomic(scores_file, scores)
    if echo:
        echo(densevid.format_table(scores))
        echo(f"scores written to {scores_file}")
    return scores


def caption_reference(cfg: dict, weights: str | Path | None, store_path: str | Path, reference: dict,
                      source: str, *, device: str | None, batch_size: int, progress: bool,
                      echo: Callable[[str], None] | None) -> Captioned:
    """Caption every distinct segment of `reference` whose video is in the store."""
    from caption_model.architectures import load_model
    from caption_model.dataset import open_store
    from caption_model.runs.checkpoint import check_feat_dim

    ckpt_path = resolve_weights(cfg, weights, echo)
    dev = resolve_device(device)
    model, vocab, ckpt = load_model(ckpt_path, dev)
    if not Path(str(store_path)).exists() and "://" not in str(store_path):
        raise UserError(f"no feature store at {store_path}")
    store = open_store(str(store_path), "r")
    try:
        check_feat_dim(ckpt, store.dim, store_path)
        wanted, skipped = _match_videos(reference, store)
        if not wanted:
            raise UserError(f"no video of {source} is in the store {store_path} "
                            f"({len(skipped)} videos missing, e.g. {next(iter(skipped), '-')})")
        # The checkpoint's data section (max_rows: the rows the model was trained to see), today's decode.
        run_cfg = {"decode": cfg["decode"], "data": ckpt["config"]["data"]}
        reader = SegmentRows(store, run_cfg["data"]["max_rows"])
        captions = caption_segments(model, vocab, store, [(s, a, b) for _, s, a, b in wanted], run_cfg,
                                    dev, batch_size=batch_size, progress=progress, reader=reader)
    finally:
        store.close()
    results: dict[str, list] = {}
    for (vid, _sid, start, end), cap in zip(wanted, captions, strict=True):
        if cap is None:
            skipped[vid] = "unreadable in store: " + reader.unreadable[_sid]
            continue
        # the annotation's own timestamps, unrounded, so the caption meets its reference at tIoU 1
        results.setdefault(vid, []).append({"timestamp": [start, end], "sentence": cap["sentence"]})
    notes = fallback_lines(reader.cases) + _missing_lines(skipped, source)
    for line in notes:
        _say(echo, line)
    n = sum(len(v) for v in results.values())
    return Captioned(make_result(results, external_details(ckpt.get("store_meta"))), ckpt_path, n, skipped, notes)


def _match_videos(reference: dict, store) -> tuple[list[tuple[str, str, float, float]], dict[str, str]]:
    """(video, store id, start, end) of the segments whose video is stored; the others' videos with a reason."""
    from caption_model.formats.annotations import store_id_for

    available = frozenset(store.complete_ids())
    failed = store.failed()
    wanted, skipped = [], {}
    for vid, start, end in distinct_segments(reference):
        sid = store_id_for(vid, available)
        if sid is not None:
            wanted.append((vid, sid, start, end))
            continue
        fid = store_id_for(vid, frozenset(failed))
        skipped[vid] = f"failed in store: {failed[fid].get('reason', 'other')}" if fid else "missing from store"
    return wanted, skipped


def _missing_lines(skipped: dict[str, str], source: str) -> list[str]:
    if not skipped:
        return []
    first = ", ".join(list(skipped)[:N_LISTED]) + (", ..." if len(skipped) > N_LISTED else "")
    return [f"warning: {len(skipped)} video(s) of {source} have no features in the store and get no "
            f"captions; they score 0, as the official protocol scores a missing prediction: {first}"]


def _say(echo: Callable[[str], None] | None, line: str) -> None:
    if echo:
        echo(line)
    else:
        logger.info("%s", line.removeprefix("warning: "))
