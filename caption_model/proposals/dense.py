"""Dense captioning: the proposal model's events, captioned through the same decoding path as given segments.

Two users: `predict` (a file-list line with a video and no times becomes one
segment per event; `expand_untimed`) and `evaluate --dense` (every stored video
of all the annotation files, as the official scorer scores them all;
`run_dense_evaluate`, which also writes every proposal in ActivityNet's
proposal-task format and scores that file as `evaluate --proposals` does).
The events of a video are its proposals scoring at least the events threshold
(calibrated on held-out videos when the model trained, or
``proposals.score_threshold``), at most ``proposals.max_events`` of them (best
scores first), sorted by start. A video with no proposal above the threshold
is captioned whole, and the run says so.
Each result entry carries its ``proposal_score`` (null for a whole-video fallback).

The proposal model is found in the captioner's run folder (the folder of the
checkpoint in use): training both into one folder is what ties them together.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from caption_model.proposals.infer import Proposer, check_store, find_proposal_checkpoint, video_events
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

Scores = dict[tuple[int, float, float], Any]  # (file-list line, start, end) -> proposal score
Targets = list[tuple[Any, str]]  # (file-list entry, store id)


def load_proposer(run_dir: Path, device) -> Proposer | None:
    """The proposal model of a run folder, or None when it has none."""
    path = find_proposal_checkpoint(run_dir)
    return None if path is None else Proposer.load(path, device)


def video_plan(proposer: Proposer, store, sid: str, pcfg: dict, max_events: int) -> tuple[list[dict], str | None]:
    """The events of one store video (``{"segment", "score"}``, by start) and the whole-video note, if any."""
    props = proposer.propose_with(store, sid, pcfg)
    duration = float(store.video_meta(sid)["duration"])
    return video_events(props, duration, proposer.event_threshold(pcfg), max_events)


def fallback_note(whole: dict[str, str]) -> list[str]:
    """One line for all videos captioned whole because no proposal passed the threshold."""
    if not whole:
        return []
    vid, why = next(iter(whole.items()))
    return [f"warning: {len(whole)} video(s) captioned whole: {why} (first: {vid})"]


def expand_untimed(cfg: dict, checkpoint: Path, store_path: str, targets: Sequence[tuple[Any, str]], *,
                   max_events: int | None = None, device: Any = "cpu") -> tuple[Targets, Scores, list[str]]:
    """Replace each entry without times by one entry per event of its video; entries with times stay.

    Returns (targets, proposal scores by (line, start, end), notes). Without a
    proposal model beside `checkpoint`, untimed lines stay whole-video and one
    note says why; a video whose proposals cannot be computed stays whole too.
    """
    untimed = [e for e, _ in targets if e.start is None]
    if not untimed:
        return list(targets), {}, []
    proposer = load_proposer(Path(checkpoint).parent, device)
    if proposer is None:
        return list(targets), {}, [f"warning: no proposal model in {Path(checkpoint).parent} (train one with "
                                   f"`etspipe train-proposals`): {len(untimed)} line(s) without times caption "
                                   "the whole video"]
    from features_store import open_store

    pcfg = cfg["proposals"]
    limit = int(max_events if max_events is not None else pcfg["max_events"])
    out, scores, whole, failed = [], {}, {}, {}
    with open_store(store_path, "r") as store:
        check_store(proposer.ckpt, dict(store.meta), store_path)
        for e, sid in targets:
            if e.start is not None:
                out.append((e, sid))
                continue
            try:
                events, why = video_plan(proposer, store, sid, pcfg, limit)
            except (UserError, OSError, ValueError, KeyError) as exc:
                failed[sid] = f"{type(exc).__name__}: {exc}"
                out.append((e, sid))
                continue
            if why:
                whole[sid] = why
            for ev in events:
                start, end = ev["segment"]
                out.append((dataclasses.replace(e, start=start, end=end), sid))
                scores[(e.line, start, end)] = ev["score"]
    notes = fallback_note(whole) + [f"warning: proposals of {sid} failed ({why}): captioned whole"
                                    for sid, why in failed.items()]
    return out, scores, notes


def dense_results(cfg: dict, model, vocab, proposer: Proposer, store, wanted: Sequence[tuple[str, str]],
                  run_cfg: dict, device, *, batch_size: int, progress: bool) -> tuple[dict, dict, list[str]]:
    """Captioned events of (video, store id) pairs: (results, all proposals by video, notes)."""
    from caption_model.captioning import SegmentRows, caption_segments, fallback_lines
    from caption_model.formats.results import entry

    pcfg = cfg["proposals"]
    proposals, plans, whole, failed = {}, [], {}, {}
    for vid, sid in wanted:
        try:
            props = proposer.propose_with(store, sid, pcfg)
        except (UserError, OSError, ValueError, KeyError) as exc:
            failed[vid] = f"{type(exc).__name__}: {exc}"
            continue
        proposals[vid] = props
        events, why = video_events(props, float(store.video_meta(sid)["duration"]),
                                   proposer.event_threshold(pcfg), int(pcfg["max_events"]))
        if why:
            whole[vid] = why
        plans += [(vid, sid, ev) for ev in events]
    reader = SegmentRows(store, run_cfg["data"]["max_rows"])
    caps = caption_segments(model, vocab, store, [(sid, *ev["segment"]) for _, sid, ev in plans], run_cfg,
                            device, batch_size=batch_size, progress=progress, reader=reader)
    results: dict[str, list] = {}
    for (vid, _sid, ev), cap in zip(plans, caps, strict=True):
        if cap is not None:
            item = entry(*ev["segment"], cap["sentence"])
            item["proposal_score"] = None if ev["score"] is None else round(float(ev["score"]), 4)
            results.setdefault(vid, []).append(item)
    notes = fallback_lines(reader.cases) + fallback_note(whole)
    notes += [f"warning: {len(failed)} video(s) have no proposals ({next(iter(failed.items()))})"] if failed else []
    return results, proposals, notes


def run_dense_evaluate(cfg: dict, weights: str | Path | None, store_path: str, annotation_paths: Sequence[str], *,
                       out_dir: str | Path | None = None, device: str | None = None, batch_size: int | None = None,
                       progress: bool = True, echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Caption the model's own events of every stored video of all the files; official scores plus AR@AN.

    Writes ``dense_<stem>_<time>.json`` (results with proposal scores), its
    ``_scores.json`` (official protocol against ALL annotation files), and
    ``dense_<stem>_<time>_proposals.json``: every proposal of every video (up
    to ``proposals.max_proposals``, before the events threshold) in
    ActivityNet's proposal-task format, with its ``_scores.json`` (AR@AN) and
    ``_ar_an.png`` beside it, as `evaluate --proposals` writes them.
    """
    from caption_model.architectures import load_model
    from caption_model.captioning import external_details, resolve_weights
    from caption_model.evaluate import score_and_save, scores_path_for
    from caption_model.formats.proposals import make_proposals, proposals_path_for, write_proposals
    from caption_model.formats.results import default_result_path, make_result, write_result
    from caption_model.runs.checkpoint import check_feat_dim
    from caption_model.scoring import densevid
    from caption_model.scoring.proposal_metrics import score_proposal_file
    from etspipe.devices import resolve_device
    from features_store import open_store

    references = densevid.load_references(annotation_paths)
    ckpt_path = resolve_weights(cfg, weights, echo)
    dev = resolve_device(device or cfg["train"]["device"])
    model, vocab, ckpt = load_model(ckpt_path, dev)
    proposer = load_proposer(ckpt_path.parent, dev)
    if proposer is None:
        raise UserError(f"evaluate --dense needs a proposal model beside {ckpt_path} (proposals_best.pt); "
                        "train one with `etspipe train-proposals --save_dir " f"{ckpt_path.parent}`")
    if not Path(str(store_path)).exists() and "://" not in str(store_path):
        raise UserError(f"no feature store at {store_path}")
    with open_store(str(store_path), "r") as store:
        check_feat_dim(ckpt, store.dim, store_path)
        check_store(proposer.ckpt, dict(store.meta), str(store_path))
        wanted, missing = _stored_videos(references, store)
        if not wanted:
            raise UserError(f"no video of {', '.join(map(str, annotation_paths))} is in the store {store_path}")
        run_cfg = {"decode": cfg["decode"], "data": ckpt["config"]["data"]}
        results, proposals, notes = dense_results(cfg, model, vocab, proposer, store, wanted, run_cfg, dev,
                                                  batch_size=batch_size or cfg["decode"]["batch_size"],
                                                  progress=progress)
    if missing:
        notes.append(f"warning: {len(missing)} video(s) of the annotation files are not in the store and score 0 "
                     f"(first: {missing[0]})")
    folder = Path(out_dir) if out_dir else Path(cfg["eval"]["results_dir"])
    details = external_details(ckpt.get("store_meta"))
    result_file = write_result(default_result_path(folder, f"dense_{Path(annotation_paths[0]).stem}"),
                               make_result(results, details))
    proposals_file = write_proposals(proposals_path_for(result_file), make_proposals(
        proposals, f"{details}; proposals of {proposer.ckpt['path']}"))
    for line in notes + [f"wrote {sum(map(len, results.values()))} dense captions of {len(results)} videos to "
                         f"{result_file}", f"wrote {sum(map(len, proposals.values()))} proposals of "
                         f"{len(proposals)} videos to {proposals_file}"]:
        echo(line) if echo else logger.info("%s", line)
    scores = score_and_save(cfg, {"results": results}, references, annotation_paths, result_file,
                            scores_path_for(result_file), ckpt_path, echo)
    story = _soda(results, annotation_paths, scores_path_for(result_file), echo)
    figures = score_proposal_file(proposals_file, annotation_paths, subset=None, echo=echo)
    return {"results_path": str(result_file), "scores_path": str(scores_path_for(result_file)), "scores": scores,
            "soda_c": story,
            "proposals_path": str(proposals_file), "proposals": figures, "checkpoint": str(ckpt_path),
            "proposal_checkpoint": proposer.ckpt["path"], "n_events": sum(map(len, results.values())),
            "notes": notes}


def _soda(results: dict, annotation_paths: Sequence[str], scores_path: Path,
          echo: Callable[[str], None] | None) -> dict[str, Any]:
    """SODA_c (story-level: one ordered matching of events per video) beside the official scores, saved with them.

    PDVC reports it next to densevid_eval's numbers; its averaging over the
    reference files ("pdvc") is the one used, so the figures compare with theirs.
    """
    import json

    from caption_model.formats.results import write_json_atomic
    from caption_model.scoring.soda import soda_c

    story = soda_c(results, list(annotation_paths))
    if story.get("soda_c") is None:
        line = "SODA_c: not computed (" + "; ".join(story.get("warnings") or ["METEOR needs Java"]) + ")"
    else:
        line = (f"SODA_c {story['soda_c']:.2f} (precision {story['precision']:.2f}, recall {story['recall']:.2f}; "
                f"ordered matching of each video's events, averaged over the reference files as PDVC does)")
    echo(line) if echo else logger.info("%s", line)
    saved = json.loads(Path(scores_path).read_text(encoding="utf-8"))
    saved["soda_c"] = {k: v for k, v in story.items() if k not in ("per_video",)}
    write_json_atomic(scores_path, saved)
    return story


def _stored_videos(references: Sequence[dict], store) -> tuple[list[tuple[str, str]], list[str]]:
    """(video, store id) of every video of all the reference files that is in the store, and those that are not.

    Each video once, in the order of the files (a video of several files where it first appears).
    """
    from caption_model.formats.annotations import store_id_for

    available = frozenset(store.complete_ids())
    videos = list(dict.fromkeys(vid for ref in references for vid in ref))
    pairs = [(vid, store_id_for(vid, available)) for vid in videos]
    return [(v, s) for v, s in pairs if s is not None], [v for v, s in pairs if s is None]


def write_video_subtitles(results_path: str | Path, fmt: str, echo: Callable[[str], None] | None = print) -> list[str]:
    """One subtitle file per video of a result JSON, in a folder named after it; the paths written.

    ``results/predict_20261206-101500.json`` gets ``results/predict_20261206-101500/<video>.<fmt>``
    (`caption_model.formats.subtitles.subtitle_name`): result files are named
    per run, so a second run into the same folder leaves the first run's
    subtitles as they were; inside the folder each file keeps the video's own
    name, which players match to the video file when the two sit side by side.
    """
    from caption_model.formats.results import read_result
    from caption_model.formats.subtitles import write_all

    results_path = Path(results_path)
    folder = results_path.with_suffix("")
    paths = write_all(read_result(results_path)["results"], folder, fmt)
    line = f"wrote {len(paths)} {fmt.upper()} subtitle file(s) to {folder}"
    echo(line) if echo else logger.info("%s", line)
    return [str(p) for p in paths]
