"""`run_evaluate` end to end on a real small Zarr store and checkpoint, the result JSON schema, weights lookup.

The store is written through `features_store` (tests/stage2_store.py), so the
alignment under test is the store's own, as in a real run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage2_store import DIM, make_checkpoint, make_store, write_json

from caption_model import evaluate as ev
from caption_model.formats.results import make_result, read_result, validate_result, write_result
from etspipe.config import load_config
from etspipe.errors import UserError

# Stored copies shorter than annotated (as real downloads are): v_a 20 s of 30, v_b 10 s of 14.
VAL1 = {"v_a": {"duration": 30.0, "timestamps": [[0, 10], [0, 10], [5, 40], [25, 30], [3, 3]],
                "sentences": ["A man runs.", "A man runs fast.", "A dog jumps.", "A man jumps.", "A dog."]},
        "v_b": {"duration": 14.0, "timestamps": [[2, 8], [8, 2], [9.9, 14]],
                "sentences": ["A dog runs.", "A dog runs back.", "A man runs."]},
        "v_missing": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["Nothing."]}}
VAL2 = {"v_a": {"duration": 30.0, "timestamps": [[1, 9]], "sentences": ["Someone runs."]}}


@pytest.fixture()
def setup(tmp_path):
    make_store(tmp_path / "store.zarr", {"v_a": 20.0, "v_b": 10.0})
    anns = [write_json(tmp_path / "val_1.json", VAL1), write_json(tmp_path / "val_2.json", VAL2)]
    cfg = load_config()
    cfg["decode"]["max_len"] = 6
    cfg["train"]["save_dir"] = str(tmp_path / "ckpts")
    return cfg, tmp_path, anns


def test_evaluate_captions_every_segment_whatever_its_times(setup, capsys):
    cfg, tmp, anns = setup
    ckpt = make_checkpoint(tmp / "ckpts" / "best.pt")
    out = ev.run_evaluate(cfg, None, tmp / "store.zarr", anns, out_dir=tmp / "out", progress=False)
    printed = capsys.readouterr().out
    assert f"using checkpoint {ckpt}" in printed and "METEOR" in printed
    doc = read_result(out["results_path"])
    # every distinct segment of the FIRST file, with its own timestamps, past the stored end or not
    assert {v: [e["timestamp"] for e in es] for v, es in doc["results"].items()} == {
        "v_a": [[0.0, 10.0], [5.0, 40.0], [25.0, 30.0], [3.0, 3.0]], "v_b": [[2.0, 8.0], [8.0, 2.0], [9.9, 14.0]]}
    assert out["skipped"] == {"v_missing": "missing from store"} and out["n_segments"] == 7
    # one line per fallback case, counted
    for line in ("1 segments starting past the stored end used the last row",
                 "2 segments partly outside the stored video were clipped", "1 zero-length segments",
                 "1 reversed segments"):
        assert line in printed
    assert "1 video(s) of val_1.json have no features" in printed and "v_missing" in printed
    saved = json.loads(Path(out["scores_path"]).read_text())
    assert Path(out["scores_path"]).parent == Path(out["results_path"]).parent
    assert saved["average"] == out["scores"]["average"]
    # the missing video counts in the mean (scored 0), as in the official protocol
    assert saved["n_reference_videos"] == 3 and saved["n_predicted_videos"] == 2 and saved["n_predictions"] == 7


def test_evaluate_an_existing_result_file_without_checkpoint(setup):
    cfg, tmp, anns = setup
    res = tmp / "res.json"
    write_result(res, make_result({"v_b": [{"timestamp": [2, 8], "sentence": "A dog runs."}]}, "test"))
    out = ev.run_evaluate(cfg, None, None, anns, results_path=res, echo=None)
    assert out["checkpoint"] is None and out["scores_path"] == str(tmp / "res_scores.json")
    # v_b's prediction [2, 8] pairs with one reference at every threshold: [2, 8] itself (tIoU 1, the same
    # sentence); [8, 2] is reversed (official intersection max(0, min(2, 8) - max(8, 2)) = 0), [9.9, 14] disjoint.
    # So ROUGE-L is 1 for v_b and 0 for v_a and v_missing (no predictions): 100 / 3 over the 3 reference videos.
    scores = out["scores"]
    assert scores["n_pairs"] == 4 and scores["n_distinct_pairs"] == 1  # one pair per threshold
    assert scores["average"]["ROUGE_L"] == pytest.approx(100 / 3, abs=1e-9)
    assert scores["average"]["Precision"] == pytest.approx(100 / 3)  # v_b: its 1 prediction hits
    assert scores["average"]["Recall"] == pytest.approx(100 / 9)  # v_b: 1 of its 3 references is found


def test_no_checkpoint_and_bad_files_are_user_errors(setup):
    cfg, tmp, anns = setup
    with pytest.raises(UserError, match="no --weights given"):
        ev.run_evaluate(cfg, None, tmp / "store.zarr", anns, echo=None)
    with pytest.raises(UserError, match="checkpoint not found"):
        ev.run_evaluate(cfg, tmp / "nope.pt", tmp / "store.zarr", anns, echo=None)
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(UserError, match="bad.json.*missing field"):
        ev.run_evaluate(cfg, None, None, anns, results_path=bad, echo=None)
    make_checkpoint(tmp / "wide.pt", feat_dim=DIM + 1)
    with pytest.raises(UserError, match="feature dimension mismatch"):
        ev.run_evaluate(cfg, tmp / "wide.pt", tmp / "store.zarr", anns, echo=None)


def test_only_a_problem_of_every_video_stops_evaluation(setup):
    cfg, tmp, anns = setup
    make_checkpoint(tmp / "m.pt")
    other = write_json(tmp / "other.json", {"v_x": VAL1["v_missing"], "v_y": VAL1["v_missing"]})
    with pytest.raises(UserError, match="no video of other.json is in the store"):
        ev.run_evaluate(cfg, tmp / "m.pt", tmp / "store.zarr", [other], echo=None)


@pytest.mark.parametrize("doc, problem", [
    ([], "JSON object"),
    ({"version": "VERSION 1.0", "results": {}}, "external_data"),
    ({"version": "", "results": {"v": {}}, "external_data": {}}, "must be a list"),
    ({"version": "", "results": {"v": [{"timestamp": [1], "sentence": "x"}]}, "external_data": {}}, "timestamp"),
    ({"version": "", "results": {"v": [{"timestamp": [1, 2], "sentence": 3}]}, "external_data": {}}, "sentence"),
])
def test_result_schema(doc, problem):
    with pytest.raises(UserError, match=problem):
        validate_result(doc, "f.json")


def test_result_round_trip(tmp_path):
    doc = make_result({"v_x": [{"timestamp": [0.5, 2.25], "sentence": "a man runs"}]}, "C3D fc7 features")
    assert set(doc) == {"version", "results", "external_data"} and doc["version"] == "VERSION 1.0"
    assert doc["external_data"] == {"used": True, "details": "C3D fc7 features"}
    write_result(tmp_path / "r.json", doc)
    assert read_result(tmp_path / "r.json") == doc
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        read_result(tmp_path / "broken.json")


def test_atomic_json_is_indented_or_compact_and_leaves_no_temp_file(tmp_path):
    from caption_model.formats.results import write_json_atomic

    data = {"attention": [[0.25, 0.75], [1.0, 0.0]], "word": "piñata"}
    indented = write_json_atomic(tmp_path / "a.json", data).read_text(encoding="utf-8")
    compact = write_json_atomic(tmp_path / "b.json", data, compact=True).read_text(encoding="utf-8")
    assert json.loads(indented) == json.loads(compact) == data
    assert indented.endswith("\n") and "\n" not in compact and " " not in compact.replace("piñata", "")
    assert len(compact) < len(indented)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
