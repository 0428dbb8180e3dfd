"""How many events a video gets: the score threshold chosen on held-out videos when the model trains.

A fixed threshold such as 0.5 means nothing for a model trained with SST's
per-anchor weighted loss (the weights move every anchor's scores towards 0.5 at
its own base rate), and nearly every proposal passed it: each video got
``max_events`` events. Instead, when the proposal model is validated, the
threshold that gives the best F1 at tIoU 0.5 on the held-out videos (each
event must find a reference of its own, `calibrate_threshold`) is kept in the
checkpoint and used for dense captioning, unless ``proposals.score_threshold``
is set. Pure NumPy: the held-out proposals are already computed for AR@AN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from caption_model.scoring.proposal_metrics import tiou_matrix

MATCH_TIOU = 0.5


def _video_hits(proposals: Sequence[Mapping], gt: np.ndarray, max_events: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The top `max_events` proposals (best first) of one video against its references.

    Returns (scores (k,), gain (k,): how many references the proposal meets that
    no better proposal of the video met; it is a correct event when that is > 0).
    """
    top = sorted(proposals, key=lambda p: -p["score"])[:max_events]
    scores = np.array([p["score"] for p in top], dtype=np.float64)
    if not top or not len(gt):
        return scores, np.zeros(len(top), dtype=np.int64)
    hit = tiou_matrix(gt, np.array([p["segment"] for p in top], dtype=np.float64)).T >= MATCH_TIOU  # (k, n_gt)
    return scores, np.diff(np.logical_or.accumulate(hit, axis=0).sum(axis=1), prepend=0)


def calibrate_threshold(proposals: Mapping[str, Sequence[Mapping]], ground_truth: Mapping[str, Sequence],
                        max_events: int) -> dict:
    """The score threshold with the best F1 at tIoU 0.5 over held-out videos, and what it gives there.

    Events of a video are its proposals (best first) scoring at least the
    threshold, at most `max_events`. Precision = events that meet a reference
    no better event of their video met / events; recall = references met /
    references; both pooled over videos. A second event on an event already
    found is not a new event: counted as correct (densevid_eval's precision
    does), F1 kept adding near-duplicates, and videos got about twice as many
    events as references (7.6 per video against 3.9 on the ActivityNet-shaped
    proxy's held-out videos, issue 28).
    Candidates are the proposals' own scores (every threshold that changes
    something). Returns ``{"threshold", "f1", "precision", "recall",
    "events_per_video", "refs_per_video", "n_videos"}``; threshold None when
    there is nothing to calibrate on.
    """
    videos = []
    for vid, gt in ground_truth.items():
        ref = np.unique(np.asarray(gt, dtype=np.float64).reshape(-1, 2), axis=0)
        videos.append((len(ref), *_video_hits(proposals.get(vid, []), ref, int(max_events))))
    n_ref = sum(v[0] for v in videos)
    best = {"threshold": None, "f1": 0.0, "precision": 0.0, "recall": 0.0, "events_per_video": 0.0,
            "refs_per_video": n_ref / max(len(videos), 1), "n_videos": len(videos)}
    # Lowering the threshold past an event's score adds that event to its video (as its next-best one), so
    # one pass over all events by falling score updates the pooled counts: O(N log N), not N x videos.
    scores = np.concatenate([v[1] for v in videos] or [np.zeros(0)])
    if not n_ref or not len(scores):
        return best
    gain = np.concatenate([v[2] for v in videos])  # references newly met by each event
    order = np.argsort(-scores, kind="stable")
    n_ev = np.arange(1, len(order) + 1)
    tp, met = np.cumsum(gain[order] > 0), np.cumsum(gain[order])
    last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]  # evaluate once all equal scores are in
    precision, recall = tp / n_ev, met / n_ref
    f1 = np.where(last_of_tie, 2 * precision * recall / np.maximum(precision + recall, 1e-12), -1.0)
    i = int(np.argmax(f1))
    if f1[i] > 0:
        best.update(threshold=float(scores[order][i]), f1=float(f1[i]), precision=float(precision[i]),
                    recall=float(recall[i]), events_per_video=float(n_ev[i] / len(videos)))
    return best
