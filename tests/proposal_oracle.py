"""A loop-by-loop re-statement of ActivityNet's `Evaluation/eval_proposal.py`: the oracle of the AR@AN tests.

Read from github.com/activitynet/ActivityNet (`Evaluation/eval_proposal.py`,
`Evaluation/utils.py`, `Evaluation/get_proposal_performance.py`), written again
in plain Python (lists and loops, no pandas, no vectorising) so that it shares
no code with `caption_model.scoring.proposal_metrics`:

* `import_ground_truth` is `ANETproposal._import_ground_truth` (the videos of
  one subset, one row per annotation, no blocked videos: that list comes from
  a server);
* `import_proposal` is `ANETproposal._import_proposal` (one row per proposal,
  every video of the file);
* `average_recall_vs_avg_nr_proposals` is the function of that name;
* `evaluate` is `ANETproposal.evaluate` as `get_proposal_performance.py` runs it
  (``max_avg_nr_proposals=100``), with the printed AUC.

`captions_to_database` is how an ActivityNet Captions split (``{video:
{"timestamps": ...}}``) is given to the official script: one annotation per
timestamp, all files of the split merged, the subset named ``validation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def captions_to_database(files: Sequence[dict], subset: str = "validation") -> dict:
    database: dict[str, dict] = {}
    for data in files:
        for vid, entry in data.items():
            video = database.setdefault(vid, {"subset": subset, "annotations": []})
            for ts in entry["timestamps"]:
                video["annotations"].append({"segment": list(ts), "label": "event"})
    return {"version": "VERSION 1.3", "taxonomy": [], "database": database}


def import_ground_truth(data: dict, subset: str = "validation") -> list[tuple[str, float, float]]:
    rows = []
    for videoid, v in data["database"].items():
        if subset != v["subset"]:
            continue
        for ann in v["annotations"]:
            rows.append((videoid, float(ann["segment"][0]), float(ann["segment"][1])))
    return rows


def import_proposal(data: dict) -> list[tuple[str, float, float, float]]:
    for field in ("results", "version", "external_data"):
        assert field in data, "Please input a valid proposal file."
    rows = []
    for videoid, v in data["results"].items():
        for result in v:
            rows.append((videoid, float(result["segment"][0]), float(result["segment"][1]), result["score"]))
    return rows


def segment_iou(target_segment: tuple[float, float], candidate_segments: list[tuple[float, float]]) -> list[float]:
    out = []
    for c in candidate_segments:
        tt1 = max(target_segment[0], c[0])
        tt2 = min(target_segment[1], c[1])
        inter = max(tt2 - tt1, 0.0)
        union = (c[1] - c[0]) + (target_segment[1] - target_segment[0]) - inter
        out.append(inter / union if union != 0 else math.nan)  # numpy: 0/0 is nan, never >= a threshold
    return out


def wrapper_segment_iou(target_segments, candidate_segments) -> list[list[float]]:
    """[n candidates][m targets], as the official function returns it."""
    columns = [segment_iou(t, candidate_segments) for t in target_segments]
    return [[columns[j][i] for j in range(len(target_segments))] for i in range(len(candidate_segments))]


def average_recall_vs_avg_nr_proposals(ground_truth, proposals, max_avg_nr_proposals=None,
                                       tiou_thresholds=np.linspace(0.5, 0.95, 10)):
    video_lst = list(dict.fromkeys(r[0] for r in ground_truth))  # ground_truth['video-id'].unique()
    if not max_avg_nr_proposals:
        max_avg_nr_proposals = float(len(proposals)) / len(video_lst)
    ratio = max_avg_nr_proposals * float(len(video_lst)) / len(proposals)

    score_lst = []
    total_nr_proposals = 0
    for videoid in video_lst:
        this_video_ground_truth = [(s, e) for v, s, e in ground_truth if v == videoid]
        group = [(s, e, score) for v, s, e, score in proposals if v == videoid]
        if not group:  # get_group raises: the video has no proposals
            score_lst.append([[0.0] for _ in this_video_ground_truth])
            continue
        # proposals_videoid['score'].argsort()[::-1]: ascending (stable for the small groups here), reversed
        sort_idx = sorted(range(len(group)), key=lambda i: group[i][2])[::-1]
        this_video_proposals = [(group[i][0], group[i][1]) for i in sort_idx]
        nr_proposals = min(int(len(this_video_proposals) * ratio), len(this_video_proposals))
        total_nr_proposals += nr_proposals
        this_video_proposals = this_video_proposals[:nr_proposals]
        score_lst.append(wrapper_segment_iou(this_video_proposals, this_video_ground_truth))

    pcn_lst = [k / 100.0 * (max_avg_nr_proposals * float(len(video_lst)) / total_nr_proposals) for k in range(1, 101)]
    recall = []
    for tiou in tiou_thresholds:
        matches = [[0] * len(pcn_lst) for _ in score_lst]
        positives = []
        for i, score in enumerate(score_lst):
            positives.append(len(score))
            width = len(score[0]) if score else 0
            true_positives_tiou = [[x >= tiou for x in row] for row in score]
            pcn_proposals = [min(int(width * pcn), width) for pcn in pcn_lst]
            for j, nr_proposals in enumerate(pcn_proposals):
                matches[i][j] = sum(1 for row in true_positives_tiou if any(row[:nr_proposals]))
        recall.append([sum(matches[i][j] for i in range(len(score_lst))) / float(sum(positives))
                       for j in range(len(pcn_lst))])
    avg_recall = [sum(recall[r][j] for r in range(len(recall))) / len(recall) for j in range(len(pcn_lst))]
    proposals_per_video = [pcn * (float(total_nr_proposals) / len(video_lst)) for pcn in pcn_lst]
    return recall, avg_recall, proposals_per_video


def evaluate(ground_truth_data: dict, proposal_data: dict, max_avg_nr_proposals: int = 100,
             subset: str = "validation") -> dict:
    """recall, average recall and AN per point, the printed AUC (percent), as the official run gives them."""
    recall, avg_recall, ppv = average_recall_vs_avg_nr_proposals(
        import_ground_truth(ground_truth_data, subset), import_proposal(proposal_data),
        max_avg_nr_proposals=max_avg_nr_proposals)
    area_under_curve = sum((ppv[i + 1] - ppv[i]) * (avg_recall[i + 1] + avg_recall[i]) / 2.0
                           for i in range(len(ppv) - 1))  # np.trapz
    return {"recall": recall, "avg_recall": avg_recall, "proposals_per_video": ppv,
            "auc": 100.0 * float(area_under_curve) / ppv[-1]}
