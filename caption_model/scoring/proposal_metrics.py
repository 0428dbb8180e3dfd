"""Proposal measures: AR@AN (ActivityNet's proposal task), recall at a tIoU, and the AR-AN curve.

AR@AN follows ActivityNet's `eval_proposal.py`: per video the proposals are
sorted by score; for a budget of AN proposals per video *on average*, every
video keeps the same fraction of its own proposals (so a video with fewer
proposals keeps fewer); a ground-truth segment counts as recalled at a tIoU
threshold when one kept proposal reaches it; recall is pooled over all
ground-truth segments of all videos (not averaged per video), then averaged
over the tIoUs 0.5:0.05:0.95. When every video has at least 100 proposals,
AN proposals per video is simply the top AN of each. AUC is the area under the
AR-AN curve over AN 1..100, in percent of the perfect area.

Identical ground-truth segments of one video (the same times with two
sentences) count once: a proposal task has no sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95
MAX_AN = 100


def tiou_matrix(gt: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """tIoU of every ground-truth segment (rows) with every proposal (columns); inputs (n, 2) in seconds."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 2)
    s = np.maximum(gt[:, None, 0], proposals[None, :, 0])
    e = np.minimum(gt[:, None, 1], proposals[None, :, 1])
    inter = np.clip(e - s, 0.0, None)
    union = (gt[:, 1] - gt[:, 0])[:, None] + (proposals[:, 1] - proposals[:, 0])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class ARCurve:
    """Average recall against the average number of proposals per video."""

    an: np.ndarray            # average number of proposals per video, 1..100
    ar: np.ndarray            # average recall over TIOUS at each AN
    recall: np.ndarray        # (len(tious), len(an)) recall at each tIoU
    tious: tuple[float, ...]
    n_videos: int
    n_gt: int

    def ar_at(self, an: int) -> float:
        """AR with `an` proposals per video on average."""
        return float(self.ar[int(an) - 1])

    @property
    def auc(self) -> float:
        """Area under the AR-AN curve over AN 1..100, divided by 100 AN as the official script does (percent)."""
        return float(100.0 * np.trapezoid(self.ar, self.an) / self.an[-1])


def _sorted_proposals(items: Sequence[Mapping]) -> np.ndarray:
    """(n, 2) segments of a video's proposals, highest score first (stable for equal scores)."""
    if not items:
        return np.zeros((0, 2))
    scores = np.array([float(p.get("score", p.get("proposal_score", 0.0))) for p in items])
    order = np.argsort(-scores, kind="stable")
    return np.array([[float(items[i]["segment"][0]), float(items[i]["segment"][1])] for i in order])


def unique_segments(segments: Sequence[Sequence[float]]) -> np.ndarray:
    """A video's ground-truth segments with exact duplicates removed, as (n, 2)."""
    seen = sorted({(float(s), float(e)) for s, e in segments})
    return np.array(seen, dtype=np.float64).reshape(-1, 2)


def ar_an(ground_truth: Mapping[str, Sequence[Sequence[float]]], proposals: Mapping[str, Sequence[Mapping]],
          max_an: int = MAX_AN, tious: Sequence[float] = TIOUS) -> ARCurve:
    """The AR-AN curve of `proposals` ({video: [{"segment": [s, e], "score": x}]}) against `ground_truth`.

    Videos with ground truth but no proposals count as missed; proposals of
    videos without ground truth are ignored, as the official script does.
    """
    vids = [v for v in ground_truth if len(ground_truth[v])]
    tables, counts = [], []
    for vid in vids:
        props = _sorted_proposals(proposals.get(vid, []))
        tables.append(tiou_matrix(unique_segments(ground_truth[vid]), props))
        counts.append(len(props))
    total = max(sum(counts), 1)
    fractions = np.arange(1, max_an + 1) / max_an * (max_an * max(len(vids), 1) / total)
    recall = np.zeros((len(tious), max_an))
    n_gt = sum(t.shape[0] for t in tables)
    for ti, thr in enumerate(tious):
        matched = np.zeros(max_an)
        for table, n in zip(tables, counts, strict=True):
            if n == 0:
                continue
            keep = np.minimum((n * fractions).astype(int), n)
            hit = table >= thr  # (gt, proposals)
            # first proposal index at which each gt is hit; a gt is recalled with k proposals if first < k
            first = np.where(hit.any(axis=1), hit.argmax(axis=1), n + 1)
            matched += (first[None, :] < keep[:, None]).sum(axis=1)
        recall[ti] = matched / max(n_gt, 1)
    an = fractions * (total / max(len(vids), 1))
    return ARCurve(an=an, ar=recall.mean(axis=0), recall=recall, tious=tuple(tious), n_videos=len(vids), n_gt=n_gt)


def recall_at(ground_truth: Mapping[str, Sequence[Sequence[float]]], proposals: Mapping[str, Sequence[Mapping]],
              n_proposals: int, tiou: float) -> float:
    """Share of ground-truth segments that one of the video's top `n_proposals` proposals reaches at `tiou`."""
    hit = total = 0
    for vid, segments in ground_truth.items():
        gt = unique_segments(segments)
        if not len(gt):
            continue
        props = _sorted_proposals(proposals.get(vid, []))[:n_proposals]
        total += len(gt)
        if len(props):
            hit += int((tiou_matrix(gt, props) >= tiou).any(axis=1).sum())
    return hit / max(total, 1)


def summary(ground_truth: Mapping, proposals: Mapping) -> dict[str, float]:
    """The figures the benchmark and the demo report: AR@1/5/10/100, AUC, recall@tIoU 0.5/0.7 with 10."""
    curve = ar_an(ground_truth, proposals)
    out = {f"AR@{n}": curve.ar_at(n) for n in (1, 5, 10, 100)}
    out["AUC"] = curve.auc
    out["R@0.5_10"] = recall_at(ground_truth, proposals, 10, 0.5)
    out["R@0.7_10"] = recall_at(ground_truth, proposals, 10, 0.7)
    n_props = [len(proposals.get(v, [])) for v in ground_truth]
    out["proposals_per_video"] = float(np.mean(n_props)) if n_props else 0.0
    return out


def plot_ar_an(curves: Mapping[str, ARCurve], path: str | Path, title: str = "AR-AN") -> Path:
    """Save the AR-AN curves (one per method) as a PNG; matplotlib's Agg backend, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=100)
    try:
        for name, curve in curves.items():
            ax.plot(curve.an, curve.ar, label=f"{name} (AUC {curve.auc:.1f})")
        ax.set_xlabel("average number of proposals per video (AN)")
        ax.set_ylabel("average recall, tIoU 0.5:0.05:0.95")
        ax.set_xlim(1, MAX_AN)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
