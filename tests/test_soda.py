"""SODA_c against the reference implementation (fujiso/SODA) and a brute-force re-statement of it.

Three checks:
* the ordered matching against a search over every order-keeping matching;
* the whole score (which videos count, sorting, the three ways of combining
  reference files) against `_oracle_soda_c` below, a slow re-statement of the
  reference's `SODA.evaluate` / `ANETCaptions` from reading its code, with a stub
  sentence scorer so it runs without Java;
* with Java, the numbers the reference implementation itself printed on the
  hand-made files of this module.
"""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from caption_model.scoring import java_scorers
from caption_model.scoring.soda import ordered_matching, soda_c, video_prf
from etspipe.errors import UserError

needs_java = pytest.mark.skipif(not java_scorers.java_available(), reason="Java not installed")


def _ref(*segments):
    return {"duration": 60.0, "timestamps": [[s, e] for s, e, _ in segments], "sentences": [x for *_, x in segments]}


def _p(start, end, sentence):
    return {"timestamp": [start, end], "sentence": sentence}


# Two reference files in the val_1 / val_2 layout: v1, v2, v6 in both, v3 and v4 in A only, v5 in B only.
# v4's events are out of order in A; v6 has two events starting at 0.
VAL_A = {
    "v1": _ref((0, 12, "A man is standing in a kitchen."), (10, 25, "He cuts some onions with a knife."),
               (24, 40, "He puts the onions into a pan."), (38, 60, "The man serves the food on a plate.")),
    "v2": _ref((0, 30, "A girl plays the violin on a stage."), (30, 55, "People in the audience clap their hands.")),
    "v3": _ref((5, 20, "A dog runs across a field.")),
    "v4": _ref((20, 40, "The team celebrates after the goal."), (0, 15, "Two teams play soccer in a stadium.")),
    "v6": _ref((0, 30, "A boy rides a bike."), (0, 10, "He falls off the bike."),
               (10, 50, "He gets back on the bike.")),
}
VAL_B = {
    "v1": _ref((0, 20, "A chef chops onions in the kitchen."), (18, 45, "The chef fries the onions in a pan."),
               (40, 60, "Finally he puts the dish on a plate.")),
    "v2": _ref((2, 50, "A woman plays a violin while people watch.")),
    "v5": _ref((0, 10, "Someone is surfing.")),
    "v6": _ref((0, 25, "A boy is riding his bicycle on a road."), (25, 55, "The boy falls and gets up again.")),
}
# Predictions out of time order, a non-ASCII dash and letter, a video no reference holds (v9).
RESULTS_1 = {
    "v1": [_p(30, 58, "The man puts the food on a plate."), _p(0, 15, "A man is in the kitchen."),
           _p(12, 30, "He is cutting onions."), _p(5, 50, "A man is cooking in a kitchen.")],
    "v2": [_p(0, 28, "A girl is playing the violin."), _p(25, 55, "The audience claps \u2014 caf\u00e9!")],
    "v4": [_p(0, 20, "Two teams play soccer."), _p(18, 40, "Players celebrate a goal!")],
    "v6": [_p(0, 30, "A boy falls off a bike."), _p(0, 12, "A boy rides a bike."),
           _p(20, 55, "The boy rides the bike again.")],
    "v9": [_p(0, 1, "Not a reference video.")],
}
# Reference sentences in crossing order, start-time ties, upper case; v5 is predicted exactly.
RESULTS_2 = {
    "v1": [_p(0, 60, "The man serves the food on a plate."), _p(0, 30, "He cuts some onions with a knife."),
           _p(40, 60, "A man is standing in a kitchen."), _p(20, 40, "He puts the onions into a pan.")],
    "v6": [_p(10, 50, "A boy is riding his bicycle on a road."), _p(10, 20, "He gets back on the bike."),
           _p(0, 5, "THE BOY FALLS AND GETS UP AGAIN.")],
    "v5": [_p(0, 10, "Someone is surfing.")],
}

# What the reference implementation printed (precision, recall, F as fractions) for these files, obtained
# by running fujiso/SODA (commit 9cb3e2c) in a scratch directory outside this repository with this venv's
# pycocoevalcap 1.2, numpy and Java 17:
#   "merge": ANETCaptions.from_load_files([val_a, val_b], res, multi_reference=False) (soda.py's default)
#   "best":  the same with multi_reference=True (soda.py --multi_reference)
#   "pdvc":  PDVC's eval_soda: each file alone (multi_reference=False), the files' [P, R, F] averaged
# each followed by data.preprocess() and SODA(data, soda_type="c", tious=None, scorer="Meteor").evaluate().
REFERENCE_NUMBERS = {
    "res_1": {
        "merge": (0.24188978045755571, 0.17347864479993436, 0.19960345434037868),
        "best": (0.22114377187528805, 0.22114377187528805, 0.22114377187528805),
        "pdvc": (0.16359331180163306, 0.1884513936007186, 0.17311503697249594),
    },
    "res_2": {
        "merge": (0.5235348033298121, 0.4439422860626783, 0.47319085575344283),
        "best": (0.48958418605897874, 0.5062508527223121, 0.49625085272431213),
        "pdvc": (0.3152419568233896, 0.3283277971242887, 0.3206120788571559),
    },
}
# Per-file F of "pdvc", and single videos (a prediction file holding only that video) from the same runs.
REFERENCE_PER_FILE_F = {"res_1": (0.23379168878098627, 0.11243838516400562),
                        "res_2": (0.23530220550471823, 0.4059219522095936)}
REFERENCE_VIDEO_F = {("res_1", "v4", "best"): 0.1902157080607807, ("res_1", "v4", "merge"): 0.24080737568357358,
                     ("res_1", "v1", "merge"): 0.1397114897787848, ("res_2", "v6", "best"): 0.11999999997599997}


# ----------------------------------------------------------------------------- the oracle


def _brute_force_matching(scores: np.ndarray) -> float:
    """Best total over every order-keeping matching: k rows and k columns, both increasing, paired in order."""
    n_rows, n_cols = scores.shape
    best = 0.0
    for k in range(1, min(n_rows, n_cols) + 1):
        for rows in itertools.combinations(range(n_rows), k):
            for cols in itertools.combinations(range(n_cols), k):
                best = max(best, sum(scores[i, j] for i, j in zip(rows, cols, strict=True)))
    return best


def _stub_score(pred: str, ref: str) -> float:
    """A deterministic, asymmetric stand-in for METEOR: share of the reference's words found in the prediction."""
    p, r = set(pred.lower().split()), ref.lower().split()
    return (sum(w in p for w in r) + 0.5) / (len(r) + 1)


def _stub_scorer(pairs):
    return [_stub_score(p, r) for p, r in pairs]


def _official_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), a[1] - a[0] + b[1] - b[0])
    return inter / (union + 1e-8)


def _clean(text):
    return "".join(c if ord(c) < 128 else " " for c in text)


def _oracle_soda_c(results, refs, combine):
    """The reference's loops as read: videos = reference videos that are prediction keys; per video and
    reference set the IoU x score matrix, the best ordered matching, P = s/n_pred, R = s/n_ref, F; per
    video the set with the best F; mean over videos ("pdvc": per file, then mean over files)."""
    preds = {v: sorted(e, key=lambda x: x["timestamp"][0]) for v, e in results.items()}

    def pooled(files):  # load_ground_truth(multi_reference=False)
        out = {}
        for vid in set().union(*files):
            t, s = [], []
            for f in files:
                if vid in f:
                    t += f[vid]["timestamps"]
                    s += f[vid]["sentences"]
            pairs = sorted(zip(t, s, strict=True), key=lambda x: x[0][0])
            out[vid] = {"timestamps": [a for a, _ in pairs], "sentences": [b for _, b in pairs]}
        return out

    def evaluate(gts):
        vids = set().union(*gts) & set(preds)
        p_best, r_best, f_best = [], [], []
        for vid in vids:
            ps, rs, fs = [], [], []
            for gt in gts:
                if vid not in gt:
                    continue
                gold, pred = gt[vid], preds[vid]
                m = np.array([[_official_iou(p["timestamp"], g) * _stub_score(_clean(p["sentence"]), _clean(s))
                               for p in pred] for g, s in zip(gold["timestamps"], gold["sentences"], strict=True)])
                score = _brute_force_matching(m)
                p, r = score / len(pred), score / len(gold["timestamps"])
                ps.append(p)
                rs.append(r)
                fs.append(2 * p * r / (p + r) if p + r > 0 else 0)
            k = int(np.argmax(fs))
            p_best.append(ps[k])
            r_best.append(rs[k])
            f_best.append(fs[k])
        return np.mean(p_best), np.mean(r_best), np.mean(f_best)

    if combine == "merge":
        return evaluate([pooled(refs)])
    if combine == "best":
        return evaluate(refs)
    return tuple(np.mean([evaluate([pooled([f])]) for f in refs], axis=0))


def _prf(out):
    return out["precision"] / 100, out["recall"] / 100, out["soda_c"] / 100


# ----------------------------------------------------------------------------- tests


def test_ordered_matching_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_rows, n_cols = rng.integers(1, 5), rng.integers(1, 6)
        m = rng.random((n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.6)
        assert ordered_matching(m) == pytest.approx(_brute_force_matching(m), abs=1e-12)
    # order matters: the anti-diagonal can give only one of its pairs
    assert ordered_matching(np.array([[0.0, 1.0], [1.0, 0.0]])) == 1.0
    assert ordered_matching(np.zeros((0, 3))) == 0.0


def test_video_prf():
    iou = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    p, r, f = video_prf(iou, np.full((2, 3), 0.4))
    assert (p, r) == pytest.approx((0.6 / 3, 0.6 / 2))
    assert f == pytest.approx(2 * p * r / (p + r))
    assert video_prf(np.zeros((2, 0)), np.zeros((2, 0))) == (0.0, 0.0, 0.0)
    assert video_prf(np.zeros((2, 2)), np.ones((2, 2))) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("combine", ["pdvc", "best", "merge"])
@pytest.mark.parametrize("results", [RESULTS_1, RESULTS_2], ids=["res_1", "res_2"])
def test_equals_the_restated_reference_with_a_stub_scorer(results, combine):
    out = soda_c(results, [VAL_A, VAL_B], combine=combine, score_pairs=_stub_scorer)
    assert _prf(out) == pytest.approx(_oracle_soda_c(results, [VAL_A, VAL_B], combine), abs=1e-12)


def test_random_cases_against_the_restated_reference():
    rng = random.Random(3)
    words = "a man woman dog runs plays the ball on in field kitchen".split()

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))

    def segment():
        s = rng.choice([0, 5, 10, 20, 30])
        return s, s + rng.choice([5, 10, 25])

    for _ in range(20):
        refs = [{f"v{i}": _ref(*[(*segment(), sentence()) for _ in range(rng.randint(1, 4))])
                 for i in range(5) if rng.random() < 0.8} for _ in range(2)]
        refs = [r or {"v0": _ref((0, 10, "a dog"))} for r in refs]
        results = {f"v{i}": [_p(*segment(), sentence()) for _ in range(rng.randint(1, 5))]
                   for i in range(6) if rng.random() < 0.7} or {"v0": [_p(0, 10, "a dog")]}
        if not set(results) & (set(refs[0]) | set(refs[1])):
            continue
        for combine in ("pdvc", "best", "merge"):
            if combine == "pdvc" and any(not set(results) & set(r) for r in refs):
                continue  # the reference gives NaN there (here 0, see test_edges)
            got = _prf(soda_c(results, refs, combine=combine, score_pairs=_stub_scorer))
            assert got == pytest.approx(_oracle_soda_c(results, refs, combine), abs=1e-12)


def test_which_videos_count():
    out = soda_c(RESULTS_1, [VAL_A, VAL_B], score_pairs=_stub_scorer)
    # v3 and v5 are not predicted: left out, not scored 0; v9 is in no reference: ignored
    assert out["n_videos"] == 4 and set(out["per_video"]) == {"v1", "v2", "v4", "v6"}
    assert out["n_reference_videos"] == 6 and out["n_unpredicted"] == 2
    assert [r["n_videos"] for r in out["per_reference"]] == [4, 3]
    best = soda_c(RESULTS_1, [VAL_A, VAL_B], combine="best", score_pairs=_stub_scorer)
    alone = soda_c({"v4": RESULTS_1["v4"]}, [VAL_A, VAL_B], combine="best", score_pairs=_stub_scorer)
    assert alone["soda_c"] == pytest.approx(best["per_video"]["v4"]["soda_c"])
    assert best["soda_c"] == pytest.approx(np.mean([v["soda_c"] for v in best["per_video"].values()]))
    # the mean of the two files' scores, each over its own videos
    assert out["soda_c"] == pytest.approx(np.mean([r["soda_c"] for r in out["per_reference"]]))


def test_edges():
    # an empty prediction list counts and scores 0 (the reference crashes there)
    out = soda_c({"v1": [], "v5": RESULTS_2["v5"]}, [VAL_A, VAL_B], combine="merge", score_pairs=_stub_scorer)
    assert out["per_video"]["v1"]["soda_c"] == 0.0 and out["n_videos"] == 2
    # a file without any predicted video scores 0 under "pdvc", with a warning (the reference: NaN)
    out = soda_c({"v5": RESULTS_2["v5"]}, [VAL_A, VAL_B], score_pairs=_stub_scorer)
    assert out["per_reference"][0]["soda_c"] == 0.0 and "reference 0" in out["warnings"][0]
    with pytest.raises(UserError, match="combine"):
        soda_c(RESULTS_1, [VAL_A], combine="mean")
    with pytest.raises(UserError, match="no predicted video"):
        soda_c({"x": RESULTS_1["v1"]}, [VAL_A], score_pairs=_stub_scorer)
    with pytest.raises(UserError, match="timestamp"):
        soda_c({"v1": [{"timestamp": [1], "sentence": "a"}]}, [VAL_A], score_pairs=_stub_scorer)


def test_reference_paths_are_read(tmp_path):
    path = tmp_path / "val_a.json"
    path.write_text(json.dumps(VAL_A))
    a = soda_c(RESULTS_1, [path], score_pairs=_stub_scorer)
    b = soda_c(RESULTS_1, [VAL_A], score_pairs=_stub_scorer)
    assert a["soda_c"] == b["soda_c"]


def test_without_java_the_score_is_none(monkeypatch):
    monkeypatch.setattr(java_scorers, "java_available", lambda: False)
    out = soda_c(RESULTS_1, [VAL_A, VAL_B])
    assert out["soda_c"] is None and out["per_video"] == {} and "Java" in out["warnings"][0]


@needs_java
def test_equals_the_reference_implementation():
    """Each of the reference's numbers, to float rounding (its METEOR roles are swapped; so are ours)."""
    for name, results in (("res_1", RESULTS_1), ("res_2", RESULTS_2)):
        for combine, expected in REFERENCE_NUMBERS[name].items():
            out = soda_c(results, [VAL_A, VAL_B], combine=combine)
            assert _prf(out) == pytest.approx(expected, abs=1e-12), (name, combine)
            if combine == "pdvc":
                files = [r["soda_c"] / 100 for r in out["per_reference"]]
                assert files == pytest.approx(REFERENCE_PER_FILE_F[name], abs=1e-12)
            for (n, vid, c), f in REFERENCE_VIDEO_F.items():
                if (n, c) == (name, combine):
                    assert out["per_video"][vid]["soda_c"] / 100 == pytest.approx(f, abs=1e-12)
