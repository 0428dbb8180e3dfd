"""ActivityNet Captions scores, exactly as the official `densevid_eval` defines them, fast.

The official script (ranjaykrishna/densevid_eval, `evaluate.py`, final version)
defines the numbers; this module re-states its rules and computes the same
values with far fewer Java round trips. The rules:

1. At most `max_proposals` (1000) predictions per video are kept, in file order.
2. Sentences have every non-ASCII character replaced by a space, then are PTB
   tokenised (pycocoevalcap's PTBTokenizer: lower-cased, punctuation dropped).
3. For each tIoU threshold, for each reference video that has predictions,
   every (prediction, reference) pair with tIoU >= threshold, over all
   reference files, becomes its own single-reference pair. A prediction that
   matches nothing is paired with a random string of 10-20 lowercase letters
   (the official script draws it from the unseeded global RNG; here it comes
   from `random.Random(seed)` so reruns agree).
4. Each video's pairs are scored with pycocoevalcap's scorers called on that
   video alone: BLEU-1..4 and METEOR are corpus-level over the video's pairs,
   ROUGE-L is the mean over them, CIDEr uses document frequencies of that
   video's pair references only.
5. A threshold's score is the mean over ALL reference videos (the union of the
   reference files); a video without predictions scores 0.
6. The reported number is the mean over thresholds, x100.
7. Detection recall / precision (the official `evaluate_detection`): per video
   and reference file, recall = share of references with tIoU > threshold
   (strictly) with some prediction, precision = share of predictions with tIoU >
   threshold with some reference; best over the reference files; mean over all
   reference videos (no predictions: 0); mean over thresholds.

Why it is fast: every distinct sentence is tokenised in one Java call; every
distinct (hypothesis, reference) pair is scored once whatever the number of
thresholds that produce it (pairs at a high threshold are a subset of those at
a low one); a video whose pair list is the same at two thresholds is scored
once; one METEOR JVM receives all pairs in a stream and runs in parallel with
the Python scorers; BLEU, ROUGE-L and CIDEr are re-stated from pycocoevalcap's
arithmetic on pre-counted n-grams (the test suite checks they agree with
pycocoevalcap's own classes).

Deliberate differences from the official script, all at places where it would
crash or be undefined: an empty prediction list for a video gives detection
precision 0 (the script reads a stale loop variable), a reference video with no
segments gives recall 0 (the script divides by zero), and line breaks inside a
sentence become spaces (the script's tokeniser batch would shift by a line).
"""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caption_model.formats.results import validate_result
from caption_model.scoring import java_scorers
from caption_model.scoring.ngram_scores import (
    BLEU_KEYS,
    bleu_from_stats,
    bleu_pair_stats,
    cider_group,
    ngram_counts,
    rouge_l,
)
from etspipe.errors import UserError
from etspipe.files import read_json

logger = logging.getLogger(__name__)

TIOUS = (0.3, 0.5, 0.7, 0.9)
CAPTION_METRICS = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr")
DETECTION_METRICS = ("Recall", "Precision")
ALL_METRICS = (*CAPTION_METRICS, *DETECTION_METRICS)

Reference = dict[str, dict[str, Any]]  # video id -> {"timestamps": [[s, e], ...], "sentences": [...]}


# ----------------------------------------------------------------------------- small rules


def remove_nonascii(text: str) -> str:
    """Every character outside ASCII becomes one space (the official rule)."""
    if text.isascii():
        return text
    return "".join(c if ord(c) < 128 else " " for c in text)


def random_string(rng: random.Random) -> str:
    """The official stand-in reference of an unmatched prediction: 10-20 random lowercase letters."""
    length = rng.randint(10, 20)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


def tiou(segment: Sequence[float], others: np.ndarray) -> np.ndarray:
    """tIoU of `segment` with each row of `others` (n, 2), with the official formula.

    intersection = max(0, min(ends) - max(starts)); union = min(hull length,
    sum of lengths) (the min keeps disjoint segments from dividing by more than
    their lengths); tIoU = intersection / (union + 1e-8).
    """
    others = np.asarray(others, dtype=np.float64).reshape(-1, 2)
    s_i, e_i = float(segment[0]), float(segment[1])
    s, e = others[:, 0], others[:, 1]
    inter = np.maximum(0.0, np.minimum(e, e_i) - np.maximum(s, s_i))
    union = np.minimum(np.maximum(e, e_i) - np.minimum(s, s_i), (e - s) + (e_i - s_i))
    return inter / (union + 1e-8)


# ----------------------------------------------------------------------------- references


def load_references(paths: Sequence[str | Path]) -> list[Reference]:
    """Read ActivityNet Captions annotation files; a bad file is a UserError naming it."""
    if not paths:
        raise UserError("no reference annotation files given")
    refs = []
    for path in paths:
        refs.append(validate_reference(read_json(path, "annotation file"), str(path)))
    return refs


def validate_reference(data: Any, source: str) -> Reference:
    """Check the ActivityNet Captions annotation layout, naming the first bad video."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: annotation file must map video ids to annotations")
    for vid, ann in data.items():
        if not isinstance(ann, dict) or "timestamps" not in ann or "sentences" not in ann:
            raise UserError(f"{source}: video {vid} needs 'timestamps' and 'sentences'")
        ts, ss = ann["timestamps"], ann["sentences"]
        if not isinstance(ts, list) or not isinstance(ss, list) or len(ts) != len(ss):
            raise UserError(f"{source}: video {vid} must have as many timestamps as sentences")
        for t in ts:
            if not (isinstance(t, (list, tuple)) and len(t) == 2
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t)):
                raise UserError(f"{source}: video {vid} has a timestamp that is not [start, end]: {t!r}")
        if not all(isinstance(s, str) for s in ss):
            raise UserError(f"{source}: video {vid} has a sentence that is not a string")
    return data


# ----------------------------------------------------------------------------- the evaluation


@dataclass
class _Plan:
    """Everything the scorers need, built once for all thresholds."""

    sentences: list[str] = field(default_factory=list)          # cleaned, distinct
    sentence_id: dict[str, int] = field(default_factory=dict)
    # per threshold: video -> list of (hyp sentence id, ref sentence id)
    pairs: dict[float, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)

    def sid(self, text: str) -> int:
        i = self.sentence_id.get(text)
        if i is None:
            i = self.sentence_id[text] = len(self.sentences)
            self.sentences.append(text)
        return i


def _truncate(results: Mapping[str, Sequence[Mapping]], max_proposals: int) -> dict[str, list]:
    return {vid: list(entries)[:max_proposals] for vid, entries in results.items()}


def _iou_tables(preds: list, refs: list[Reference], vid: str) -> list[np.ndarray | None]:
    """tIoU of every prediction with every segment of each reference file (None: file lacks vid)."""
    tables: list[np.ndarray | None] = []
    pts = np.asarray([p["timestamp"] for p in preds], dtype=np.float64).reshape(-1, 2)
    for ref in refs:
        ann = ref.get(vid)
        if ann is None:
            tables.append(None)
            continue
        rts = np.asarray(ann["timestamps"], dtype=np.float64).reshape(-1, 2)
        table = np.empty((len(pts), len(rts)))
        for i, p in enumerate(pts):
            table[i] = tiou(p, rts)
        tables.append(table)
    return tables


def _build_plan(preds: dict[str, list], refs: list[Reference], vids: list[str], tious: Sequence[float],
                seed: int) -> tuple[_Plan, dict[str, list[np.ndarray | None]]]:
    plan = _Plan()
    rng = random.Random(seed)
    tables = {vid: _iou_tables(preds[vid], refs, vid) for vid in vids if preds.get(vid)}
    for t in tious:
        per_video: dict[str, list[tuple[int, int]]] = {}
        for vid in vids:
            if not preds.get(vid):
                continue
            pairs: list[tuple[int, int]] = []
            for i, pred in enumerate(preds[vid]):
                h = plan.sid(remove_nonascii(pred["sentence"]))
                matched = False
                for ref, table in zip(refs, tables[vid], strict=False):
                    if table is None:
                        continue
                    sentences = ref[vid]["sentences"]
                    for j in np.flatnonzero(table[i] >= t):
                        pairs.append((h, plan.sid(remove_nonascii(sentences[j]))))
                        matched = True
                if not matched:
                    pairs.append((h, plan.sid(random_string(rng))))
            per_video[vid] = pairs
        plan.pairs[t] = per_video
    return plan, tables


def _detection(preds: dict[str, list], refs: list[Reference], vids: list[str],
               tables: dict[str, list[np.ndarray | None]], t: float) -> tuple[float, float]:
    """Official `evaluate_detection` at one threshold: (precision, recall)."""
    precision, recall = [], []
    for vid in vids:
        best_p = best_r = 0.0
        vid_tables = tables.get(vid)
        for k, ref in enumerate(refs):
            if vid not in ref:
                continue
            n_ref = len(ref[vid]["timestamps"])
            covered = 0
            if vid_tables is not None and vid_tables[k] is not None and vid_tables[k].size:
                hit = vid_tables[k] > t
                covered = int(hit.any(axis=0).sum())
                best_p = max(best_p, float(hit.any(axis=1).sum()) / len(preds[vid]))
            best_r = max(best_r, float(covered) / n_ref if n_ref else 0.0)
        precision.append(best_p)
        recall.append(best_r)
    return sum(precision) / len(precision), sum(recall) / len(recall)


def evaluate_results(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    reference_paths: Sequence[str | Path] | None = None,
    tious: Sequence[float] = TIOUS,
    max_proposals: int = 1000,
    *,
    references: Sequence[Reference] | None = None,
    seed: int = 0,
    use_java: bool | None = None,
) -> dict[str, Any]:
    """Score a `{video_id: [{"timestamp", "sentence"}]}` mapping with the official protocol.

    References come from `reference_paths` (read and validated) or already-loaded
    `references`. Returns x100 numbers: `average` (mean over thresholds, the
    official headline), `per_tiou` (`{"0.3": {...}}`), and counts. `use_java`
    None uses Java when present; without it the tokenizer is an approximation,
    METEOR is None, and `warnings` says so.
    """
    if not tious:
        raise UserError("at least one tIoU threshold is needed")
    t0 = time.perf_counter()
    refs = list(references) if references is not None else load_references(reference_paths or [])
    for i, r in enumerate(refs):
        validate_reference(r, f"reference {i}")
    validate_result({"version": "", "results": dict(results), "external_data": {}}, "predictions")
    preds = _truncate(results, max_proposals)
    vids = sorted(set().union(*[r.keys() for r in refs]))
    if not vids:
        raise UserError("the reference files hold no videos")
    tious = [float(t) for t in tious]
    warnings: list[str] = []
    java = java_scorers.java_available() if use_java is None else use_java
    if not java:
        warnings.append("Java not found: METEOR not computed, tokenisation approximated in Python "
                        "(BLEU/ROUGE-L/CIDEr are close to, not equal to, official). "
                        + java_scorers.JAVA_INSTALL_HINT)
        logger.warning(warnings[-1])
    scored = _score(preds, refs, vids, tious, seed, java)
    per_tiou, average = _aggregate(scored, preds, refs, vids, tious, java)
    seconds = time.perf_counter() - t0
    logger.info("scored in %.1fs (%s)", seconds, ", ".join(f"{k} {v:.1f}s" for k, v in scored.timings.items()))
    return {
        "average": {m: average.get(m) for m in ALL_METRICS},
        "per_tiou": {k: {m: v.get(m) for m in ALL_METRICS} for k, v in per_tiou.items()},
        "tious": tious,
        "max_proposals": max_proposals,
        "n_reference_videos": len(vids),
        "n_predicted_videos": sum(1 for v in vids if preds.get(v)),
        "n_predictions": sum(len(preds.get(v, [])) for v in vids),
        "n_pairs": sum(len(p) for pv in scored.plan.pairs.values() for p in pv.values()),
        "n_distinct_pairs": scored.n_distinct_pairs,
        "tokenizer": "ptb" if java else "python-approximate",
        "random_seed": seed,
        "warnings": warnings,
        "seconds": round(seconds, 3),
    }


@dataclass
class _Scored:
    """Scores of every distinct per-video pair group, and which group each (threshold, video) has."""

    plan: _Plan
    tables: dict[str, list[np.ndarray | None]]
    group_scores: list[dict[str, float]]
    video_group: dict[float, dict[str, int]]
    n_distinct_pairs: int
    timings: dict[str, float]


def _score(preds: dict[str, list], refs: list[Reference], vids: list[str], tious: list[float], seed: int,
           java: bool) -> _Scored:
    """Match, tokenise and score: METEOR in its JVM while the Python scorers run here."""
    # Start METEOR's JVM first: loading its paraphrase table takes seconds,
    # which overlap with matching and tokenising below.
    lock = java_scorers.meteor_lock()
    with lock:
        t0 = time.perf_counter()
        meteor = java_scorers.shared_meteor() if java else None
        plan, tables = _build_plan(preds, refs, vids, tious, seed)
        t_plan = time.perf_counter()
        tokenized = (java_scorers.ptb_tokenize if java else java_scorers.python_tokenize)(plan.sentences)
        t_tok = time.perf_counter()
        toks, pair_list, group_list, video_group = _distinct_groups(plan, tokenized, tious)
        with ThreadPoolExecutor(max_workers=1) as pool:
            meteor_future: Future | None = None
            if meteor is not None:
                meteor_future = pool.submit(_meteor_groups, meteor, toks, pair_list, group_list)
            group_scores = _python_scores(toks, pair_list, group_list)  # while METEOR works in its process
            t_py = time.perf_counter()
            if meteor_future is not None:
                for scores, m in zip(group_scores, meteor_future.result(), strict=True):
                    scores["METEOR"] = m
        t_meteor = time.perf_counter()
    timings = {"plan": t_plan - t0, "tokenise": t_tok - t_plan, "python scorers": t_py - t_tok,
               "METEOR wait": t_meteor - t_py}
    return _Scored(plan, tables, group_scores, video_group, len(pair_list), timings)


def _distinct_groups(plan: _Plan, tokenized: list[str], tious: list[float]):
    """Distinct tokenised sentences, distinct pairs, distinct per-video pair groups, and each video's group."""
    tok_id: dict[str, int] = {}
    tok_of = [tok_id.setdefault(s, len(tok_id)) for s in tokenized]
    pair_id: dict[tuple[int, int], int] = {}
    groups: dict[tuple[int, ...], int] = {}
    video_group: dict[float, dict[str, int]] = {}
    for t in tious:
        vg = {}
        for vid, pairs in plan.pairs[t].items():
            key = tuple(pair_id.setdefault((tok_of[h], tok_of[r]), len(pair_id)) for h, r in pairs)
            vg[vid] = groups.setdefault(key, len(groups))
        video_group[t] = vg
    logger.info("scoring %d pairs (%d distinct) in %d video groups over %d thresholds",
                sum(len(p) for pv in plan.pairs.values() for p in pv.values()), len(pair_id), len(groups), len(tious))
    return list(tok_id), list(pair_id), list(groups), video_group


def _meteor_groups(meteor, toks: list[str], pair_list: list, group_list: list) -> list[float]:
    stats = meteor.stats([(toks[h], [toks[r]]) for h, r in pair_list])
    return meteor.aggregate([[stats[p] for p in g] for g in group_list])


def _python_scores(toks: list[str], pair_list: list, group_list: list) -> list[dict[str, float]]:
    """BLEU-1..4 (corpus level per group), ROUGE-L (mean) and CIDEr (per-group document frequencies)."""
    words = [s.split() for s in toks]
    counts = [ngram_counts(w) for w in words]
    lens = [len(w) for w in words]
    bleu_stats = [bleu_pair_stats(counts[h], lens[h], counts[r], lens[r]) for h, r in pair_list]
    rouge = [rouge_l(toks[h], toks[r]) for h, r in pair_list]
    group_scores: list[dict[str, float]] = []
    for g in group_list:
        total = [sum(col) for col in zip(*(bleu_stats[p] for p in g), strict=True)]
        scores = dict(zip(BLEU_KEYS, bleu_from_stats(total), strict=True))
        scores["ROUGE_L"] = float(np.mean(np.array([rouge[p] for p in g])))
        scores["CIDEr"] = cider_group([pair_list[p] for p in g], counts)
        group_scores.append(scores)
    return group_scores


def _aggregate(scored: _Scored, preds: dict[str, list], refs: list[Reference], vids: list[str],
               tious: list[float], java: bool) -> tuple[dict[str, dict], dict[str, float | None]]:
    """Per threshold the mean over ALL reference videos (no prediction: 0), then the mean over thresholds."""
    metrics = list(CAPTION_METRICS) if java else [m for m in CAPTION_METRICS if m != "METEOR"]
    per_tiou: dict[str, dict[str, float | None]] = {}
    raw: dict[str, list[float]] = {m: [] for m in (*metrics, *DETECTION_METRICS)}
    for t in tious:
        vg = scored.video_group[t]
        row: dict[str, float | None] = {}
        for m in metrics:
            value = float(np.mean([scored.group_scores[vg[v]][m] if v in vg else 0.0 for v in vids]))
            raw[m].append(value)
            row[m] = 100.0 * value
        precision, recall = _detection(preds, refs, vids, scored.tables, t)
        raw["Recall"].append(recall)
        raw["Precision"].append(precision)
        row["Recall"], row["Precision"] = 100.0 * recall, 100.0 * precision
        if not java:
            row["METEOR"] = None
        per_tiou[f"{t:g}"] = row
    average: dict[str, float | None] = {m: 100 * sum(v) / float(len(v)) for m, v in raw.items()}
    if not java:
        average["METEOR"] = None
    return per_tiou, average


def format_table(scores: Mapping[str, Any]) -> str:
    """A readable table: one row per metric, one column per threshold, then the average."""
    keys = list(scores["per_tiou"])
    head = f"{'metric':<10}" + "".join(f"{'tIoU ' + k:>11}" for k in keys) + f"{'average':>11}"
    lines = [head, "-" * len(head)]
    for m in ALL_METRICS:
        if scores["average"].get(m) is None:
            lines.append(f"{m:<10}" + f"{'n/a (no Java)':>{11 * (len(keys) + 1)}}")
            continue
        cells = "".join(f"{scores['per_tiou'][k][m]:>11.4f}" for k in keys)
        lines.append(f"{m:<10}{cells}{scores['average'][m]:>11.4f}")
    lines.append(f"{scores['n_reference_videos']} reference videos, {scores['n_predicted_videos']} with "
                 f"predictions, {scores['n_predictions']} predictions (x100 scores, official protocol)")
    lines.extend(f"warning: {w}" for w in scores.get("warnings", []))
    return "\n".join(lines)
