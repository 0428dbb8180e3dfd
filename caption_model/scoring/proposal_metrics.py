"""Proposal measures: AR@AN (ActivityNet's proposal task), recall at a tIoU, the AR-AN curve, a file's scores.

AR@AN is ActivityNet's `Evaluation/eval_proposal.py` (`get_proposal_performance.py`
runs it with ``max_avg_nr_proposals=100``), step by step:

* ground truth: every segment of every annotated video counts (two identical
  segments count twice); the videos are those with at least one segment;
* each video's proposals are sorted by score, the official way
  (``argsort()[::-1]``: of equal scores, the later one first);
* with N videos and P proposals in the whole file (videos without ground
  truth included), every video first keeps ``int(n * 100 N / P)`` of its n
  proposals (all of them unless there are more than 100 per video on
  average); with T the proposals kept in all, the k-th point of the curve
  (k = 1..100) keeps ``int(m * k/100 * 100 N / T)`` of a video's m, i.e.
  AN = k proposals per video on average, each video the same share of its own;
* a ground-truth segment is recalled at a tIoU threshold (0.5:0.05:0.95, as
  ``np.linspace(0.5, 0.95, 10)``) when one kept proposal reaches it; recall is
  pooled over all segments of all videos, then averaged over the thresholds;
* AUC is the area under the AR-AN curve (trapezoids over AN 1..100) divided
  by the last AN, in percent.

A video without proposals counts as missed; proposals of videos without
ground truth match nothing but count in P, as in the official script.
`tests/proposal_oracle.py` restates the official code loop by loop and
the tests hold this module to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caption_model.formats.proposals import DEFAULT_SUBSET, read_ground_truth, read_proposals
from caption_model.formats.results import write_json_atomic
from etspipe.errors import UserError

TIOUS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))  # the official thresholds, to the last bit
MAX_AN = 100
N_POINTS = 100  # the official curve has 100 points: k/100 of the budget, k = 1..100


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

    an: np.ndarray            # average number of proposals per video (1..100 for a budget of 100)
    ar: np.ndarray            # average recall over TIOUS at each AN
    recall: np.ndarray        # (len(tious), len(an)) recall at each tIoU
    tious: tuple[float, ...]
    n_videos: int
    n_gt: int

    def ar_at(self, an: int) -> float:
        """AR with `an` proposals per video on average (the curve point nearest to it)."""
        return float(self.ar[int(np.argmin(np.abs(self.an - an)))])

    @property
    def auc(self) -> float:
        """Area under the AR-AN curve, divided by the last AN as the official script does (percent)."""
        return float(100.0 * np.trapezoid(self.ar, self.an) / self.an[-1])


def _sorted_proposals(items: Sequence[Mapping]) -> np.ndarray:
    """(n, 2) segments of a video's proposals, highest score first; of equal scores the later first (official)."""
    if not items:
        return np.zeros((0, 2))
    scores = np.array([float(p.get("score", p.get("proposal_score", 0.0))) for p in items])
    order = np.argsort(scores, kind="stable")[::-1]
    return np.array([[float(items[i]["segment"][0]), float(items[i]["segment"][1])] for i in order])


def _segments(segments: Sequence[Sequence[float]]) -> np.ndarray:
    return np.array([[float(s), float(e)] for s, e in segments], dtype=np.float64).reshape(-1, 2)


def ar_an(ground_truth: Mapping[str, Sequence[Sequence[float]]], proposals: Mapping[str, Sequence[Mapping]],
          max_an: int = MAX_AN, tious: Sequence[float] = TIOUS) -> ARCurve:
    """The AR-AN curve of `proposals` ({video: [{"segment": [s, e], "score": x}]}) against `ground_truth`.

    `max_an` is the official ``max_avg_nr_proposals``; the curve has 100 points
    up to it. See the module docstring for the protocol.
    """
    vids = [v for v in ground_truth if len(ground_truth[v])]
    n_videos = len(vids)
    n_file = sum(len(items) for items in proposals.values())
    ratio = max_an * float(n_videos) / n_file if n_file else 0.0
    tables, kept = [], []
    for vid in vids:
        props = _sorted_proposals(proposals.get(vid, []))
        n = min(int(len(props) * ratio), len(props))
        tables.append(tiou_matrix(_segments(ground_truth[vid]), props[:n]))
        kept.append(n)
    total = sum(kept)
    n_gt = sum(t.shape[0] for t in tables)
    steps = np.arange(1, N_POINTS + 1) / float(N_POINTS)
    if not total:  # nothing to keep (the official script divides by zero here)
        an = steps * max_an
        zeros = np.zeros((len(tious), N_POINTS))
        return ARCurve(an=an, ar=zeros.mean(axis=0), recall=zeros, tious=tuple(tious), n_videos=n_videos, n_gt=n_gt)
    shares = steps * (max_an * float(n_videos) / total)
    recall = np.zeros((len(tious), N_POINTS))
    for ti, thr in enumerate(tious):
        matched = np.zeros(N_POINTS)
        for table, n in zip(tables, kept, strict=True):
            if n == 0:
                continue
            keep = np.minimum((n * shares).astype(int), n)
            hit = table >= thr  # (gt, proposals)
            # first proposal index at which each gt is hit; a gt is recalled with k proposals if first < k
            first = np.where(hit.any(axis=1), hit.argmax(axis=1), n + 1)
            matched += (first[None, :] < keep[:, None]).sum(axis=1)
        recall[ti] = matched / max(n_gt, 1)
    an = shares * (float(total) / n_videos)
    return ARCurve(an=an, ar=recall.mean(axis=0), recall=recall, tious=tuple(tious), n_videos=n_videos, n_gt=n_gt)


def recall_at(ground_truth: Mapping[str, Sequence[Sequence[float]]], proposals: Mapping[str, Sequence[Mapping]],
              n_proposals: int, tiou: float) -> float:
    """Share of ground-truth segments that one of the video's top `n_proposals` proposals reaches at `tiou`."""
    hit = total = 0
    for vid, segments in ground_truth.items():
        gt = _segments(segments)
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


def format_figures(figures: dict) -> str:
    """AR@AN figures as two aligned lines for a terminal."""
    keys = ("AR@1", "AR@5", "AR@10", "AR@100", "AUC", "R@0.5_10", "R@0.7_10")
    head = " ".join(f"{k:>9}" for k in keys)
    vals = " ".join(f"{figures[k] * (1 if k == 'AUC' else 100):>9.2f}" for k in keys)
    return f"proposals (AR in %, tIoU 0.5:0.05:0.95; R@t_10: recall at tIoU t with 10 per video)\n{head}\n{vals}"


def score_proposal_file(proposals_path: str | Path, annotation_paths: Sequence[str | Path],
                        out_dir: str | Path | None = None, *, subset: str | None = DEFAULT_SUBSET,
                        extra: Mapping | None = None, echo=None) -> dict:
    """AR@AN of a proposal file against annotation files: ``<stem>_scores.json`` and ``<stem>_ar_an.png``.

    Written beside the proposal file, or in `out_dir`. Returns the figures of
    `summary` plus the curve (``AN``, ``AR``), ``n_videos``, ``n_gt``,
    ``videos_without_proposals``, ``proposal_videos_not_annotated`` and the
    paths; `extra` is added to what is written. A file none of whose videos is
    annotated is a UserError (ids such as ``v_abc`` against ``abc``).
    """
    proposals_path = Path(proposals_path)
    doc = read_proposals(proposals_path)
    gt = read_ground_truth(list(annotation_paths), subset)
    props = doc["results"]
    annotated = [v for v in gt if gt[v]]
    if props and annotated and not any(v in props for v in annotated):
        raise UserError(f"{proposals_path}: none of its {len(props)} video(s) is in the annotations "
                        f"(its first: {next(iter(props))}; the annotations' first: {annotated[0]})")
    curve = ar_an(gt, props)
    folder = Path(out_dir) if out_dir is not None else proposals_path.parent
    stem = proposals_path.stem
    figures = summary(gt, props)
    figures.update({
        "AN": [float(x) for x in curve.an], "AR": [float(x) for x in curve.ar],
        "tious": list(curve.tious), "n_videos": curve.n_videos, "n_gt": curve.n_gt,
        "videos_without_proposals": sum(1 for v in annotated if not props.get(v)),
        "proposal_videos_not_annotated": sum(1 for v in props if v not in gt),
        "proposals_file": str(proposals_path), "reference_files": [str(p) for p in annotation_paths],
        "plot_path": str(plot_ar_an({"proposals": curve}, folder / f"{stem}_ar_an.png", title=stem)),
        **(extra or {}),
    })
    figures["scores_path"] = str(write_json_atomic(folder / f"{stem}_scores.json", figures))
    if echo:
        echo(format_figures(figures))
        echo(f"{curve.n_videos} annotated video(s), {figures['videos_without_proposals']} without proposals; "
             f"AR-AN curve: {figures['plot_path']}; scores written to {figures['scores_path']}")
    return figures


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
