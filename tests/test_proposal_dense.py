"""Dense captioning through the CLI: predict on videos without times, subtitles, evaluate --dense."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import srt
import webvtt
from click.testing import CliRunner
from stage2_store import make_checkpoint
from test_proposal_train import STORE_META, make_event_corpus, tiny_cfg

from caption_model.proposals.train import train_proposals
from pipeline import cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A store, a (small, untrained) captioner and a trained proposal model in one run folder."""
    root = tmp_path_factory.mktemp("dense")
    store, ann = make_event_corpus(root, n_videos=12)
    folder = root / "run"
    make_checkpoint(folder / "best.pt", feat_dim=8, store_meta={**STORE_META, "dim": 8})
    _speaking(folder / "best.pt")
    train_proposals(tiny_cfg(folder, epochs=4), str(store), [str(ann)], progress=False)
    return {"root": root, "store": store, "ann": ann, "run": folder}


def _speaking(path: Path) -> None:
    """Bias the untrained captioner towards a word, so that every caption (and every cue) has text."""
    import torch

    ckpt = torch.load(path, weights_only=True)
    bias = next(k for k in ckpt["model"] if k.endswith("logits.bias"))
    ckpt["model"][bias][ckpt["vocab"]["itos"].index("man")] += 20.0
    torch.save(ckpt, path)


def _predict(run: dict, lines: list[str], *extra: str, weights: Path | None = None, out: Path | None = None):
    out = out or run["root"] / f"out_{abs(hash((tuple(lines), extra))) % 10**8}"
    filelist = run["root"] / "list.txt"
    filelist.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["predict", "--filelist", str(filelist), "--store", str(run["store"]),
                                      "--weights", str(weights or run["run"] / "best.pt"), "--out", str(out),
                                      "--device", "cpu", *extra])
    doc = json.loads(_results(out)[-1].read_text()) if out.exists() else None
    return result, doc, out


def _results(out: Path) -> list[Path]:
    """The result files of the predict runs into `out`, oldest first (their names carry the time)."""
    return sorted(out.glob("predict_*.json"), key=lambda p: p.stat().st_mtime_ns)


def _subtitles(out: Path) -> Path:
    """The subtitle folder of the newest run into `out`: named after its result file."""
    return _results(out)[-1].with_suffix("")


def test_video_without_times_gives_sorted_scored_events_and_timed_line_is_unchanged(run):
    result, doc, out = _predict(run, ["v_ev000", "v_ev001 1.0 2.0"], "--max-events", "3", "--subtitles", "vtt",
                                "-o", "proposals.score_threshold=0.0")
    assert result.exit_code == 0, result.output
    events = doc["results"]["v_ev000"]
    assert 1 <= len(events) <= 3
    assert [e["timestamp"][0] for e in events] == sorted(e["timestamp"][0] for e in events)
    assert all(0 <= e["proposal_score"] <= 1 and isinstance(e["sentence"], str) for e in events)
    (timed,) = doc["results"]["v_ev001"]
    assert timed == {"timestamp": [1.0, 2.0], "sentence": timed["sentence"]}  # no proposal_score: as before
    cues = webvtt.read(str(_subtitles(out) / "v_ev000.vtt")).captions
    assert len(cues) == len(events) and (_subtitles(out) / "v_ev001.vtt").is_file()
    assert "wrote 2 VTT subtitle file(s)" in result.output


def test_srt_subtitles_parse(run):
    result, doc, out = _predict(run, ["v_ev002"], "--subtitles", "srt", "-o", "proposals.score_threshold=0.0")
    assert result.exit_code == 0, result.output
    subs = list(srt.parse((_subtitles(out) / "v_ev002.srt").read_text()))
    assert len(subs) == len(doc["results"]["v_ev002"])


def test_second_predict_run_keeps_the_first_runs_subtitles(run):
    """Two runs into one --out: each run's subtitles sit in the folder named after its own result file."""
    out = run["root"] / "out_twice"
    runs: list[tuple[Path, int]] = []  # (result file, events) per run
    for n in (1, 3):  # one event, then up to three: files that tell the two runs apart
        before = set(out.glob("predict_*.json"))
        result, _, _ = _predict(run, ["v_ev002"], "--subtitles", "srt", "--max-events", str(n),
                                "-o", "proposals.score_threshold=0.0", out=out)
        assert result.exit_code == 0, result.output
        (res,) = set(out.glob("predict_*.json")) - before
        runs.append((res, len(json.loads(res.read_text())["results"]["v_ev002"])))
    assert runs[0][1] == 1 and runs[0][0].with_suffix("") != runs[1][0].with_suffix("")
    for res, count in runs:
        subs = list(srt.parse((res.with_suffix("") / "v_ev002.srt").read_text()))
        assert len(subs) == count  # the first run's file is still the first run's
    assert not (out / "v_ev002.srt").exists()


def test_empty_set_after_threshold_captions_whole_video_and_says_so(run):
    result, doc, _ = _predict(run, ["v_ev003", "v_ev004"], "-o", "proposals.score_threshold=1.0")
    assert result.exit_code == 0, result.output
    for vid in ("v_ev003", "v_ev004"):
        (only,) = doc["results"][vid]
        assert only["timestamp"][0] == 0.0 and only["proposal_score"] is None
    warnings = [line for line in result.output.splitlines() if "captioned whole" in line]
    assert len(warnings) == 1 and "2 video(s)" in warnings[0]
    assert "threshold 1 (proposals.score_threshold" in warnings[0]


def test_without_a_proposal_model_the_whole_video_is_captioned_and_said_once(run):
    bare = run["root"] / "bare"
    bare.mkdir(exist_ok=True)
    shutil.copy(run["run"] / "best.pt", bare / "best.pt")
    result, doc, _ = _predict(run, ["v_ev005", "v_ev006"], weights=bare / "best.pt")
    assert result.exit_code == 0, result.output
    assert all(len(doc["results"][v]) == 1 and "proposal_score" not in doc["results"][v][0]
               for v in ("v_ev005", "v_ev006"))
    lines = [line for line in result.output.splitlines() if "no proposal model" in line]
    assert len(lines) == 1 and "2 line(s) without times" in lines[0] and "train-proposals" in lines[0]


def test_proposal_model_of_another_store_is_one_line(run):
    other_root = run["root"] / "other"
    other_root.mkdir(exist_ok=True)
    other, _ = make_event_corpus(other_root, n_videos=3, meta={"layer": "pool5"})
    filelist = run["root"] / "o.txt"
    filelist.write_text("v_ev000\n")
    result = CliRunner().invoke(cli, ["predict", "--filelist", str(filelist), "--store", str(other),
                                      "--weights", str(run["run"] / "best.pt"), "--out", str(other_root / "o"),
                                      "--device", "cpu"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1
    assert str(run["store"]) in errors[0] and str(other) in errors[0] and "pool5" in errors[0]


def test_evaluate_dense_scores_own_events_and_reports_ar_an(run):
    out = run["root"] / "eval"
    ann = json.loads(run["ann"].read_text())
    for entry in ann.values():  # references the captioner's word appears in: SODA_c above 0
        entry["sentences"] = ["a man is here"] * len(entry["sentences"])
    ann_path = run["root"] / "val_man.json"
    ann_path.write_text(json.dumps(ann))
    result = CliRunner().invoke(cli, ["evaluate", "--dense", "--store", str(run["store"]), "--annotations",
                                      str(ann_path), "--weights", str(run["run"] / "best.pt"), "--out", str(out),
                                      "--device", "cpu", "-o", "proposals.score_threshold=0.0"])
    assert result.exit_code == 0, result.output
    doc = json.loads(next(out.glob("dense_*[0-9].json")).read_text())
    assert len(doc["results"]) == 12 and all("proposal_score" in e for v in doc["results"].values() for e in v)
    saved = json.loads(next(out.glob("dense_*[0-9]_scores.json")).read_text())
    # SODA_c is that of the dense result file just written against the annotations (soda_c itself is checked
    # against the reference implementation in test_soda.py): not of other captions, files or combination
    from proposal_oracle import captions_to_database, evaluate

    from caption_model.scoring.soda import soda_c

    again = soda_c(doc["results"], [ann_path], combine="pdvc")
    assert saved["soda_c"]["combine"] == "pdvc" and again["soda_c"] > 0
    for key in ("soda_c", "precision", "recall"):
        assert saved["soda_c"][key] == pytest.approx(again[key], abs=1e-9), key
    assert f"SODA_c {again['soda_c']:.2f}" in " ".join(result.output.split())
    assert next(out.glob("dense_*_proposals_ar_an.png")).read_bytes()[:4] == b"\x89PNG"
    # AR@10 is the official script's curve at 10 proposals per video, on the proposal file just written
    proposals_file = next(out.glob("dense_*[0-9]_proposals.json"))
    figures = json.loads(proposals_file.with_name(proposals_file.stem + "_scores.json").read_text())
    official = evaluate(captions_to_database([ann]),
                        json.loads(proposals_file.read_text()))
    at_10 = min(range(len(official["proposals_per_video"])), key=lambda i: abs(official["proposals_per_video"][i] - 10))
    assert figures["AR@10"] == pytest.approx(official["avg_recall"][at_10], abs=1e-12) and figures["AR@10"] > 0
    assert "AR@10" in result.output and "METEOR" in result.output


def test_evaluate_dense_proposes_for_every_video_of_all_the_files_and_writes_them_as_data(run):
    """Old code proposed for the first file's videos only: a video only in val_2 had nothing and scored 0."""
    from proposal_oracle import captions_to_database, evaluate

    from caption_model.formats.proposals import read_proposals
    from caption_model.scoring.proposal_metrics import ar_an

    ann = json.loads(run["ann"].read_text())
    ids = sorted(ann)
    first = {v: ann[v] for v in ids[:8]}
    second = {v: ann[v] for v in [ids[0], *ids[8:]]}
    second["v_absent"] = {"duration": 5.0, "timestamps": [[1.0, 2.0]], "sentences": ["a man"]}
    paths = [run["root"] / "val_1.json", run["root"] / "val_2.json"]
    for path, data in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(data))
    out = run["root"] / "eval2"
    result = CliRunner().invoke(cli, ["evaluate", "--dense", "--store", str(run["store"]), "--annotations",
                                      *map(str, paths), "--weights", str(run["run"] / "best.pt"), "--out", str(out),
                                      "--device", "cpu", "-o", "proposals.score_threshold=0.0",
                                      "-o", "proposals.max_proposals=30"])
    assert result.exit_code == 0, result.output
    result_file = next(out.glob("dense_val_1_*[0-9].json"))
    assert set(json.loads(result_file.read_text())["results"]) == set(ids)  # val_2's own videos are captioned
    assert "1 video(s) of the annotation files are not in the store and score 0 (first: v_absent)" in result.output
    proposals_file = result_file.with_name(result_file.stem + "_proposals.json")
    props = read_proposals(proposals_file)["results"]
    assert set(props) == set(ids) and all(1 <= len(p) <= 30 for p in props.values())
    assert all(0 <= x["score"] <= 1 and x["segment"][0] < x["segment"][1] for p in props.values() for x in p)
    only_second = {v: ann[v]["timestamps"] for v in ids[8:]}
    assert ar_an(only_second, {v: props[v] for v in only_second}).ar_at(30) > 0  # they are found, not zeros
    # the AR@AN of evaluate --dense is the official script's on its own proposal file and all the files
    figures = json.loads(proposals_file.with_name(proposals_file.stem + "_scores.json").read_text())
    official = evaluate(captions_to_database([first, second]), read_proposals(proposals_file))
    assert figures["AR"] == pytest.approx(official["avg_recall"], abs=1e-12)
    assert figures["AUC"] == pytest.approx(official["auc"], abs=1e-9) and figures["n_videos"] == 13
    # and evaluate --proposals scores the file to the same figures
    again = CliRunner().invoke(cli, ["evaluate", "--proposals", str(proposals_file), "--annotations",
                                     *map(str, paths), "--out", str(out / "again")])
    assert again.exit_code == 0, again.output
    rescored = json.loads((out / "again" / f"{proposals_file.stem}_scores.json").read_text())
    assert rescored["AR"] == figures["AR"] and rescored["AUC"] == figures["AUC"]


def test_evaluate_dense_without_proposal_model_is_one_line(run, tmp_path):
    shutil.copy(run["run"] / "best.pt", tmp_path / "best.pt")
    result = CliRunner().invoke(cli, ["evaluate", "--dense", "--store", str(run["store"]), "--annotations",
                                      str(run["ann"]), "--weights", str(tmp_path / "best.pt"), "--device", "cpu"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "train-proposals" in errors[0]
