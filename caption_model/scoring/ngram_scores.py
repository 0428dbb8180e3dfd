"""BLEU, ROUGE-L and CIDEr of single-reference pairs, re-stated from pycocoevalcap's arithmetic.

`caption_model.scoring.densevid` scores every distinct (hypothesis, reference) pair
once and groups pairs per video, as the official script calls pycocoevalcap's
scorers per video. Re-stating the scorers on pre-counted n-grams is what makes
that fast; the test suite checks that they agree with pycocoevalcap's own
classes (`tests/densevid_oracle.py`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")

_NGRAM = 4
_CIDER_SIGMA = 6.0
_ROUGE_BETA = 1.2
_BLEU_SMALL = 1e-9
_BLEU_TINY = 1e-15


def ngram_counts(tokens: list[str]) -> dict[tuple[str, ...], int]:
    """n-gram counts in pycocoevalcap's `precook` order (n = 1..4, left to right)."""
    counts: dict[tuple[str, ...], int] = {}
    n_tok = len(tokens)
    for k in range(1, _NGRAM + 1):
        for i in range(n_tok - k + 1):
            g = tuple(tokens[i : i + k])
            counts[g] = counts.get(g, 0) + 1
    return counts


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (ROUGE-L), row-by-row DP."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: str, ref: str) -> float:
    """pycocoevalcap's ROUGE-L of one hypothesis and one reference (beta 1.2, split on ' ')."""
    tc, tr = hyp.split(" "), ref.split(" ")
    lcs = _lcs(tr, tc)
    prec = lcs / float(len(tc))
    rec = lcs / float(len(tr))
    if prec != 0 and rec != 0:
        return ((1 + _ROUGE_BETA**2) * prec * rec) / float(rec + _ROUGE_BETA**2 * prec)
    return 0.0


def bleu_pair_stats(hyp_counts: Mapping, hyp_len: int, ref_counts: Mapping, ref_len: int) -> tuple[int, ...]:
    """(testlen, reflen, guess1..4, correct1..4) of one single-reference pair (BleuScorer's cook_test)."""
    correct = [0] * _NGRAM
    for g, c in hyp_counts.items():
        r = ref_counts.get(g)
        if r:
            correct[len(g) - 1] += c if c < r else r
    guess = [max(0, hyp_len - k + 1) for k in range(1, _NGRAM + 1)]
    return (hyp_len, ref_len, *guess, *correct)


def bleu_from_stats(total: Sequence[int]) -> list[float]:
    """Corpus BLEU-1..4 from summed pair statistics, with BleuScorer.compute_score's arithmetic."""
    testlen, reflen = total[0], total[1]
    guess, correct = total[2 : 2 + _NGRAM], total[2 + _NGRAM :]
    bleus = []
    bleu = 1.0
    for k in range(_NGRAM):
        bleu *= float(correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    if ratio < 1:
        for k in range(_NGRAM):
            bleus[k] *= math.exp(1 - 1 / ratio)
    return bleus


_LOG_CACHE: list[float] = [float(np.log(1.0))]


def _np_log_int(k: int) -> float:
    """np.log(float(k)) for small counts, cached (CIDEr takes logs of document counts)."""
    while len(_LOG_CACHE) <= k:
        _LOG_CACHE.append(float(np.log(float(len(_LOG_CACHE) + 1))))
    return _LOG_CACHE[k - 1]


_CIDER_GAUSS_DENOM = 2 * _CIDER_SIGMA**2


def cider_group(pairs: Sequence[tuple[int, int]], counts: Sequence[dict]) -> float:
    """pycocoevalcap's Cider().compute_score over one video's pairs (single reference each).

    `pairs` holds (hypothesis id, reference id) into `counts` (n-gram counts per
    tokenised sentence). Document frequencies and the log corpus size come from
    these pairs only, as when the official script calls the scorer per video.
    """
    df: dict[tuple[str, ...], int] = defaultdict(int)
    for _, r in pairs:
        for g in counts[r]:
            df[g] += 1
    ref_len = float(np.log(float(len(pairs))))
    vec_cache: dict[int, tuple[list[dict], list[float], int]] = {}

    def to_vec(sid: int) -> tuple[list[dict], list[float], int]:
        hit = vec_cache.get(sid)
        if hit is not None:
            return hit
        vec: list[dict] = [{} for _ in range(_NGRAM)]
        norm = [0.0] * _NGRAM
        length = 0
        for g, tf in counts[sid].items():
            d = df.get(g, 0)
            idf = _np_log_int(d) if d > 1 else 0.0
            n = len(g) - 1
            v = float(tf) * (ref_len - idf)
            vec[n][g] = v
            norm[n] += v * v
            if n == 1:  # pycocoevalcap counts bigrams as the "length" (its quirk, kept)
                length += tf
        out = (vec, [math.sqrt(x) for x in norm], length)
        vec_cache[sid] = out
        return out

    gauss_cache: dict[float, float] = {}
    scores = []
    for h, r in pairs:
        vh, nh, lh = to_vec(h)
        vr, nr, lr = to_vec(r)
        delta = float(lh - lr)
        gauss = gauss_cache.get(delta)
        if gauss is None:
            gauss = gauss_cache[delta] = np.e ** (-(delta**2) / _CIDER_GAUSS_DENOM)
        val = np.zeros(_NGRAM)
        for n in range(_NGRAM):
            ref_n = vr[n]
            acc = 0.0
            for g, x in vh[n].items():
                y = ref_n.get(g, 0.0)
                acc += (x if x < y else y) * y
            if nh[n] != 0 and nr[n] != 0:
                acc /= nh[n] * nr[n]
            val[n] = acc * gauss
        scores.append(float(np.mean(val)) * 10.0)
    return float(np.mean(np.array(scores)))
