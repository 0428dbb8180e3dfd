"""SODA_c, the story-level dense-captioning score, as its reference implementation defines it.

SODA (Fujita et al., ECCV 2020; reference code fujiso/SODA, `soda.py` and
`dataset.py`) scores a video's predicted captions as one story: predicted and
reference events are matched in temporal order (no crossing, each used at most
once), a matched pair earning tIoU x METEOR, and the best total is turned into
an F-measure. PDVC reports SODA_c beside the densevid scores; its driver
(ttengwang/PDVC, `densevid_eval3/eval_soda.py`) runs the reference code once
per reference file and averages. The rules:

1. Predictions of a video are sorted by start time (stable: ties keep file
   order); there is no cap on their number. Sentences have every non-ASCII
   character replaced by a space and are PTB tokenised (pycocoevalcap's
   PTBTokenizer: lower-cased, punctuation dropped), references too.
2. Per video and reference set, with references as rows and predictions as
   columns: S[i, j] = tIoU(pred j, ref i) x M[i, j] (no tIoU threshold), M
   being pycocoevalcap's per-segment METEOR of that single pair with the roles
   the reference code gives them: reference sentence i as the hypothesis,
   prediction j as its only reference (its `compute_score` call has the
   arguments swapped; METEOR is not symmetric, so this changes the numbers).
3. The best ordered matching: dp[i, j] = max(dp[i-1, j], dp[i, j-1],
   dp[i-1, j-1] + S[i, j]); its total s gives precision s / n_pred, recall
   s / n_ref and F = 2PR / (P + R) (0 when P + R = 0).
4. Which videos count: the reference videos that are keys of the predictions.
   A reference video without predictions is left out, NOT scored 0 (unlike
   densevid); a predicted video that no reference holds is ignored.
5. The dataset's precision, recall and F are the means over counted videos.
   Several reference files (ActivityNet's val_1 and val_2) are combined in one
   of three ways, `combine`:
   * "pdvc" (default; the number PDVC and later papers report): each file is
     scored alone, over its own videos that have predictions, and the files'
     precision, recall and F are averaged;
   * "best" (SODA's `--multi_reference`): per video, the file with the highest
     F (first on ties) gives that video's precision, recall and F;
   * "merge" (SODA's command-line default): a video's events of all files are
     pooled into one reference.
   A video's reference events are stably sorted by start time under "pdvc"
   and "merge" (the reference code sorts whenever it is not in its multi-
   reference mode, one file included); under "best" they keep file order.
6. Reported x100, like the densevid scores.

Deliberate differences, at places where the reference code crashes: a video
whose prediction list is empty, or whose reference has no events, scores 0 for
that reference; a reference file with no counted video scores 0 in "pdvc"
(the reference gives NaN), with a warning. Only pairs with tIoU > 0 are sent to
METEOR (the others' product is 0 whatever METEOR says), all of them in one
stream to one METEOR JVM (`java_scorers`), each distinct pair once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caption_model.formats.results import validate_result
from caption_model.scoring import java_scorers
from caption_model.scoring.densevid import Reference, load_references, remove_nonascii, tiou, validate_reference
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

COMBINE = ("pdvc", "best", "merge")

# (cleaned prediction sentence, cleaned reference sentence) pairs -> one score each.
PairScorer = Callable[[Sequence[tuple[str, str]]], Sequence[float]]


def ordered_matching(scores: np.ndarray) -> float:
    """Best total of an order-keeping matching of rows to columns of non-negative `scores`.

    Pairs (i_1, j_1), (i_2, j_2), ... with i_1 < i_2 < ... and j_1 < j_2 < ...,
    i.e. the reference's `chased_dp_assignment`, row by row: with
    c_j = max(dp[i-1, j], dp[i-1, j-1] + S[i, j]), dp[i, j] = max(dp[i, j-1], c_j)
    is a running maximum along the row.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_rows, n_cols = scores.shape
    if n_rows == 0 or n_cols == 0:
        return 0.0
    prev = np.zeros(n_cols + 1)
    for i in range(n_rows):
        take = np.maximum(prev[1:], prev[:-1] + scores[i])
        row = np.empty(n_cols + 1)
        row[0] = 0.0
        row[1:] = np.maximum.accumulate(take)
        prev = row
    return float(prev[-1])


def video_prf(iou: np.ndarray, meteor: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F) of one video against one reference: both (n_ref, n_pred)."""
    iou = np.asarray(iou, dtype=np.float64)
    n_ref, n_pred = iou.shape
    if n_ref == 0 or n_pred == 0:
        return 0.0, 0.0, 0.0
    best = ordered_matching(iou * np.asarray(meteor, dtype=np.float64))
    p = best / n_pred
    r = best / n_ref
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def merge_references(refs: Sequence[Reference]) -> Reference:
    """One reference holding every file's events of each video, stably sorted by start (SODA's default)."""
    merged: Reference = {}
    vids = sorted(set().union(*[r.keys() for r in refs]))
    for vid in vids:
        events = [(t, s) for r in refs if vid in r for t, s in zip(r[vid]["timestamps"], r[vid]["sentences"],
                                                                      strict=True)]
        events.sort(key=lambda e: e[0][0])
        merged[vid] = {"timestamps": [t for t, _ in events], "sentences": [s for _, s in events]}
    return merged


def meteor_pair_scorer(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """The reference code's METEOR of each (prediction, reference) pair, after PTB tokenisation.

    The reference code calls pycocoevalcap's `Meteor.compute_score(gts, res)`
    with its arguments swapped (predictions as `gts`), so the score is METEOR
    of the *reference* sentence as hypothesis against the prediction as its
    only reference; METEOR is not symmetric, and this is reproduced. One
    tokenizer JVM for all sentences, the shared METEOR JVM for all distinct
    tokenised pairs.
    """
    if not pairs:
        return []
    sentences = sorted({s for pair in pairs for s in pair})
    with java_scorers.meteor_lock():
        meteor = java_scorers.shared_meteor()  # starts loading while the tokenizer runs
        tokens = dict(zip(sentences, java_scorers.ptb_tokenize(sentences), strict=True))
        token_pairs = [(tokens[h], tokens[r]) for h, r in pairs]
        distinct = list(dict.fromkeys(token_pairs))
        stats = meteor.stats([(r, [h]) for h, r in distinct])  # hypothesis: the reference sentence
        values = dict(zip(distinct, meteor.segment_scores(stats), strict=True))
    return [values[p] for p in token_pairs]


def _iou_matrix(preds: list, ann: Mapping[str, Any]) -> np.ndarray:
    rts = np.asarray(ann["timestamps"], dtype=np.float64).reshape(-1, 2)
    table = np.zeros((len(rts), len(preds)))
    for j, pred in enumerate(preds):
        table[:, j] = tiou(pred["timestamp"], rts)
    return table


def soda_c(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    references: Sequence[Reference | str | Path],
    *,
    combine: str = "pdvc",
    use_java: bool | None = None,
    score_pairs: PairScorer | None = None,
) -> dict[str, Any]:
    """SODA_c of a `{video_id: [{"timestamp": [s, e], "sentence"}]}` mapping against reference files.

    `references`: ActivityNet Captions annotations, loaded (`{vid: {"timestamps",
    "sentences"}}`) or paths. `combine`: "pdvc" | "best" | "merge" (module
    docstring). `score_pairs` replaces PTB tokenisation + METEOR (it receives
    the non-ASCII-cleaned sentences); without it and without Java the scores
    are None and `warnings` says so. Returns x100 `soda_c` (the F-measure),
    `precision`, `recall`, `per_video` ({vid: {"soda_c", "precision",
    "recall"}}; under "pdvc" the mean over the files holding the video),
    `per_reference` (under "pdvc", each file's numbers) and counts.
    """
    if combine not in COMBINE:
        raise UserError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}")
    t0 = time.perf_counter()
    refs = _load_references(references)
    validate_result({"version": "", "results": dict(results), "external_data": {}}, "predictions")
    preds = {vid: sorted(entries, key=lambda e: e["timestamp"][0]) for vid, entries in results.items()}
    ref_vids = set().union(*[r.keys() for r in refs])
    counted = sorted(ref_vids & preds.keys())
    if not counted:
        raise UserError("no predicted video is in the reference files")
    sets = _reference_sets(refs, combine)
    warnings: list[str] = []
    out: dict[str, Any] = {
        "soda_c": None, "precision": None, "recall": None, "combine": combine,
        "per_video": {}, "per_reference": [],
        "n_videos": len(counted), "n_reference_videos": len(ref_vids),
        "n_unpredicted": len(ref_vids - preds.keys()), "n_predictions": sum(len(preds[v]) for v in counted),
        "n_pairs": 0, "warnings": warnings,
    }
    if score_pairs is None:
        if not (java_scorers.java_available() if use_java is None else use_java):
            warnings.append("Java not found: SODA_c needs METEOR and is not computed. "
                            + java_scorers.JAVA_INSTALL_HINT)
            logger.warning(warnings[-1])
            out["seconds"] = round(time.perf_counter() - t0, 3)
            return out
        score_pairs = meteor_pair_scorer
    prf, out["n_pairs"] = _video_prf(preds, sets, counted, score_pairs)
    if combine == "pdvc":
        (p, r, f), per_video, out["per_reference"] = _mean_over_files(prf, sets, counted, warnings)
    else:
        (p, r, f), per_video = _best_per_video(prf, len(sets), counted)
    out["soda_c"], out["precision"], out["recall"] = 100 * float(f), 100 * float(p), 100 * float(r)
    for v, values in per_video.items():
        vp, vr, vf = np.mean(np.asarray(values), axis=0)
        out["per_video"][v] = {"soda_c": 100 * float(vf), "precision": 100 * float(vp), "recall": 100 * float(vr)}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _load_references(references: Sequence[Reference | str | Path]) -> list[Reference]:
    refs: list[Reference] = []
    for i, r in enumerate(references):
        if isinstance(r, (str, Path)):
            refs.extend(load_references([r]))
        else:
            refs.append(validate_reference(r, f"reference {i}"))
    if not refs:
        raise UserError("no reference annotation files given")
    return refs


def _reference_sets(refs: list[Reference], combine: str) -> list[Reference]:
    """The sets each video is matched against: all files pooled ("merge"), each file alone, sorted by start
    ("pdvc"), or each file as written ("best")."""
    if combine == "merge":
        return [merge_references(refs)]
    if combine == "pdvc":
        return [merge_references([r]) for r in refs]
    return refs


PRF = tuple[float, float, float]


def _video_prf(preds: dict, sets: list[Reference], counted: list[str],
               score_pairs: PairScorer) -> tuple[dict[tuple[int, str], PRF], int]:
    """(precision, recall, F) of every (reference set, counted video), all sentence pairs scored in one call."""
    tables: dict[tuple[int, str], np.ndarray] = {}
    pair_index: dict[tuple[str, str], int] = {}

    def pairs_of(k: int, vid: str):
        table = tables[k, vid]
        for i, j in zip(*np.nonzero(table > 0), strict=True):
            yield i, j, (remove_nonascii(preds[vid][j]["sentence"]), remove_nonascii(sets[k][vid]["sentences"][i]))

    for k, ref in enumerate(sets):
        for vid in counted:
            if vid in ref:
                tables[k, vid] = _iou_matrix(preds[vid], ref[vid])
                for _, _, pair in pairs_of(k, vid):
                    pair_index.setdefault(pair, len(pair_index))
    pair_scores = np.asarray(list(score_pairs(list(pair_index))), dtype=np.float64)
    if len(pair_scores) != len(pair_index):
        raise RuntimeError(f"the pair scorer returned {len(pair_scores)} scores for {len(pair_index)} pairs")
    prf = {}
    for key, table in tables.items():
        meteor = np.zeros_like(table)
        for i, j, pair in pairs_of(*key):
            meteor[i, j] = pair_scores[pair_index[pair]]
        prf[key] = video_prf(table, meteor)
    return prf, len(pair_index)


def _mean_over_files(prf: dict, sets: list[Reference], counted: list[str],
                     warnings: list[str]) -> tuple[PRF, dict[str, list[PRF]], list[dict]]:
    """PDVC's averaging: each file's mean over its videos, then the mean over files (a file with no predicted
    video scores 0)."""
    per_video: dict[str, list[PRF]] = {}
    files, per_reference = [], []
    for k, ref in enumerate(sets):
        rows = [prf[k, v] for v in counted if v in ref]
        for v in counted:
            if v in ref:
                per_video.setdefault(v, []).append(prf[k, v])
        if not rows:
            warnings.append(f"reference {k} holds no predicted video: it scores 0")
            logger.warning(warnings[-1])
            rows = [(0.0, 0.0, 0.0)]
        p, r, f = np.mean(np.asarray(rows), axis=0)
        files.append((float(p), float(r), float(f)))
        per_reference.append({"soda_c": 100 * float(f), "precision": 100 * float(p), "recall": 100 * float(r),
                              "n_videos": sum(v in ref for v in counted)})
    p, r, f = np.mean(np.asarray(files), axis=0)
    return (float(p), float(r), float(f)), per_video, per_reference


def _best_per_video(prf: dict, n_sets: int, counted: list[str]) -> tuple[PRF, dict[str, list[PRF]]]:
    """Per video the reference set with the best F, then the mean over videos ("best" and "merge")."""
    per_video, rows = {}, []
    for v in counted:
        candidates = [prf[k, v] for k in range(n_sets) if (k, v) in prf]
        best = candidates[int(np.argmax([c[2] for c in candidates]))]
        per_video[v] = [best]
        rows.append(best)
    p, r, f = np.mean(np.asarray(rows), axis=0)
    return (float(p), float(r), float(f)), per_video
