"""Temporal event proposals over a video's feature rows: SST's anchors, scored by a recurrent pass.

SST (Buch et al., CVPR 2017) reads the rows in order and, at every row ``t``,
scores K anchors: the segments of ``L_1 .. L_K`` rows that end at ``t``. The
anchor lengths come from the training segments (1-D k-means of their lengths in
rows), so the anchors cover the durations that events really have. Training
is a binary cross-entropy per (row, anchor), weighted per anchor so that the
rare positives count as much as the many negatives; at inference the scored
anchors become segments, and non-maximum suppression removes near-duplicates.

Two changes from SST, both on by default and both switchable back:

* ``proposals.bidirectional``: the recurrent pass runs both ways. SST is
  forward-only to stream; offline, the rows after ``t`` tell whether an event
  *ends* at ``t``.
* ``proposals.regress_boundaries``: each anchor also predicts how far to move
  its start and end (fractions of its length, in row units), trained with
  smooth L1 on the positives. Whole-row anchors cannot reach the high tIoUs
  (0.8-0.95) that make up half of AR@AN when events last a few rows.

Both off is SST as published; docs/PERFORMANCE.md has the comparison.

Anchors are counted in rows, so one model fits the row spacing of the store it
was trained on; the checkpoint records that store's extractor settings and a
store made otherwise is refused (`proposal_infer.check_store`).

Times: row ``i`` stands for the span between the midpoints to its neighbours
(the first from 0, the last to the video's end), clipped to ``[0, duration]``;
a segment of rows ``a..b`` is ``[edge_a, edge_{b+1}]``, and `alignment.select_rows`
maps it back to exactly those rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def row_edges(times: np.ndarray, duration: float) -> np.ndarray:
    """The n+1 boundaries (seconds) of n rows with centre `times`, clipped to ``[0, duration]``.

    Frame rows at 5 fps (`features_store.alignment.seed_frame_fps`) get their edges as ``i / 5`` exactly:
    the midpoint of two centres lands a rounding step below it, and the seed's truncating row rule would
    then map an edge back to the row before.
    """
    from features_store.alignment import seed_frame_fps

    fps = seed_frame_fps(getattr(times, "rule", None))
    times = np.asarray(times, dtype=np.float64)
    edges = np.empty(len(times) + 1)
    edges[0] = 0.0
    edges[1:-1] = np.arange(1, len(times)) / fps if fps else (times[:-1] + times[1:]) / 2.0
    edges[-1] = max(float(duration), times[-1] if len(times) else 0.0)
    return np.clip(edges, 0.0, float(duration))


def kmeans_anchors(lengths: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Up to `k` anchor lengths in rows (sorted, distinct integers >= 1) from segment lengths in rows.

    1-D k-means on the *logarithm* of the lengths: the tIoU of two aligned
    segments is the ratio of their lengths, so log distance is the distance
    that matters, and short and long events both get anchors. Centres start
    evenly spaced between the shortest and the longest length (deterministic)
    and are rounded to whole rows at the end, so close centres merge and fewer
    than `k` anchors may remain.
    """
    logs = np.log(np.maximum(np.asarray(lengths, dtype=np.float64), 1.0))
    if logs.size == 0 or k < 1:
        return np.zeros(0, dtype=np.int64)
    centres = np.linspace(logs.min(), logs.max(), k)
    for _ in range(iterations):
        assign = np.abs(logs[:, None] - centres[None, :]).argmin(axis=1)
        new = np.array([logs[assign == j].mean() if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.unique(np.maximum(np.rint(np.exp(centres)), 1).astype(np.int64))


def anchor_bounds(n_rows: int, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row (inclusive) of every anchor, each (n_rows, K); starts are clipped at row 0."""
    end = np.broadcast_to(np.arange(n_rows)[:, None], (n_rows, len(anchors)))
    start = np.maximum(end - np.asarray(anchors)[None, :] + 1, 0)
    return start, end


def anchor_segments(edges: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Every anchor of every row as a time segment: (n_rows, K, 2) seconds."""
    start, end = anchor_bounds(len(edges) - 1, anchors)
    return np.stack([edges[start], edges[end + 1]], axis=-1)


def _anchor_iou(segs: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """tIoU of every anchor segment (T, K, 2) with every ground-truth segment (n, 2): (T, K, n)."""
    s = np.maximum(segs[..., None, 0], gt[None, None, :, 0])
    e = np.minimum(segs[..., None, 1], gt[None, None, :, 1])
    inter = np.clip(e - s, 0.0, None)
    union = (segs[..., 1] - segs[..., 0])[..., None] + (gt[:, 1] - gt[:, 0])[None, None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def anchor_labels(edges: np.ndarray, anchors: np.ndarray, gt: np.ndarray, pos_tiou: float) -> np.ndarray:
    """1.0 where an anchor reaches `pos_tiou` with some ground-truth segment, else 0.0: (n_rows, K)."""
    return anchor_targets(edges, anchors, gt, pos_tiou)[0]


def anchor_targets(edges: np.ndarray, anchors: np.ndarray, gt: np.ndarray,
                   pos_tiou: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n_rows, K) and boundary offsets (n_rows, K, 2) towards each positive's best ground truth.

    Offsets are in *edge-index* units (fractional rows, so uneven rows are
    handled) divided by the anchor's length: ``(gt_start_idx - first_row) / L``
    and ``(gt_end_idx - (last_row + 1)) / L``; zero for negatives.
    """
    segs = anchor_segments(edges, anchors)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    offsets = np.zeros(segs.shape, dtype=np.float32)
    if not len(gt):
        return np.zeros(segs.shape[:2], dtype=np.float32), offsets
    iou = _anchor_iou(segs, gt)
    labels = (iou.max(axis=-1) >= pos_tiou).astype(np.float32)
    best = gt[iou.argmax(axis=-1)]  # (T, K, 2)
    position = np.interp(best, edges, np.arange(len(edges)))  # seconds -> fractional edge index
    start, end = anchor_bounds(len(edges) - 1, anchors)
    length = np.maximum(end - start + 1, 1).astype(np.float64)
    offsets[..., 0] = (position[..., 0] - start) / length
    offsets[..., 1] = (position[..., 1] - (end + 1)) / length
    return labels, offsets * labels[..., None]


class ProposalNet(nn.Module):
    """Rows -> (normalise, project) -> GRU over time -> K anchor logits per row."""

    def __init__(self, cfg: dict, feat_dim: int, n_anchors: int):
        super().__init__()
        proj, hidden = int(cfg["proj_dim"]), int(cfg["hidden_dim"])
        self.norm = nn.LayerNorm(feat_dim)  # stores differ in scale (PCA, raw fc7, untrained nets)
        self.proj = nn.Linear(feat_dim, proj)
        self.drop = nn.Dropout(float(cfg["dropout"]))
        self.rnn = nn.GRU(proj, hidden, num_layers=int(cfg["num_layers"]), batch_first=True,
                          bidirectional=bool(cfg["bidirectional"]))
        width = hidden * (2 if cfg["bidirectional"] else 1)
        self.score = nn.Linear(width, n_anchors)
        self.regress = nn.Linear(width, 2 * n_anchors) if cfg["regress_boundaries"] else None

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, K) and boundary offsets (B, T, K, 2) or None, for rows (B, T, D).

        Only the first `lengths` rows of each video are real (the backward
        pass starts at each video's own end).
        """
        x = self.drop(torch.relu(self.proj(self.norm(feats))))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out = self.drop(pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])[0])
        offsets = None if self.regress is None else self.regress(out).unflatten(-1, (-1, 2))
        return self.score(out), offsets


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                 pos_share: torch.Tensor) -> torch.Tensor:
    """SST's loss: per anchor k, positives weigh ``1 - p_k`` and negatives ``p_k`` (p_k: positive share).

    `weight` (B, T, K) is 1 for the (row, anchor) places that count (real rows,
    anchors whose start is in the window), 0 elsewhere; `pos_share` holds
    ``p_k`` (K,). Summed over places and divided by the number of real rows.
    """
    w = torch.where(labels > 0, 1.0 - pos_share, pos_share) * weight
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=w, reduction="sum")
    return loss / weight.amax(dim=-1).sum().clamp(min=1.0)


def boundary_loss(offsets: torch.Tensor, targets: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between predicted and target offsets (B, T, K, 2), over the positive places only."""
    per = nn.functional.smooth_l1_loss(offsets, targets, reduction="none").sum(dim=-1)
    return (per * positive).sum() / positive.sum().clamp(min=1.0)


def _tiou_to(segments: np.ndarray, i: int, rest: np.ndarray) -> np.ndarray:
    starts, ends = segments[:, 0], segments[:, 1]
    inter = np.clip(np.minimum(ends[rest], ends[i]) - np.maximum(starts[rest], starts[i]), 0.0, None)
    union = (ends[rest] - starts[rest]) + (ends[i] - starts[i]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(segments: np.ndarray, scores: np.ndarray, tiou_threshold: float, max_keep: int) -> np.ndarray:
    """Indices of the kept segments, best first: greedy suppression of tIoU > `tiou_threshold`."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[_tiou_to(segments, i, rest) <= tiou_threshold]
    return np.asarray(keep, dtype=np.int64)


def soft_nms(segments: np.ndarray, scores: np.ndarray, tiou_threshold: float, max_keep: int,
             sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS (Bodla et al., 2017): (kept indices best first, their decayed scores).

    Each pick multiplies the score of every proposal it overlaps by
    ``exp(-tIoU^2 / sigma)``, so near-duplicates of a strong event sink below
    distinct events without leaving the list; anything above `tiou_threshold`
    is removed. `rank_segments` gives it only the survivors of hard NMS (and a
    threshold above 1), so there it orders and never removes.
    """
    segments = np.asarray(segments, dtype=np.float64)
    current = np.asarray(scores, dtype=np.float64).copy()
    alive = np.ones(len(current), dtype=bool)
    keep: list[int] = []
    kept_scores: list[float] = []
    while alive.any() and len(keep) < max_keep:
        i = int(np.flatnonzero(alive)[np.argmax(current[alive])])
        keep.append(i)
        kept_scores.append(float(current[i]))
        alive[i] = False
        rest = np.flatnonzero(alive)
        iou = _tiou_to(segments, i, rest)
        current[rest] *= np.exp(-(iou ** 2) / sigma)
        alive[rest[iou > tiou_threshold]] = False
    return np.asarray(keep, dtype=np.int64), np.asarray(kept_scores)


def refine(edges: np.ndarray, anchors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Anchor segments moved by predicted offsets (see `anchor_targets`), in seconds: (n_rows, K, 2)."""
    start, end = anchor_bounds(len(edges) - 1, anchors)
    length = np.maximum(end - start + 1, 1)
    position = np.stack([start + offsets[..., 0] * length, end + 1 + offsets[..., 1] * length], axis=-1)
    position = np.clip(position, 0, len(edges) - 1)
    return np.interp(position, np.arange(len(edges)), edges)


def proposals_from_scores(scores: np.ndarray, edges: np.ndarray, anchors: np.ndarray, nms_tiou: float,
                          max_keep: int, offsets: np.ndarray | None = None, nms_sigma: float | None = None
                          ) -> list[dict]:
    """Scored anchors (n_rows, K) -> up to `max_keep` proposals ``{"segment": [s, e], "score": p}``, best first.

    With `offsets` the anchors' boundaries are refined first. Identical
    segments (anchors clipped at the first row) are one proposal with the
    best score; zero-length segments (rows past the video's end) are dropped.
    """
    segs = (anchor_segments(edges, anchors) if offsets is None else refine(edges, anchors, offsets)).reshape(-1, 2)
    return rank_segments(segs, np.asarray(scores, dtype=np.float64).reshape(-1), nms_tiou, max_keep, nms_sigma)


def rank_segments(segs: np.ndarray, flat: np.ndarray, nms_tiou: float, max_keep: int,
                  nms_sigma: float | None = None) -> list[dict]:
    """Scored segments (N, 2) -> up to `max_keep` proposals, best first, after (Soft-)NMS.

    Identical segments are one proposal with the best score; zero-length ones are dropped.
    With `nms_sigma`, hard NMS at `nms_tiou` decides *which* `max_keep` proposals a video
    gets and Soft-NMS decides their *order* (and scores). Soft-NMS alone filled the 100
    places from thousands of candidates, and its decay, compounded over every earlier
    pick, ranked whatever overlapped least over tight variants of real events: on the
    ActivityNet-shaped proxy (same checkpoints, test split) this split raised AR@100
    from 56.0 to 69.6 (boundary matching) and from 60.7 to 67.0 (SST), AUC by 5.2 and 3.0,
    with the top-10 recall by event length unchanged (docs/PERFORMANCE.md, issue 28).
    """
    segs, flat = np.asarray(segs, dtype=np.float64), np.asarray(flat, dtype=np.float64)
    ok = segs[:, 1] > segs[:, 0]
    segs, flat = segs[ok], flat[ok]
    if not len(segs):
        return []
    uniq, inverse = np.unique(segs, axis=0, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inverse.reshape(-1), flat)
    keep = nms(uniq, best, nms_tiou, max_keep)
    kept = best[keep]
    if nms_sigma is not None:  # nothing is removed any more (tIoU never exceeds 1): only the order changes
        order, kept = soft_nms(uniq[keep], kept, 1.0 + 1e-9, max_keep, float(nms_sigma))
        keep = keep[order]
    return [{"segment": [float(uniq[i, 0]), float(uniq[i, 1])], "score": float(k)}
            for i, k in zip(keep, kept, strict=True)]
