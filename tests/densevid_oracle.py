"""A line-by-line re-statement of the official ActivityNet Captions script: the oracle of test_densevid.

Slow by design (pycocoevalcap's own scorer classes, one call per video and
threshold); `caption_model.scoring.densevid.evaluate_results` must give the same numbers.

Independent of the code it checks: it imports nothing from `caption_model`. Its small rules
(tIoU, the random stand-in reference, the non-ASCII rule) are written here again from the
official script (`evaluate.py` of ranjaykrishna/densevid_eval), so a mistake in the project's
own versions shows up as a difference instead of being shared by both sides.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TIOUS = (0.3, 0.5, 0.7, 0.9)  # the official script's default thresholds
BLEU_KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]
Reference = dict[str, dict[str, Any]]  # video id -> {"timestamps": [[s, e], ...], "sentences": [...]}


def remove_nonascii(text: str) -> str:
    """The official `remove_nonascii`: every character of code point 128 or more becomes one space."""
    return "".join([i if ord(i) < 128 else " " for i in text])


def random_string(rng: random.Random) -> str:
    """The official `random_string` (letters a-z, length randint(10, 20)), drawn from `rng`."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(letters) for _ in range(rng.randint(10, 20)))


def tiou(pred: Sequence[float], gt: Sequence[float]) -> float:
    """The official `iou` of one prediction and one reference segment, with its + 1e-8 in the denominator."""
    start_pred, end_pred = float(pred[0]), float(pred[1])
    start, end = float(gt[0]), float(gt[1])
    intersection = max(0.0, min(end, end_pred) - max(start, start_pred))
    union = min(max(end, end_pred) - min(start, start_pred), end - start + end_pred - start_pred)
    return intersection / (union + 1e-8)


def evaluate_results_slow(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    references: Sequence[Reference],
    tious: Sequence[float] = TIOUS,
    max_proposals: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """A line-by-line re-statement of the official script, for checking `evaluate_results`.

    It builds the official `cur_res` / `cur_gts` dictionaries per threshold,
    tokenises them with pycocoevalcap's `PTBTokenizer` and calls pycocoevalcap's
    Bleu, Meteor, Rouge and Cider per video, exactly as the official
    `evaluate_tiou` does (with the seeded random string and sorted video order
    of this module). Slow by design: minutes on a full validation set. Returns
    the averaged x100 caption metrics.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    preds = {vid: list(entries)[:max_proposals] for vid, entries in results.items()}
    vids = sorted(set().union(*[r.keys() for r in references]))
    rng = random.Random(seed)
    tokenizer = PTBTokenizer()
    scorers = [(Bleu(4), list(BLEU_KEYS)), (Meteor(), "METEOR"), (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]
    per_metric: dict[str, list[float]] = defaultdict(list)
    for t in tious:
        cur_res: dict[int, list] = {}
        cur_gts: dict[int, list] = {}
        vid2capid: dict[str, list[int]] = {}
        index = 0
        for vid in vids:
            vid2capid[vid] = []
            if vid not in preds:
                continue
            for pred in preds[vid]:
                has_added = False
                for gt in references:
                    if vid not in gt:
                        continue
                    for j, ts in enumerate(gt[vid]["timestamps"]):
                        if tiou(pred["timestamp"], ts) >= t:
                            cur_res[index] = [{"caption": remove_nonascii(pred["sentence"])}]
                            cur_gts[index] = [{"caption": remove_nonascii(gt[vid]["sentences"][j])}]
                            vid2capid[vid].append(index)
                            index += 1
                            has_added = True
                if not has_added:
                    cur_res[index] = [{"caption": remove_nonascii(pred["sentence"])}]
                    cur_gts[index] = [{"caption": random_string(rng)}]
                    vid2capid[vid].append(index)
                    index += 1
        tok_res = tokenizer.tokenize(cur_res) if cur_res else {}
        tok_gts = tokenizer.tokenize(cur_gts) if cur_gts else {}
        for scorer, method in scorers:
            all_scores = []
            for vid in vids:
                ids = vid2capid[vid]
                if not ids:
                    all_scores.append([0.0] * len(method) if isinstance(method, list) else 0.0)
                    continue
                res = {i: tok_res[i] for i in ids}
                gts = {i: tok_gts[i] for i in ids}
                if isinstance(scorer, Bleu):
                    score, _ = scorer.compute_score(gts, res, verbose=0)
                else:
                    score, _ = scorer.compute_score(gts, res)
                all_scores.append(score)
            if isinstance(method, list):
                means = np.mean(all_scores, axis=0)
                for m, v in zip(method, means, strict=True):
                    per_metric[m].append(float(v))
            else:
                per_metric[method].append(float(np.mean(all_scores)))
    return {m: 100 * sum(v) / float(len(v)) for m, v in per_metric.items()}
