"""The ActivityNet Captions scorer on hand-made cases whose numbers are worked out here.

One METEOR JVM serves the whole module (the scorer keeps a shared process), so
the Java start-up is paid once.
"""

from __future__ import annotations

import json
import math
import random
import string

import numpy as np
import pytest
from densevid_oracle import evaluate_results_slow

from caption_model.scoring import java_scorers
from caption_model.scoring.densevid import evaluate_results, format_table, random_string, tiou
from etspipe.errors import UserError

needs_java = pytest.mark.skipif(not java_scorers.java_available(), reason="Java not installed")


def _ref(*segments):
    """{"timestamps": [...], "sentences": [...]} from (start, end, sentence) triples."""
    return {"duration": 100.0, "timestamps": [[s, e] for s, e, _ in segments], "sentences": [x for _, _, x in segments]}


def _pred(start, end, sentence):
    return {"timestamp": [start, end], "sentence": sentence}


@pytest.fixture()
def two_files(tmp_path):
    a = {"v1": _ref((0, 10, "A man runs."), (10, 20, "A dog barks.")), "v2": _ref((0, 5, "a cat sleeps"))}
    b = {"v1": _ref((0, 10, "a person is running")), "v3": _ref((0, 5, "x y"))}
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    return [pa, pb]


def test_tiou_official_formula():
    refs = np.array([[0, 10], [5, 15], [10, 20], [20, 30], [10, 0]])
    got = tiou([0, 10], refs)
    assert got[0] == pytest.approx(1.0, abs=1e-8)
    assert got[1] == pytest.approx(5 / 15, abs=1e-8)
    assert got[2] == 0.0 and got[3] == 0.0  # touching or disjoint
    # the 1e-8 in the denominator puts an exact half just below 0.5
    assert tiou([0, 5], np.array([[0, 10]]))[0] < 0.5


def test_random_string_rule_is_seeded():
    a = [random_string(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(0)
    for _ in range(50):
        s = random_string(rng)
        assert 10 <= len(s) <= 20 and set(s) <= set(string.ascii_lowercase)


@needs_java
def test_two_reference_files_random_string_and_missing_videos(two_files):
    """v1 has 3 pairs at every threshold; v2 and v3 (one per file) have no predictions and score 0.

    Pairs of v1: (a man runs | a man runs) [file a], (a man runs | a person is
    running) [file b], (the end | <random string>) [no overlap: the random-string rule].
    """
    results = {"v1": [_pred(0, 10, "A man runs"), _pred(20, 30, "The end.")]}
    s = evaluate_results(results, two_files)
    assert s["n_reference_videos"] == 3 and s["n_predicted_videos"] == 1 and s["n_pairs"] == 12
    # BLEU over v1: testlen 3+3+2 = 8, reflen 3+4+1 = 8; correct 1-grams 3+1+0 of 8 guesses,
    # 2-grams 2+0+0 of 2+2+1, 3-grams 1 of 1+1+0, 4-grams none of none (0+1e-15)/(0+1e-9).
    p = [4 / 8, 2 / 5, 1 / 2, 1e-15 / 1e-9]
    bleu = [math.prod(p[: k + 1]) ** (1 / (k + 1)) for k in range(4)]
    # ROUGE-L: 1, then LCS 1 of 3 (P) and of 4 (R) with beta 1.2, then 0 -> mean of the three.
    f = (1 + 1.44) * (1 / 3) * (1 / 4) / (1 / 4 + 1.44 / 3)
    rouge = (1 + f + 0) / 3
    avg = s["average"]
    for k in range(4):
        assert avg[f"Bleu_{k + 1}"] == pytest.approx(100 * bleu[k] / 3, rel=1e-6)
    assert avg["ROUGE_L"] == pytest.approx(100 * rouge / 3, rel=1e-9)
    # CIDEr: pycocoevalcap's own scorer on v1's pairs alone (per-video document frequency).
    from pycocoevalcap.cider.cider import Cider

    rs = s_random_refs(seed=0, n=4)  # the random strings drawn, one per threshold, in order
    cider = Cider().compute_score({0: ["a man runs"], 1: ["a person is running"], 2: [rs[0]]},
                                  {0: ["a man runs"], 1: ["a man runs"], 2: ["the end"]})[0]
    assert avg["CIDEr"] == pytest.approx(100 * cider / 3, rel=1e-9)
    assert 0 < avg["METEOR"] < 100 / 3
    # Detection (strict >): v1 best over files: recall 1 (file b), precision 1/2; v2, v3: 0.
    assert avg["Recall"] == pytest.approx(100 / 3)
    assert avg["Precision"] == pytest.approx(100 * 0.5 / 3)
    assert "METEOR" in format_table(s) and "Bleu_4" in format_table(s)
    # seeded: a rerun gives the same numbers
    assert evaluate_results(results, two_files)["average"] == avg


def s_random_refs(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [random_string(rng) for _ in range(n)]


@needs_java
def test_thresholds_single_pair_cider_and_nonascii(tmp_path):
    """tIoU 0.6 matches at 0.3 and 0.5 only; at 0.7 and 0.9 the prediction meets a random string.

    A video with one pair has CIDEr 0 even for a perfect caption: CIDEr's IDF is
    computed per video, and log(1 document) = 0 (the official behaviour).
    """
    ref = tmp_path / "r.json"
    ref.write_text(json.dumps({"v1": _ref((0, 10, "a man runs"))}))
    s = evaluate_results({"v1": [_pred(0, 6, "A man runs\u00e9")]}, [ref])  # é -> space
    per = s["per_tiou"]
    assert [round(per[t]["Bleu_1"], 6) for t in ("0.3", "0.5", "0.7", "0.9")] == [100, 100, 0, 0]
    assert [per[t]["ROUGE_L"] for t in ("0.3", "0.5", "0.7", "0.9")] == [100, 100, 0, 0]
    assert per["0.3"]["METEOR"] == pytest.approx(100)  # identical after tokenisation
    assert s["average"]["ROUGE_L"] == pytest.approx(50)
    assert s["average"]["CIDEr"] == 0.0
    assert [per[t]["Recall"] for t in ("0.3", "0.5", "0.7", "0.9")] == [100, 100, 0, 0]
    # an exact half overlap fails the 0.5 threshold (the 1e-8 in the official tIoU)
    half = evaluate_results({"v1": [_pred(0, 5, "a man runs")]}, [ref])
    assert half["per_tiou"]["0.5"]["ROUGE_L"] == 0


@needs_java
def test_max_proposals_and_empty_predictions(tmp_path):
    ref = tmp_path / "r.json"
    ref.write_text(json.dumps({"v1": _ref((0, 10, "a man runs"))}))
    preds = {"v1": [_pred(0, 10, "a man runs"), _pred(50, 60, "nothing here")]}
    one = evaluate_results(preds, [ref], max_proposals=1)
    assert one["average"]["ROUGE_L"] == pytest.approx(100) and one["n_predictions"] == 1
    both = evaluate_results(preds, [ref])
    assert both["average"]["ROUGE_L"] == pytest.approx(50)
    assert both["average"]["Precision"] == pytest.approx(50)
    for empty in ({}, {"v1": []}, {"other_video": [_pred(0, 10, "a man runs")]}):
        s = evaluate_results(empty, [ref])
        assert all(v == 0 for v in s["average"].values()), empty


@needs_java
def test_equals_a_line_by_line_restatement_of_the_official_script():
    """Random predictions over 12 videos, two reference files: every metric equal to pycocoevalcap per video."""
    rng = random.Random(3)
    words = "a man woman dog is are runs running jumps the ball into water on stage plays guitar".split()

    def sentence():
        return " ".join(rng.choice(words) for _ in range(rng.randint(2, 9))).capitalize() + rng.choice([".", "", "!"])

    refs = [{}, {}]
    results = {}
    for v in range(12):
        vid = f"v_{v}"
        for k, ref in enumerate(refs):
            if (v + k) % 5 == 0:
                continue  # some videos are in one file only
            segs = sorted((round(rng.uniform(0, 50), 2), round(rng.uniform(50, 100), 2), sentence())
                          for _ in range(rng.randint(1, 4)))
            ref[vid] = _ref(*segs)
        if v % 4 != 3:  # some videos have no predictions
            results[vid] = [_pred(round(rng.uniform(0, 60), 1), round(rng.uniform(60, 100), 1), sentence())
                            for _ in range(rng.randint(1, 5))]
    fast = evaluate_results(results, references=refs, seed=5)
    slow = evaluate_results_slow(results, refs, seed=5)
    for metric, value in slow.items():
        assert fast["average"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric


def test_without_java_other_metrics_still_print(tmp_path, monkeypatch):
    ref = tmp_path / "r.json"
    ref.write_text(json.dumps({"v1": _ref((0, 10, "a man runs"))}))
    monkeypatch.setattr(java_scorers, "java_available", lambda: False)
    s = evaluate_results({"v1": [_pred(0, 10, "a man runs")]}, [ref])
    assert s["average"]["METEOR"] is None
    assert s["average"]["ROUGE_L"] == pytest.approx(100)
    assert "install" in s["warnings"][0] and s["tokenizer"] == "python-approximate"
    assert "n/a" in format_table(s)


def test_python_tokenizer_approximates_ptb():
    assert java_scorers.python_tokenize(["A man's dog doesn't run, (fast)."]) == ["a man 's dog does n't run fast"]


def test_bad_inputs_are_user_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        evaluate_results({}, [bad])
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"v1": {"timestamps": [[0, 1]], "sentences": []}}))
    with pytest.raises(UserError, match="odd.json.*v1"):
        evaluate_results({}, [odd])
    with pytest.raises(UserError, match="not found"):
        evaluate_results({}, [tmp_path / "missing.json"])
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"v1": _ref((0, 1, "x"))}))
    with pytest.raises(UserError, match="timestamp"):
        evaluate_results({"v1": [{"timestamp": "0-1", "sentence": "x"}]}, [good])
