"""Proposal files (ActivityNet's proposal-task format) and `etspipe evaluate --proposals`: AR@AN as the official script.

The official numbers come from `tests/proposal_oracle.py`, a loop-by-loop
re-statement of ActivityNet's `Evaluation/eval_proposal.py`; one small case is
also worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import proposal_oracle as oracle
import pytest
from click.testing import CliRunner

from caption_model.formats.proposals import (
    make_proposals,
    read_ground_truth,
    read_proposals,
    validate_proposals,
    write_proposals,
)
from caption_model.scoring.proposal_metrics import TIOUS, ar_an
from etspipe.errors import UserError
from pipeline import cli


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _doc(results: dict) -> dict:
    return {"version": "VERSION 1.0", "results": results, "external_data": {"used": False, "details": ""}}


def _captions(videos: dict) -> dict:
    return {vid: {"duration": 100.0, "timestamps": ts, "sentences": ["x"] * len(ts)} for vid, ts in videos.items()}


def _official(caption_files: list[dict], doc: dict) -> dict:
    return oracle.evaluate(oracle.captions_to_database(caption_files), doc)


def _ours(caption_files: list[dict], doc: dict):
    gt: dict[str, list] = {}
    for data in caption_files:
        for vid, entry in data.items():
            gt.setdefault(vid, []).extend(entry["timestamps"])
    return ar_an(gt, doc["results"])


def _assert_equal(curve, official: dict) -> None:
    np.testing.assert_allclose(curve.recall, np.array(official["recall"]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.ar, official["avg_recall"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.an, official["proposals_per_video"], rtol=1e-12)
    assert curve.auc == pytest.approx(official["auc"], abs=1e-9)


# ----------------------------------------------------------------------------- by hand

HAND_GT = _captions({"v_a": [[0, 10]], "v_b": [[0, 10], [20, 30]]})
HAND_PROPS = _doc({"v_a": [{"segment": [50, 60], "score": 0.1}, {"segment": [0, 10], "score": 0.9}],
                   "v_b": [{"segment": [20, 30], "score": 0.8}]})


def test_a_small_case_worked_out_by_hand():
    # N=2 videos, P=3 proposals, budget 100 per video: everything is kept; point k keeps int(m * k*2/3)
    # of a video's m: at AN=1, v_a keeps 1 (its best hits [0, 10] at every tIoU) and v_b keeps 0 -> 1/3;
    # from AN=2 on, v_b keeps its one proposal too -> 2/3. AUC = (0.5 + 98 * 2/3) / 99 * 100 / (100/99).
    curve = _ours([HAND_GT], HAND_PROPS)
    assert curve.ar_at(1) == pytest.approx(1 / 3) and curve.ar_at(2) == pytest.approx(2 / 3)
    assert curve.ar_at(10) == curve.ar_at(100) == pytest.approx(2 / 3)
    assert curve.an.tolist() == pytest.approx(list(range(1, 101)))
    assert curve.auc == pytest.approx(0.5 + 98 * 2 / 3)
    _assert_equal(curve, _official([HAND_GT], HAND_PROPS))


# ----------------------------------------------------------------------------- against the official code


def test_thresholds_are_the_official_linspace_to_the_last_bit():
    assert TIOUS == tuple(np.linspace(0.5, 0.95, 10).tolist())


@pytest.mark.parametrize("name,gt,props", [
    # two identical ground-truth segments are two instances (the official script has no sentences to tell)
    ("duplicate-gt", [_captions({"v_a": [[0, 10], [0, 10], [20, 30]]})],
     {"v_a": [{"segment": [0, 10], "score": 0.9}]}),
    # proposals of a video without ground truth match nothing but count in the budget: 303 proposals for
    # 2 videos is over 100 per video, so v_a keeps int(2 * 200/303) = 1 (its miss) and v_b none
    ("unannotated-video", [_captions({"v_a": [[0, 10]], "v_b": [[5, 9]]})],
     {"v_a": [{"segment": [0, 10], "score": 0.5}, {"segment": [40, 50], "score": 0.9}],
      "v_b": [{"segment": [5, 9], "score": 0.2}],
      "v_other": [{"segment": [0, 1], "score": 0.3} for _ in range(300)]}),
    # equal scores: the later one first, as argsort()[::-1]
    ("ties", [_captions({"v_a": [[0, 10]]})],
     {"v_a": [{"segment": [0, 10], "score": 0.5}, {"segment": [30, 40], "score": 0.5}]}),
    # more than 100 per video on average: each video is cut to int(n * ratio) first, then shared out
    # (v_a: 250 -> int(250 * 200/330) = 151, v_b: 80 -> 48; point k = 29 keeps int(151 * 0.29 * 200/199) = 44
    # of v_a, the 44th being its hit, where cutting the whole budget at once would keep int(250 * 0.29 * 200/330) = 43)
    ("over-budget", [_captions({"v_a": [[100, 110]], "v_b": [[300, 301]]})],
     {"v_a": [{"segment": [0.5 * i, 0.5 * i + 1], "score": 1 - i / 300} for i in range(43)]
      + [{"segment": [100, 110], "score": 0.5}]
      + [{"segment": [500 + i, 501 + i], "score": 0.1} for i in range(206)],
      "v_b": [{"segment": [i, i + 1], "score": 1 - i / 80} for i in range(80)]}),
    # tIoU exactly at the thresholds: 6/10 = 0.6, and [0, 6.3] against [0, 7] is 0.8999999999999999, which is
    # linspace's 0.9 (round(0.9, 2) would miss it)
    ("at-thresholds", [_captions({"v_a": [[0, 10], [0, 6.3]]})],
     {"v_a": [{"segment": [4, 10], "score": 0.9}, {"segment": [0, 7], "score": 0.1}]}),
    # reversed and zero-length segments never match; a video with no proposals is missed
    ("degenerate", [_captions({"v_a": [[5, 5], [8, 2], [1, 3]], "v_b": [[0, 1]]})],
     {"v_a": [{"segment": [5, 5], "score": 0.9}, {"segment": [8, 2], "score": 0.8}, {"segment": [1, 3], "score": 0.1}],
      "v_b": []}),
    # two annotation files: a video of both gets the segments of both
    ("two-files", [_captions({"v_a": [[0, 10]], "v_b": [[1, 2]]}), _captions({"v_a": [[0, 11]], "v_c": [[4, 8]]})],
     {"v_a": [{"segment": [0, 10.5], "score": 0.4}], "v_c": [{"segment": [4, 7], "score": 0.4}]}),
])
def test_hand_made_cases_equal_the_official_script(name, gt, props):
    doc = _doc(props)
    _assert_equal(_ours(gt, doc), _official(gt, doc))


@pytest.mark.parametrize("seed", range(6))
def test_random_files_equal_the_official_script(seed):
    rng = np.random.default_rng(seed)
    gt, results = {}, {}
    for v in range(int(rng.integers(3, 15))):
        duration = float(rng.uniform(20, 200))
        starts = np.round(rng.uniform(0, duration, int(rng.integers(1, 6))), 1)
        gt[f"v_{v}"] = [[float(s), float(min(s + rng.uniform(1, 60), duration))] for s in starts]
        if rng.random() < 0.15:
            continue  # no proposals for this video
        n = int(rng.integers(1, 40 if seed % 2 else 260))  # odd seeds under the budget, even ones over it
        starts = np.round(rng.uniform(0, duration, n), 1)
        results[f"v_{v}"] = [{"segment": [float(s), float(s + np.round(rng.uniform(0.5, 60), 1))],
                              "score": float(np.round(rng.random(), 1))}  # one decimal: many ties
                             for s in starts]
    results["v_unannotated"] = [{"segment": [0.0, 5.0], "score": 0.5}] * int(rng.integers(0, 30))
    doc = _doc(results)
    files = [_captions(gt)]
    _assert_equal(_ours(files, doc), _official(files, doc))


# ----------------------------------------------------------------------------- the file format


def test_written_proposals_read_back_exactly_and_score_the_same(tmp_path):
    props = {"v_a": [{"segment": [0.1, 10.25], "score": 0.123456789012345}, {"segment": [3, 4], "score": 1 / 3}]}
    path = write_proposals(tmp_path / "p.json", make_proposals(props, "test"))
    doc = read_proposals(path)
    assert set(doc) == {"version", "results", "external_data"}
    assert doc["results"]["v_a"][1]["score"] == 1 / 3 and doc["results"]["v_a"][0]["segment"] == [0.1, 10.25]
    assert not list(tmp_path.glob(".p.json.*"))  # no temporary file left


@pytest.mark.parametrize("doc,says", [
    ([], "top level must be a JSON object"),
    ({"results": {}}, "missing field(s) version, external_data"),
    (_doc([]), "'results' must map video ids"),
    (_doc({"v_a": {"segment": [0, 1]}}), "results['v_a'] must be a list"),
    (_doc({"v_a": [{"timestamp": [0, 1], "sentence": "a"}]}), "results['v_a'][0].segment must be [start, end]"),
    (_doc({"v_a": [{"segment": [0, "1"], "score": 1}]}), "results['v_a'][0].segment"),
    (_doc({"v_a": [{"segment": [0, 1]}]}), "results['v_a'][0].score must be a finite number"),
    (_doc({"v_a": [{"segment": [0, 1], "score": float("nan")}]}), "score must be a finite number"),
])
def test_a_malformed_file_is_one_line_naming_it_and_what_is_wrong(doc, says):
    with pytest.raises(UserError) as err:
        validate_proposals(doc, "some/file.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("some/file.json: ") and says in message


def test_ground_truth_of_two_caption_files_and_of_a_database_subset(tmp_path):
    a = _write(tmp_path / "a.json", _captions({"v_a": [[0, 10]], "v_b": [[1, 2]]}))
    b = _write(tmp_path / "b.json", _captions({"v_a": [[0, 10]], "v_c": [[4, 8]]}))
    assert read_ground_truth([a, b]) == {"v_a": [[0.0, 10.0], [0.0, 10.0]], "v_b": [[1.0, 2.0]], "v_c": [[4.0, 8.0]]}
    db = _write(tmp_path / "db.json", {"database": {
        "x": {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "run"}]},
        "y": {"subset": "training", "annotations": [{"segment": [3, 4], "label": "run"}]}}})
    assert read_ground_truth([db]) == {"x": [[1.0, 2.0]]}
    assert read_ground_truth([db], "training") == {"y": [[3.0, 4.0]]}
    with pytest.raises(UserError, match="db.json: no video of subset 'testing'"):
        read_ground_truth([db], "testing")
    _write(tmp_path / "bad.json", {"v_a": {"timestamps": [[0, "x"]]}})
    with pytest.raises(UserError, match=r"bad.json: video v_a has a segment that is not \[start, end\]"):
        read_ground_truth([tmp_path / "bad.json"])


# ----------------------------------------------------------------------------- the command


def test_evaluate_proposals_prints_and_writes_scores_and_png_beside_the_file(tmp_path):
    gt = _write(tmp_path / "val.json", HAND_GT)
    props = _write(tmp_path / "theirs.json", HAND_PROPS)
    result = CliRunner().invoke(cli, ["evaluate", "--proposals", str(props), "--annotations", str(gt)])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "theirs_scores.json").read_text())
    assert scores["AR@1"] == pytest.approx(1 / 3) and scores["AR@100"] == pytest.approx(2 / 3)
    assert scores["AUC"] == pytest.approx(0.5 + 98 * 2 / 3) and len(scores["AR"]) == len(scores["AN"]) == 100
    assert scores["n_videos"] == 2 and scores["n_gt"] == 3 and scores["proposals_file"] == str(props)
    assert (tmp_path / "theirs_ar_an.png").read_bytes()[:4] == b"\x89PNG"
    assert "AR@100" in result.output and "65.83" in result.output and "theirs_scores.json" in result.output
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(cli, ["evaluate", "--proposals", str(props), "--annotations", str(gt),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "theirs_scores.json").is_file() and (out / "theirs_ar_an.png").is_file()


@pytest.mark.parametrize("extra,says", [
    (["--store", "s.zarr"], "drop --store"),
    (["--dense"], "drop --dense"),
    (["--results", "r.json"], "drop --results"),
])
def test_evaluate_proposals_with_a_model_option_is_one_line(tmp_path, extra, says):
    gt = _write(tmp_path / "val.json", HAND_GT)
    props = _write(tmp_path / "p.json", HAND_PROPS)
    result = CliRunner().invoke(cli, ["evaluate", "--proposals", str(props), "--annotations", str(gt), *extra])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and says in errors[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "val.json"]


def test_evaluate_proposals_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    gt = _write(tmp_path / "val.json", HAND_GT)
    result_file = _write(tmp_path / "res.json", {"version": "VERSION 1.0", "external_data": {},
                                                 "results": {"v_a": [{"timestamp": [0, 1], "sentence": "a"}]}})
    other_ids = _write(tmp_path / "ids.json", _doc({"a": [{"segment": [0, 10], "score": 1.0}]}))
    for props, says in ((result_file, f"{result_file}: not a valid ActivityNet proposal file"),
                        (other_ids, f"{other_ids}: none of its 1 video(s) is in the annotations (its first: a; "
                                    "the annotations' first: v_a)"),
                        (tmp_path / "nope.json", "nope.json")):
        before = sorted(tmp_path.iterdir())
        result = CliRunner().invoke(cli, ["evaluate", "--proposals", str(props), "--annotations", str(gt)])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 1 and len(errors) == 1 and says in errors[0], result.output
        assert "Traceback" not in result.output and sorted(tmp_path.iterdir()) == before
    result = CliRunner().invoke(cli, ["evaluate", "--results", str(result_file), "--annotations", str(gt),
                                      "--subset", "training"])
    assert result.exit_code == 1 and "--subset goes with --proposals" in result.output
