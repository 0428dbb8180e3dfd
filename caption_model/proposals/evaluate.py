"""Scoring a proposal model on an annotated split: proposal file, AR@AN figures and the AR-AN PNG.

The proposal file uses ActivityNet's proposal-task format
(`caption_model.formats.proposals`), so the official `eval_proposal.py` reads
it too, and it is scored the way `etspipe evaluate --proposals` scores any such
file (`scoring.proposal_metrics.score_proposal_file`). Videos are named as in
the annotation file; a video missing from the store, or one whose rows cannot
be read, has no proposals (it counts as missed) and is listed, and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from caption_model.formats.proposals import DEFAULT_SUBSET, make_proposals, read_ground_truth, write_proposals
from caption_model.proposals.infer import Proposer, check_store, propose_corpus
from caption_model.scoring.proposal_metrics import format_figures, score_proposal_file

__all__ = ["evaluate_proposals", "format_figures", "ground_truth", "propose_for"]

logger = logging.getLogger(__name__)


def ground_truth(annotation_paths: Sequence[str | Path], subset: str | None = DEFAULT_SUBSET
                 ) -> dict[str, list[list[float]]]:
    """Video id -> its ground-truth segments, every timestamp of every file as written (the official rule)."""
    return read_ground_truth(list(annotation_paths), subset)


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

    Returns the figures of `proposal_metrics.score_proposal_file` plus
    ``proposals_path`` and ``missing`` (video -> reason).
    """
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
    doc = make_proposals(props, f"etspipe proposals from {proposer.ckpt['path']}", used=False)
    proposals_path = write_proposals(Path(out_dir) / f"{stem}.json", doc)
    figures = score_proposal_file(proposals_path, annotation_paths, extra={"missing": missing})
    figures["proposals_path"] = str(proposals_path)
    return figures
