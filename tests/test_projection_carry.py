"""A model trained on an etspipe PCA store brings its projection into a fresh working store (issue 27 item 4),
so `predict VIDEO` extracts a raw file through the projection its rows went through, without --pca-file."""

from __future__ import annotations

import json

import videos
from test_train import tiny_cfg

from caption_model.train import train
from etspipe.config import load_config
from etspipe_flows.predict import predict_videos
from extract_features import extract_corpus
from features_store import open_store
from features_store.projection import projection_identity

EXTRACT = {"width_mult": 0.0625, "batch_size": 4, "decode_workers": 1}


def test_predict_into_a_new_working_store_goes_through_the_training_stores_projection(tmp_path, one_thread):
    clips = []
    for i, n in enumerate((40, 32, 48, 24)):
        clips.append(videos.write_video(tmp_path / f"v_{i}.mp4", n_frames=n, fps=25,
                                        frame_fn=lambda k, h, w, i=i: videos.synthetic_frame(k * (i + 1), h, w)))
    cfg = load_config()
    cfg["extract"].update(EXTRACT, pca_dim=3)
    cfg["store"].update(durable=False, dtype="float32")
    store = tmp_path / "pca.zarr"
    extract_corpus([str(c) for c in clips[:3]], str(store), cfg, progress=False)
    ann = {f"v_{i}": {"duration": 1.0, "timestamps": [[0.0, 0.9]], "sentences": ["a square moves"]} for i in range(3)}
    (tmp_path / "train.json").write_text(json.dumps(ann))
    tcfg = tiny_cfg(tmp_path / "run", epochs=1, valid_interval=0)
    tcfg["data"]["val_fraction"] = 0.0
    train(tcfg, str(store), [str(tmp_path / "train.json")], progress=False)

    pcfg = load_config(None, ["decode.max_len=3", f"predict.results_dir={tmp_path / 'pred'}"])
    pcfg["extract"].update(EXTRACT)
    summary = predict_videos(pcfg, str(tmp_path / "run"), videos=[str(clips[3])], echo=None)
    assert summary["n_ok"] == 1 and not summary["failed"], summary["failed"]
    with open_store(str(store)) as trained, open_store(str(tmp_path / "pred" / "features.zarr")) as fresh:
        assert projection_identity(fresh)["sha256"] == projection_identity(trained)["sha256"]
        assert fresh.rows("v_3").shape[1] == 3
        assert fresh.video_meta("v_3")["pca_sha256"] == trained.video_meta("v_0")["pca_sha256"]
