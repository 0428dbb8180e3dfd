"""`etspipe predict --html`: the attention sidecar from predict, and the page built from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import videos
from click.testing import CliRunner
from stage2_store import make_checkpoint, make_store

from caption_model.formats.attention_sidecar import sidecar_path_for
from etspipe.config import load_config
from extract_features import extract_one

EXTRACT = {"width_mult": 0.0625, "batch_size": 4, "decode_workers": 1}


def test_predict_html_writes_sidecar_and_page_with_videos_and_attention(tmp_path: Path):
    from pipeline import cli

    (tmp_path / "clips").mkdir()
    video = videos.write_video(tmp_path / "clips" / "v_clip.mp4", n_frames=48, fps=24)
    rows, _ = extract_one(video, {**load_config(), "extract": {**load_config()["extract"], **EXTRACT}})
    store = make_store(tmp_path / "store.zarr", {"v_stored": 20.0}, dim=rows.shape[1],
                       meta={"width_mult": 0.0625, "fps": None})
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=rows.shape[1])
    filelist = tmp_path / "list.txt"
    filelist.write_text(f"v_stored 2 6\n{video}\nv_stored 8 12\n")
    run = CliRunner().invoke(cli, ["predict", "--filelist", str(filelist), "--weights", str(ckpt), "--store",
                                   str(store), "--out", str(tmp_path / "pred"), "--html", "-o", "decode.max_len=5",
                                   "-o", "extract.width_mult=0.0625"])
    assert run.exit_code == 0, run.output
    result, = [p for p in (tmp_path / "pred").glob("predict_list_*.json") if not p.stem.endswith("_attention")]
    results = json.loads(result.read_text())["results"]
    sidecar = json.loads(sidecar_path_for(result).read_text())
    assert {v: sorted(s["entries"]) for v, s in sidecar["videos"].items()} == {"v_stored": ["0", "1"],
                                                                               "v_clip": ["0"]}
    for vid, video_side in sidecar["videos"].items():
        for key, item in video_side["entries"].items():
            assert item["sentence"] == results[vid][int(key)]["sentence"]  # index = place in the result list
            attn = np.asarray(item["attention"])
            assert attn.shape == (len(item["words"]), len(item["row_times"]))
            np.testing.assert_allclose(attn.sum(axis=1), 1.0, atol=1e-3)  # each word's weights over the rows
            start, end = item["timestamp"]
            assert all(start - 1 <= t <= end + 1 for t in item["row_times"])
    assert sidecar["videos"]["v_stored"]["duration"] == 20.0

    page = result.with_suffix(".html")
    assert f"wrote the page {page}" in run.output
    data = json.loads(re.search(r'id="etspipe-data">(.*?)</script>', page.read_text(), re.S).group(1))
    by_id = {v["id"]: v for v in data["videos"]}
    assert by_id["v_clip"]["src"] == "../clips/v_clip.mp4"  # the file just captioned, relative to the page
    assert by_id["v_stored"]["src"] is None and by_id["v_stored"]["duration"] == 20.0
    assert all("att" in p for v in data["videos"] for p in v["preds"])
