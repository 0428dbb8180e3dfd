"""Per-video agreement of predictions with references, from their times alone.

The official metrics (METEOR, CIDEr, ...) are corpus figures computed by
`etspipe evaluate`; a page needs something per video that it can compute
without Java or stage 2: which reference each prediction overlaps best (shown
beside it) and how well the events were found (recall/precision at tIoU 0.5,
the middle of the official thresholds, and the mean best tIoU).
"""

from __future__ import annotations

from collections.abc import Sequence

from etspipe_view.inputs import Caption

TIOU_FOUND = 0.5


def tiou(a: Caption, b: Caption) -> float:
    """Temporal intersection over union of two segments (0 when they do not meet)."""
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    if union <= 0:  # two zero-length segments
        return 1.0 if a.start == b.start else 0.0
    return inter / union


def tiou_table(preds: Sequence[Caption], refs: Sequence[Caption]) -> list[list[float]]:
    """tIoU of every prediction (rows) with every reference (columns)."""
    return [[tiou(p, r) for r in refs] for p in preds]


def best_matches(table: list[list[float]]) -> list[tuple[int, float]]:
    """For each prediction: (index of the reference it overlaps most, that tIoU), or (-1, 0.0)."""
    out = []
    for scores in table:
        k = max(range(len(scores)), key=scores.__getitem__, default=-1)
        out.append((k, scores[k]) if k >= 0 and scores[k] > 0 else (-1, 0.0))
    return out


def video_scores(table: list[list[float]], n_refs: int) -> dict[str, float]:
    """Recall/precision of events at tIoU 0.5 and mean best tIoU (fractions) from a `tiou_table`."""
    if not n_refs:
        return {}
    found = sum(any(row[j] >= TIOU_FOUND for row in table) for j in range(n_refs))
    best = [max(row, default=0.0) for row in table]
    return {
        "recall@0.5": found / n_refs,
        "precision@0.5": sum(b >= TIOU_FOUND for b in best) / len(best) if best else 0.0,
        "mean tIoU": sum(best) / len(best) if best else 0.0,
    }
