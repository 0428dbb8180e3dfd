"""`run_predict`: store ids and raw videos (extracted on the fly and cached), plots, bad lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import videos
from test_evaluate import FakeStore, make_checkpoint

from caption_model import predict
from caption_model.plots import plot_attention
from etspipe.config import load_config
from extract_features import extract_one

EXTRACT = {"width_mult": 0.0625, "batch_size": 4, "decode_workers": 1}


@pytest.fixture(scope="module")
def raw_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    path = videos.write_video(folder / "v_clip.mp4", n_frames=48, fps=24)
    rows, meta = extract_one(path, {"extract": EXTRACT})
    return path, rows.shape[1], float(meta["duration"])


@pytest.fixture()
def env(tmp_path, monkeypatch, raw_video):
    path, dim, _ = raw_video
    store = FakeStore({"v_stored": 20.0}, dim=dim)
    monkeypatch.setattr(predict, "_open_store", lambda p, mode, meta=None: store)
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=dim, extract=EXTRACT)
    cfg = load_config()
    cfg["decode"]["max_len"] = 5
    cfg["predict"]["results_dir"] = str(tmp_path / "pred")
    return cfg, ckpt, store, tmp_path


def test_store_ids_raw_videos_plots_and_bad_lines(env, raw_video, capsys):
    cfg, ckpt, store, tmp = env
    video, _, duration = raw_video
    filelist = tmp / "list.txt"
    filelist.write_text("\n".join([
        "# store ids and a raw video",
        "v_stored 2 6",
        "stored_without_prefix_missing",
        f"{video}",
        f"{video} 0.5 1.5",
        "v_stored\t1\t4\ta reference sentence",
        "v_stored 6 2",                 # END <= START
        "v_stored 5 25",                # past the end (20 s)
        "v_stored 1 x",                 # unparsable
        f"{tmp / 'missing.mp4'} 0 1",   # missing file
        "v_stored",                     # whole video
    ]))
    out = predict.run_predict(cfg, ckpt, filelist, tmp / "store.zarr", plot_dir=tmp / "plots")
    printed = capsys.readouterr().out
    assert [c["line"] for c in out["captions"]] == [2, 4, 5, 6, 11]
    assert [f["line"] for f in out["failed"]] == [3, 7, 8, 9, 10]
    msgs = " | ".join(f["error"] for f in out["failed"])
    for expected in ("unknown video id", "must be after START", "past the end", "cannot read 'x'",
                     "video file not found"):
        assert expected in msgs
    assert out["n_failed"] == 5 and "5 line(s) failed" in printed
    # the raw video was extracted once, cached in the store under its id, and captioned whole
    assert store.is_complete("v_clip")
    whole = out["captions"][1]
    assert whole["video"] == "v_clip" and whole["start"] == 0 and whole["end"] == pytest.approx(duration)
    assert out["captions"][4]["end"] == 20.0
    doc = json.loads(open(out["results_path"]).read())
    assert set(doc["results"]) == {"v_stored", "v_clip"} and len(doc["results"]["v_stored"]) == 3
    assert out["results_path"].startswith(str(tmp / "pred"))
    for c in out["captions"]:
        assert c["plot"] and open(c["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"{c['video']} [{c['start']:.2f}-{c['end']:.2f}]" in printed


def test_all_good_lines_means_no_failures(env):
    cfg, ckpt, _, tmp = env
    filelist = tmp / "ok.txt"
    filelist.write_text("v_stored 0 3\n")
    out = predict.run_predict(cfg, ckpt, filelist, tmp / "store.zarr", out_path=tmp / "r.json", echo=None)
    assert out["n_failed"] == 0 and out["results_path"] == str(tmp / "r.json")


def test_trained_c3d_features_need_the_weights(env, raw_video, tmp_path):
    cfg, _, store, tmp = env
    ckpt = make_checkpoint(tmp / "trained.pt", feat_dim=store.dim, extract=EXTRACT,
                           store_meta={"extractor": "c3d", "layer": "fc7", "weights": "ab" * 32})
    filelist = tmp / "raw.txt"
    filelist.write_text(f"{raw_video[0]}\n")
    out = predict.run_predict(cfg, ckpt, filelist, tmp / "store.zarr", echo=None)
    assert out["n_failed"] == 1 and "--c3d-weights" in out["failed"][0]["error"]


def test_plot_attention_shapes(tmp_path):
    attn = np.full((3, 4), 0.25)
    path = plot_attention(["a", "man", "<e>"], attn, [0.5, 1.5, 2.5, 3.5], tmp_path / "p.png", "t", 0, 4)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError):
        plot_attention(["a"], attn, [0.5, 1.5, 2.5, 3.5], tmp_path / "q.png")


def test_raw_videos_are_extracted_with_the_stores_settings_not_the_training_config(tmp_path):
    import pytest

    from caption_model.predict import _options_of_store
    from etspipe.errors import UserError

    cfg = {"extract": {"layer": "fc7", "stride": 8, "width_mult": 1.0}}
    meta = {"extractor": "c3d-sports1m", "layer": "pool5", "stride": 4, "width_mult": 0.25, "fps": 10.0,
            "normalisation": {"channel_order": "rgb", "mean": [1.0, 2.0, 3.0], "scale": 2.0}}
    opts = _options_of_store(cfg, meta, tmp_path / "v.mp4")
    assert (opts.layer, opts.stride, opts.width_mult, opts.fps) == ("pool5", 4, 0.25, 10.0)
    assert (opts.channel_order, tuple(opts.mean), opts.scale) == ("rgb", (1.0, 2.0, 3.0), 2.0)
    with pytest.raises(UserError, match="not made by etspipe's C3D"):
        _options_of_store(cfg, {"extractor": "imported", "dim": 500}, tmp_path / "v.mp4")
