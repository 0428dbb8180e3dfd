"""A line-by-line re-statement of the official ActivityNet Captions script: the oracle of test_densevid.

Slow by design (pycocoevalcap's own scorer classes, one call per video and
threshold); `caption_model.scoring.densevid.evaluate_results` must give the same numbers.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from caption_model.scoring.densevid import TIOUS, Reference, random_string, remove_nonascii, tiou
from caption_model.scoring.ngram_scores import BLEU_KEYS


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
                        if float(tiou(pred["timestamp"], np.asarray([ts]))[0]) >= t:
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
                for m, v in zip(method, means, strict=False):
                    per_metric[m].append(float(v))
            else:
                per_metric[method].append(float(np.mean(all_scores)))
    return {m: 100 * sum(v) / float(len(v)) for m, v in per_metric.items()}
