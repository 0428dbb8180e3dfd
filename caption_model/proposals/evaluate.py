"""Scoring a proposal model on an annotated split: proposal file, AR@AN figures and the AR-AN PNG.

The proposal file uses ActivityNet's proposal-task format
(``{"version", "results": {video: [{"segment": [s, e], "score": p}]}, "external_data"}``),
so the official `eval_proposal.py` reads it too. Videos are named as in the
annotation file; a video missing from the store, or one whose rows cannot be
read, has no proposals (it counts as missed) and is listed, and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from caption_model.proposals.infer import Proposer, check_store, propose_corpus
from caption_model.scoring.proposal_metrics import ar_an, plot_ar_an, summary

logger = logging.getLogger(__name__)


def ground_truth(annotation_paths: Sequence[str | Path]) -> dict[str, list[list[float]]]:
    """Video id -> its ground-truth segments, from annotation files (quirk rules applied)."""
    from caption_model.formats.annotations import load_annotations

    segments, _ = load_annotations(list(annotation_paths))
    gt: dict[str, list[list[float]]] = {}
    for s in segments:
        gt.setdefault(s.video_id, []).append([s.start, s.end])
    return gt


def propose_for(proposer: Proposer, store, video_ids: Sequence[str], pcfg: dict,
                progress: bool = False) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Proposals keyed by annotation id; missing and failed videos are returned with the reason."""
    from caption_model.formats.annotations import store_id_for

    available = frozenset(store.complete_ids())
    sid_of = {vid: store_id_for(vid, available) for vid in video_ids}
    missing = {vid: "missing from store" for vid, sid in sid_of.items() if sid is None}
    found = {vid: sid for vid, sid in sid_of.items() if sid is not None}
    props, failed = propose_corpus(proposer, store, list(found.values()), pcfg, progress)
    by_store = {sid: vid for vid, sid in found.items()}
    out = {by_store[sid]: p for sid, p in props.items()}
    missing.update({by_store[sid]: why for sid, why in failed.items()})
    return out, missing


def evaluate_proposals(cfg: dict, proposal_path: str | Path, store_path: str, annotation_paths: Sequence[str],
                       out_dir: str | Path, stem: str = "proposals", progress: bool = False) -> dict:
    """Propose for every annotated video, write the proposal JSON, the AR-AN PNG and the figures.

    Returns the figures of `proposal_metrics.summary` plus ``proposals_path``,
    ``plot_path``, ``n_videos`` and ``missing`` (video -> reason).
    """
    from caption_model.formats.results import write_json_atomic
    from etspipe.devices import resolve_device
    from features_store import open_store

    pcfg = cfg["proposals"]
    proposer = Proposer.load(proposal_path, resolve_device(str(pcfg["device"])))
    gt = ground_truth(annotation_paths)
    with open_store(store_path, "r") as store:
        check_store(proposer.ckpt, dict(store.meta), store_path)
        props, missing = propose_for(proposer, store, sorted(gt), pcfg, progress)
    if missing:
        logger.warning("%d of %d videos have no proposals (first: %s: %s)", len(missing), len(gt),
                       *next(iter(missing.items())))
    out_dir = Path(out_dir)
    doc = {"version": "VERSION 1.0", "results": props,
           "external_data": {"used": False, "details": f"etspipe proposals from {proposer.ckpt['path']}"}}
    proposals_path = write_json_atomic(out_dir / f"{stem}.json", doc)
    plot_path = plot_ar_an({"learned": ar_an(gt, props)}, out_dir / f"{stem}_ar_an.png")
    figures = summary(gt, props)
    figures.update(proposals_path=str(proposals_path), plot_path=str(plot_path), n_videos=len(gt),
                   missing=missing)
    write_json_atomic(out_dir / f"{stem}_scores.json", figures)
    return figures


def format_figures(figures: dict) -> str:
    """AR@AN figures as two aligned lines for a terminal."""
    keys = ("AR@1", "AR@5", "AR@10", "AR@100", "AUC", "R@0.5_10", "R@0.7_10")
    head = " ".join(f"{k:>9}" for k in keys)
    vals = " ".join(f"{figures[k] * (1 if k == 'AUC' else 100):>9.2f}" for k in keys)
    return f"proposals (AR in %, tIoU 0.5:0.05:0.95; R@t_10: recall at tIoU t with 10 per video)\n{head}\n{vals}"
