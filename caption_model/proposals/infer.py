"""Using a trained proposal model: load it, check the store it is used on, propose, pick events.

The checkpoint (``proposals_best.pt`` / ``proposals_last.pt`` in the run
folder, beside the captioner's ``best.pt``) holds the anchors and the store's
extractor settings; a store made with another extractor, layer, dimension,
clip length or stride is refused with one line naming both, because anchors
are counted in rows and the network was fitted to those features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from caption_model.proposals.model import ProposalNet, proposals_from_scores, row_edges
from caption_model.runs.checkpoint import load_weights, read_checkpoint_file
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

FORMAT = "etspipe-proposals"
VERSION = 1
LAST, BEST = "proposals_last.pt", "proposals_best.pt"
# Store settings that decide what a row is; a model only fits stores that share them.
STORE_KEYS = ("extractor", "layer", "dim", "clip_len", "stride", "pca_dim")


def find_proposal_checkpoint(path: str | Path, prefer: Sequence[str] = (BEST, LAST)) -> Path | None:
    """The proposal checkpoint of a run folder (best, else last) or the file itself; None when absent."""
    path = Path(path)
    if path.is_file():
        return path
    return next((path / name for name in prefer if (path / name).is_file()), None)


def load_proposal_checkpoint(path: str | Path, prefer: Sequence[str] = (BEST, LAST)) -> dict:
    """Read a proposal checkpoint (file, or run folder); a missing or foreign file is a UserError."""
    found = find_proposal_checkpoint(path, prefer)
    if found is None:
        raise UserError(f"no proposal model ({' or '.join(prefer)}) in {path}; train one with "
                        "`etspipe train-proposals`")
    return read_checkpoint_file(Path(found), FORMAT, "proposal-model")


def describe_store(meta: dict) -> str:
    """`c3d pool5 256-d, clip 16 stride 8` from store metadata (missing keys left out)."""
    parts = [str(meta[k]) for k in ("extractor", "layer") if meta.get(k) is not None]
    parts.append(f"{meta.get('dim')}-d")
    if meta.get("pca_dim"):
        parts.append(f"PCA {meta['pca_dim']}")
    if meta.get("clip_len") is not None:
        parts.append(f"clip {meta['clip_len']} stride {meta.get('stride')}")
    return " ".join(parts)


def check_store(ckpt: dict, store_meta: dict, store_path: str) -> None:
    """Refuse a store whose rows are not the kind the proposal model was trained on."""
    from features_store.recipes import recipe_key

    trained = ckpt.get("store_meta") or {}
    key = recipe_key(trained)
    if key is not None and key == recipe_key(store_meta):
        return  # rows of the same recipe, whoever made them (an official import, `extract --pca-file`, ...)
    differ = [k for k in STORE_KEYS if trained.get(k) != store_meta.get(k)]
    if differ:
        raise UserError(f"proposal model {ckpt.get('path', '?')} was trained on {describe_store(trained)} features "
                        f"({trained.get('store_path', '?')}), but store {store_path} holds "
                        f"{describe_store(store_meta)} features ({', '.join(differ)} differ)")


PROPOSAL_MODELS = ("sst", "bmn")


def proposal_kind(pcfg: dict) -> str:
    """``proposals.model`` of a config or checkpoint config; checkpoints from before the choice are SST."""
    kind = str(pcfg.get("model", "sst"))
    if kind not in PROPOSAL_MODELS:
        raise UserError(f"proposals.model must be one of {', '.join(PROPOSAL_MODELS)}, not {kind!r}")
    return kind


def build_proposal_net(pcfg: dict, feat_dim: int, n_anchors: int) -> torch.nn.Module:
    """The network ``proposals.model`` names: SST's recurrent anchors or the boundary-matching proposer."""
    if proposal_kind(pcfg) == "bmn":
        from caption_model.proposals.bm_model import BMNet

        return BMNet(pcfg, feat_dim)
    return ProposalNet(pcfg, feat_dim, n_anchors)


@dataclass
class Proposer:
    """A loaded proposal model and the settings it proposes with."""

    net: torch.nn.Module  # ProposalNet (SST) or BMNet, as the checkpoint's proposals.model says
    anchors: np.ndarray
    ckpt: dict
    device: torch.device
    pos_share: np.ndarray | None = None  # per anchor, the training positives' share (SST's loss weights)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Proposer:
        ckpt = load_proposal_checkpoint(path)
        try:
            anchors = np.asarray(ckpt["anchors"], dtype=np.int64)
            net = build_proposal_net(ckpt["config"]["proposals"], int(ckpt["feat_dim"]), len(anchors))
        except (KeyError, TypeError, ValueError, UserError) as exc:
            raise UserError(f"{ckpt.get('path', path)}: this proposal checkpoint's config cannot build the "
                            f"proposal model ({type(exc).__name__}: {exc})") from None
        load_weights(net, ckpt["model"], ckpt.get("path", path), "proposal-model")
        # a checkpoint from before calibration was used with raw scores and a 0.5 threshold: keep both
        share = ckpt.get("pos_share") if "calibration" in ckpt else None
        return cls(net.to(device).eval(), anchors, ckpt, torch.device(device),
                   None if share is None else np.asarray(share, dtype=np.float64))

    def event_threshold(self, pcfg: dict) -> float:
        """The score an event needs: ``proposals.score_threshold`` when set, else the checkpoint's calibrated one.

        A checkpoint from before calibration (none recorded) falls back to 0.5,
        the threshold such checkpoints were used with (and keeps its raw scores: `load`).
        """
        if pcfg.get("score_threshold") is not None:
            return float(pcfg["score_threshold"])
        calibrated = (self.ckpt.get("calibration") or {}).get("threshold")
        return float(calibrated) if calibrated is not None else 0.5

    def propose_with(self, store, store_id: str, pcfg: dict) -> list[dict]:
        """`propose` with the suppression settings of a `proposals` config section."""
        return self.propose(store, store_id, float(pcfg["nms_tiou"]), int(pcfg["max_proposals"]),
                            pcfg.get("nms_sigma"))

    @torch.no_grad()
    def scores(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (n_rows, K) that each anchor is an event, comparable across anchors, and offsets or None.

        SST's loss weighs anchor k's positives by ``1 - p_k`` and its negatives by
        ``p_k``, which multiplies the odds the network learns by ``(1 - p_k) / p_k``:
        a rare (short or very long) anchor's scores are inflated by its own
        factor, so raw scores rank anchors of different lengths unfairly (long
        events missing from a video's top 10, every video over any fixed
        threshold). Adding ``log(p_k / (1 - p_k))`` to the logits undoes that
        factor and gives probabilities on one scale: on the ActivityNet-shaped
        proxy, AUC 43.4 -> 53.6 at NMS 0.8 (docs/PERFORMANCE.md).
        """
        feats = torch.tensor(np.asarray(rows, dtype=np.float32))[None].to(self.device)  # a copy: reads may be read-only
        logits, offsets = self.net(feats, torch.tensor([len(rows)]))
        logits = logits[0].double().cpu().numpy()
        if self.pos_share is not None:
            share = np.clip(self.pos_share, 1e-6, 1 - 1e-6)
            logits = logits + np.log(share / (1.0 - share))
        probs = 1.0 / (1.0 + np.exp(-logits))
        return probs, None if offsets is None else offsets[0].float().cpu().numpy()

    def propose(self, store, store_id: str, nms_tiou: float, max_keep: int, nms_sigma: float | None = None
                ) -> list[dict]:
        """Up to `max_keep` proposals ``{"segment": [s, e], "score": p}`` for one store video, best first."""
        meta = store.video_meta(store_id)
        edges = row_edges(store.row_times(store_id), float(meta["duration"]))
        model_cfg = (self.ckpt.get("config") or {}).get("proposals") or {}
        if proposal_kind(model_cfg) == "bmn":
            from caption_model.proposals.bm_model import bm_propose

            settings = {**model_cfg, "nms_tiou": nms_tiou, "max_proposals": max_keep, "nms_sigma": nms_sigma}
            return bm_propose(self.net, store.rows(store_id), edges, settings, self.device)
        probs, offsets = self.scores(store.rows(store_id))
        return proposals_from_scores(probs, edges, self.anchors, nms_tiou, max_keep, offsets, nms_sigma)


def propose_corpus(proposer: Proposer, store, store_ids: Iterable[str], pcfg: dict,
                   progress: bool = False) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Proposals of many store videos; a video that cannot be read is reported and the rest go on."""
    from etspipe.progress import progress_bar

    out: dict[str, list[dict]] = {}
    failed: dict[str, str] = {}
    for sid in progress_bar(list(store_ids), desc="proposals", enabled=progress, leave=False):
        try:
            out[sid] = proposer.propose_with(store, sid, pcfg)
        except (UserError, OSError, ValueError, KeyError) as exc:
            failed[sid] = f"{type(exc).__name__}: {exc}"
            logger.warning("proposals of video %s failed: %s", sid, exc)
    return out, failed


def select_events(proposals: Sequence[dict], threshold: float, max_events: int) -> list[dict]:
    """The proposals that become captioned events: score >= `threshold`, at most `max_events`, by start."""
    kept = [p for p in proposals if p["score"] >= threshold][: max(int(max_events), 0)]
    return sorted(kept, key=lambda p: (p["segment"][0], p["segment"][1]))


def video_events(proposals: Sequence[dict], duration: float, threshold: float,
                 max_events: int) -> tuple[list[dict], str | None]:
    """The events to caption for one video and, when none passed the threshold, why the whole video is used.

    An empty set after the threshold would leave the video without a
    description; it gets one event, the whole video, with no proposal score
    (``None``), and the returned note says so.
    """
    events = select_events(proposals, threshold, max_events)
    if events:
        return events, None
    best = max((p["score"] for p in proposals), default=None)
    why = (f"no proposal reached the events threshold {threshold:g} (proposals.score_threshold, or calibrated "
           f"when the model trained; best {best:.3f})" if best is not None
           else "no proposal at all")
    return [{"segment": [0.0, float(duration)], "score": None}], f"{why}: captioning the whole video"
