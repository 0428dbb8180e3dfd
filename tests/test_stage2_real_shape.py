"""Stage 2 end to end in the shape of a real local ActivityNet run, through the CLI.

The failure this guards against: a store extracted from downloads a little
shorter than the annotated durations (30 fps, clip 16, stride 8), annotations
with segments at the very end of the annotated video, a zero-length segment
and a video missing from the store. `train` worked, then `evaluate` stopped at
the first segment starting past a stored video's end and wrote nothing.
Here train, evaluate and predict must all finish with every segment captioned.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from stage2_store import make_store, write_json

from caption_model.formats.results import read_result
from pipeline import cli

WORDS = ["a", "man", "woman", "dog", "runs", "jumps", "plays", "the", "ball", "guitar"]
STORED = {f"v_real{i}": 6.0 + i for i in range(6)}  # the downloads: 6-11 s
ANNOTATED = {vid: d + 1.5 for vid, d in STORED.items()}  # the annotation says 1.5 s longer


def _sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(3, 7)))).capitalize() + "."


def _annotations(vids: list[str], seed: int, missing: str | None = None) -> dict:
    rng = np.random.default_rng(seed)
    ann = {}
    for vid in vids:
        d = ANNOTATED[vid]
        stamps = [[0.0, round(d / 2, 2)], [round(d - 1.2, 2), d],  # the last one starts past the stored end
                  [round(d - 0.3, 2), d], [2.0, 2.0]]  # at the very end; zero-length
        ann[vid] = {"duration": d, "timestamps": stamps, "sentences": [_sentence(rng) for _ in stamps]}
    if missing:
        ann[missing] = {"duration": 9.0, "timestamps": [[0.0, 4.0]], "sentences": ["A man runs."]}
    return ann


@pytest.fixture()
def real_shaped(tmp_path, monkeypatch):
    # Java's METEOR start-up is the slowest part and is not what this test is about.
    monkeypatch.setattr("caption_model.scoring.java_scorers.java_available", lambda: False)
    store = make_store(tmp_path / "c3d.zarr", STORED)
    vids = sorted(STORED)
    train = write_json(tmp_path / "train.json", _annotations(vids[:4], 0))
    val1 = write_json(tmp_path / "val_1.json", _annotations(vids[4:], 1, missing="v_not_downloaded"))
    val2 = write_json(tmp_path / "val_2.json", _annotations(vids[4:], 2))
    return tmp_path, store, train, val1, val2


SMALL = ["-o", "model.proj_dim=16", "-o", "model.embed_dim=16", "-o", "model.hidden_dim=16", "-o",
         "model.attn_dim=8", "-o", "data.min_word_count=1", "-o", "data.num_workers=0", "-o",
         "train.val_meteor=false", "-o", "train.batch_size=4", "-o", "decode.max_len=6", "--device", "cpu"]


def test_train_evaluate_predict_on_a_real_shaped_store(real_shaped):
    tmp, store, train, val1, val2 = real_shaped
    runner = CliRunner()
    ckpts = tmp / "ckpts"
    trained = runner.invoke(cli, ["train", "--store", str(store), "--train", str(train), "--save_dir", str(ckpts),
                                  "--epochs", "2", *SMALL])
    assert trained.exit_code == 0, trained.output

    evaluated = runner.invoke(cli, ["evaluate", "--store", str(store), "--annotations", str(val1), str(val2),
                                    "--save_dir", str(ckpts), "--out", str(tmp / "eval"), *SMALL])
    assert evaluated.exit_code == 0, evaluated.output
    assert "segments starting past the stored end used the last row" in evaluated.output
    assert "zero-length segments" in evaluated.output and "v_not_downloaded" in evaluated.output
    results = read_result(next((tmp / "eval").glob("evaluate_val_1_*[0-9].json")))["results"]
    reference = json.loads(val1.read_text())
    stored = {vid: ann for vid, ann in reference.items() if vid in STORED}
    assert {v: [e["timestamp"] for e in es] for v, es in results.items()} == {
        vid: ann["timestamps"] for vid, ann in stored.items()}  # every segment, its own timestamps
    scores = json.loads(next((tmp / "eval").glob("*_scores.json")).read_text())
    assert scores["n_reference_videos"] == 3 and scores["n_predicted_videos"] == 2

    vid = "v_real5"
    end = STORED[vid]
    filelist = tmp / "list.txt"
    filelist.write_text(f"{vid} {end - 0.4} {end}\n{vid} {end + 0.0004} {end + 0.0009}\n{vid} 1 99\n{vid}\n")
    predicted = runner.invoke(cli, ["predict", "--filelist", str(filelist), "--store", str(store), "--save_dir",
                                    str(ckpts), "--out", str(tmp / "pred"), *SMALL])
    assert predicted.exit_code == 0, predicted.output  # times past the stored end get rows, as in evaluate
    assert "1 segments starting past the stored end used the last row" in predicted.output
    assert "1 segments partly outside the stored video were clipped to it" in predicted.output
    assert "wrote 4 caption(s)" in predicted.output


@pytest.mark.parametrize("start, end, rows, case", [
    (1.0, 2.0, (3, 7), None),                 # row centres (8 i + 8) / 30 s: rows 3..6 lie inside
    (9.0, 12.0, (33, 37), "partly_outside"),  # clipped to the stored 10 s
    (10.5, 12.0, (36, 37), "past_end"),       # the last row
    (-3.0, -1.0, (0, 1), "before_start"),
    (2.0, 2.0, (6, 7), "zero_length"),        # rows 6 and 7 are equally near 2.0 s: the earlier
    (2.0, 1.0, (3, 7), "reversed"),
    (float("nan"), 1.0, (0, 37), "not_finite"),
])
def test_every_segment_gets_rows_by_the_alignment_rule(start, end, rows, case):
    from features_store.alignment import FALLBACK_CASES, row_times, rows_for_segment

    times = row_times({"kind": "clip", "fps": 30.0, "clip_len": 16, "stride": 8}, 37)  # 10 s stored
    sel, got = rows_for_segment(times, start, end, 10.0)
    assert (sel.start, sel.stop) == rows and got == case
    assert case is None or case in FALLBACK_CASES
