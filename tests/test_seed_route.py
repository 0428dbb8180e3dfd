"""The seed's route end to end (issue 27 item 5): ActivityNet's frame-feature pickle as Python 2.7 wrote it ->
import -> train the seed's recipe -> evaluate -> predict a raw video through the ResNet-152 recipe, and the
same raw video from Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import videos
from click.testing import CliRunner
from py2_pickle import dumps_py27
from test_resnet_extract import torchvision_state_dict

import etspipe
from caption_model.runs.checkpoint import load_checkpoint
from pipeline import cli

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paddle_ets.yaml"
WORDS = "a man woman dog plays runs jumps ball in the park".split()
SMALL = ["model.proj_dim=12", "model.gru_dim=8", "model.hidden_dim=16", "model.embed_dim=10", "data.num_workers=0",
         "train.val_meteor=false", "decode.max_len=5", "data.min_word_count=1", "train.batch_size=8",
         "train.epochs=2", "data.val_fraction=0.2"]


def _corpus(tmp: Path) -> tuple[Path, Path]:
    """`{"v_<id>": float32 (T, 2048)}` at 5 rows a second, and captions of those videos."""
    rng = np.random.default_rng(0)
    feats, ann = {}, {}
    for v in range(10):
        duration = float(rng.uniform(4, 9))
        vid = f"v_vid{v:02d}"
        feats[vid] = (rng.standard_normal((int(duration * 5), 2048)) * 0.1 + rng.standard_normal(2048)).astype(
            np.float32)
        stamps = [[0.0, round(duration / 2, 2)], [round(duration / 3, 2), round(duration, 2)]]
        ann[vid] = {"duration": duration, "timestamps": stamps,
                    "sentences": [" ".join(rng.choice(WORDS, 4)) + "." for _ in stamps]}
    pkl = tmp / "resnet152_features_activitynet_5fps_320x240.pkl"
    pkl.write_bytes(dumps_py27(feats, memo=True))
    (tmp / "train.json").write_text(json.dumps(ann))
    return pkl, tmp / "train.json"


def test_pickle_import_train_evaluate_predict_raw(tmp_path: Path) -> None:
    runner = CliRunner()
    pkl, ann = _corpus(tmp_path)
    store = tmp_path / "anet_r152.zarr"
    res = runner.invoke(cli, ["import-features", "activitynet-resnet152", str(pkl), str(store)])
    assert res.exit_code == 0, res.output
    with etspipe.open_store(store) as s:
        assert len(s.complete_ids()) == 10 and s.meta["recipe"]["name"] == "activitynet-resnet152-5fps"
    args = ["train", "--config", str(CONFIG), "--store", str(store), "--train", str(ann), "--save-dir",
            str(tmp_path / "run")]
    for item in SMALL:
        args += ["-o", item]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["model"]["arch"] == "paddle_ets" and ckpt["store_meta"]["recipe"]["fps"] == 5.0
    res = runner.invoke(cli, ["evaluate", "--weights", str(tmp_path / "run"), "--store", str(store),
                              "--annotations", str(ann), "--out", str(tmp_path / "eval"), "-o", "decode.max_len=5"])
    assert res.exit_code == 0, res.output
    assert "METEOR" in json.loads(next((tmp_path / "eval").glob("*_scores.json")).read_text())["average"]
    weights = tmp_path / "resnet152.pth"
    torch.save(torchvision_state_dict(1.0), weights)
    raw = videos.write_video(tmp_path / "my_video.mp4", n_frames=5, size=(48, 64), fps=25)  # 0.2 s: one row
    res = runner.invoke(cli, ["predict", str(raw), "--weights", str(tmp_path / "run"), "--resnet-weights",
                              str(weights), "--out", str(tmp_path / "pred"), "-o", "decode.max_len=5"])
    assert res.exit_code == 0, res.output
    assert "my_video [0.00-" in res.output and "wrote 1 caption(s)" in res.output
    captioner = etspipe.Captioner.load(tmp_path / "run", store=tmp_path / "pred" / "features.zarr",
                                       resnet_weights=str(weights))
    [caption] = captioner.caption(raw)
    assert caption.video == "my_video" and caption.sentence and all(w in WORDS for w in caption.words)
    with pytest.raises(etspipe.UserError, match="not both"):
        etspipe.Captioner.load(tmp_path / "run", c3d_weights=str(weights), resnet_weights=str(weights))
