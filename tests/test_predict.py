"""`etspipe predict` on a real small Zarr store: store ids, raw videos (extracted like the store), plots, bad lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import videos
from click.testing import CliRunner
from stage2_store import make_checkpoint, make_store

from caption_model.formats.plots import plot_attention
from etspipe.config import load_config
from etspipe.errors import UserError
from etspipe_flows.predict import predict_videos
from extract_features import extract_one
from extract_features.like_store import options_of_store

EXTRACT = {"width_mult": 0.0625, "batch_size": 4, "decode_workers": 1}
RAW_META = {"width_mult": 0.0625, "fps": None}  # the store's record of how its rows were made


@pytest.fixture(scope="module")
def raw_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    path = videos.write_video(folder / "v_clip.mp4", n_frames=48, fps=24)
    rows, meta = extract_one(path, {**load_config(), "extract": {**load_config()["extract"], **EXTRACT}})
    return path, rows.shape[1], float(meta["duration"])


@pytest.fixture()
def env(tmp_path, raw_video):
    _, dim, _ = raw_video
    store = make_store(tmp_path / "store.zarr", {"v_stored": 20.0}, dim=dim, meta=RAW_META)
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=dim)
    cfg = load_config()
    cfg["extract"].update(EXTRACT)
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
        "v_stored 6 2",                 # reversed
        "v_stored 5 25",                # past the end (20 s)
        "v_stored 1 x",                 # unparsable
        f"{tmp / 'missing.mp4'} 0 1",   # missing file
        "v_stored",                     # whole video
        "v_stored 20.0005 20.0008",     # starts past the end by less than the tolerance: last row
        "v_stored 21 22",               # starts past the end
    ]))
    out = predict_videos(cfg, ckpt, filelist, store_path=store, plot_dir=tmp / "plots")
    printed = capsys.readouterr().out
    # times outside the stored video, reversed or zero-length get rows by the alignment rule, counted
    assert [c["line"] for c in out["captions"]] == [2, 4, 5, 6, 7, 8, 11, 12, 13]
    assert [f["line"] for f in out["failed"]] == [3, 9, 10]
    msgs = " | ".join(f["error"] for f in out["failed"])
    for expected in ("line 3: unknown video id", "line 9: cannot read 'x'", "line 10: video file not found"):
        assert expected in msgs
    assert out["n_failed"] == 3 and "3 line(s) failed" in printed
    assert "2 segments starting past the stored end used the last row" in printed
    assert "1 reversed segments (end before start) were read with start and end swapped" in printed
    assert "1 segments partly outside the stored video were clipped to it" in printed
    # the raw video was extracted once into the store under its id, and captioned whole
    from features_store import open_store

    with open_store(str(store)) as s:
        assert s.complete_ids() == ["v_clip", "v_stored"]
    whole = out["captions"][1]
    assert whole["video"] == "v_clip" and whole["start"] == 0 and whole["end"] == pytest.approx(duration)
    assert out["captions"][6]["end"] == 20.0  # line 11: the whole stored video
    doc = json.loads(open(out["results_path"]).read())
    assert set(doc["results"]) == {"v_stored", "v_clip"} and len(doc["results"]["v_stored"]) == 7
    assert out["results_path"].startswith(str(tmp / "pred"))
    for c in out["captions"]:
        assert c["plot"] and open(c["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert printed.count(f"{c['video']} [{c['start']:.2f}-{c['end']:.2f}]") == 1


def test_all_good_lines_means_no_failures(env):
    cfg, ckpt, store, tmp = env
    filelist = tmp / "ok.txt"
    filelist.write_text("v_stored 0 3\n")
    out = predict_videos(cfg, ckpt, filelist, store_path=store, out_path=tmp / "r.json", echo=None)
    assert out["n_failed"] == 0 and out["results_path"] == str(tmp / "r.json")


def test_trained_c3d_features_need_the_weights_and_fail_only_their_lines(tmp_path, raw_video):
    video, dim, _ = raw_video
    store = make_store(tmp_path / "trained.zarr", {"v_stored": 20.0}, dim=dim,
                       meta={**RAW_META, "weights": "ab" * 32})
    ckpt = make_checkpoint(tmp_path / "m.pt", feat_dim=dim)
    cfg = load_config()
    filelist = tmp_path / "raw.txt"
    filelist.write_text(f"{video}\nv_stored 1 2\n")
    out = predict_videos(cfg, ckpt, filelist, store_path=store, out_path=tmp_path / "r.json", echo=None)
    assert [c["line"] for c in out["captions"]] == [2]
    assert out["n_failed"] == 1 and out["failed"][0]["error"].startswith(f"line 1: {video}")
    assert "--c3d-weights" in out["failed"][0]["error"]


def test_video_paths_on_the_command_line(env, raw_video):
    from pipeline import cli

    cfg, ckpt, store, tmp = env
    video = raw_video[0]
    args = ["predict", str(video), "--weights", str(ckpt), "--store", str(store), "--out", str(tmp / "cli"),
            "-o", "decode.max_len=4", "-o", "extract.width_mult=0.0625"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "v_clip [0.00-" in result.output and result.output.count("wrote 1 caption(s)") == 1
    missing = CliRunner().invoke(cli, [*args, str(tmp / "nope.mp4")])
    assert missing.exit_code == 3 and "video file not found" in missing.output
    nothing = CliRunner().invoke(cli, ["predict", "--weights", str(ckpt)])
    assert nothing.exit_code == 1 and "give video files" in nothing.output


def test_plot_attention_shapes(tmp_path):
    attn = np.full((3, 4), 0.25)
    path = plot_attention(["a", "man", "<e>"], attn, [0.5, 1.5, 2.5, 3.5], tmp_path / "p.png", "t", 0, 4)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError):
        plot_attention(["a"], attn, [0.5, 1.5, 2.5, 3.5], tmp_path / "q.png")


def test_raw_videos_are_extracted_with_the_stores_settings_not_the_training_config():
    cfg = load_config()
    cfg["extract"].update(layer="fc7", stride=8, width_mult=1.0)
    meta = {"extractor": "c3d-sports1m", "layer": "pool5", "stride": 4, "width_mult": 0.25, "fps": 10.0,
            "normalisation": {"channel_order": "rgb", "mean": [1.0, 2.0, 3.0], "scale": 2.0}}
    opts = options_of_store(cfg, meta)
    assert (opts.layer, opts.stride, opts.width_mult, opts.fps) == ("pool5", 4, 0.25, 10.0)
    assert (opts.channel_order, tuple(opts.mean), opts.scale) == ("rgb", (1.0, 2.0, 3.0), 2.0)
    with pytest.raises(UserError, match="not made by etspipe's C3D"):
        options_of_store(cfg, {"extractor": "imported", "dim": 500})


def test_the_last_seconds_of_downloads_shorter_than_annotated_are_all_captioned(tmp_path):
    """The reported case: the last 1.5 s of 20 annotated videos whose downloads (and rows) end earlier."""
    from pipeline import cli

    rng = np.random.default_rng(3)
    stored = {f"v_{i:02d}AbC": round(float(rng.uniform(30, 200)), 3) for i in range(20)}
    annotated = {vid: d + float(rng.uniform(0.1, 2.5)) for vid, d in stored.items()}  # downloads end early
    store = make_store(tmp_path / "anet.zarr", stored, dim=16)
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=16)
    lines = [f"{vid} {annotated[vid] - 1.5:.2f} {annotated[vid]:.2f}" for vid in stored]
    (tmp_path / "last.txt").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["predict", "--filelist", str(tmp_path / "last.txt"), "--weights", str(ckpt),
                                      "--store", str(store), "--out", str(tmp_path / "pred"),
                                      "-o", "decode.max_len=4"])
    assert result.exit_code == 0, result.output
    assert "wrote 20 caption(s)" in result.output and "error:" not in result.output
    past = sum(annotated[v] - 1.5 >= d for v, d in stored.items())
    assert 0 < past < 20  # both kinds are in the list: starts inside the stored video and past its end
    assert f"{past} segments starting past the stored end used the last row" in result.output
    assert f"{20 - past} segments partly outside the stored video were clipped to it" in result.output
    doc = json.loads(next((tmp_path / "pred").glob("predict_last_*.json")).read_text())
    assert sum(len(v) for v in doc["results"].values()) == 20
    assert doc["results"]["v_00AbC"][0]["timestamp"] == [round(annotated["v_00AbC"] - 1.5, 2),
                                                          round(annotated["v_00AbC"], 2)]


def test_ids_in_no_store_leave_no_store_and_no_result_file(tmp_path):
    """A typo in --store: nothing is created, nothing empty is written, and the run fails."""
    from pipeline import cli

    ckpt = make_checkpoint(tmp_path / "best.pt")
    (tmp_path / "ids.txt").write_text("v_a 1 2\nv_b\n")
    out = tmp_path / "pred"
    result = CliRunner().invoke(cli, ["predict", "--filelist", str(tmp_path / "ids.txt"), "--weights", str(ckpt),
                                      "--store", str(tmp_path / "typo.zarr"), "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "unknown video id" in result.output and "nothing was captioned" in result.output
    assert not (tmp_path / "typo.zarr").exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_a_raw_file_that_fails_leaves_no_store_it_created(tmp_path, raw_video):
    _, dim, _ = raw_video
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=dim, store_meta={**RAW_META, "dim": dim,
                                                                           "extractor": "c3d-sports1m"})
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    cfg = load_config()
    cfg["extract"].update(EXTRACT)
    cfg["predict"]["results_dir"] = str(tmp_path / "pred")
    out = predict_videos(cfg, ckpt, None, [str(bad)], store_path=tmp_path / "cache.zarr", echo=None)
    assert out["n_ok"] == 0 and out["n_failed"] == 1 and out["results_path"] is None
    assert not (tmp_path / "cache.zarr").exists() and not (tmp_path / "pred").exists()


def test_an_extraction_that_raises_leaves_no_store_it_created(tmp_path, raw_video, monkeypatch):
    import extract_features

    video, dim, _ = raw_video
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=dim)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_features, "extract_like_store", interrupted)
    cfg = load_config()
    with pytest.raises(KeyboardInterrupt):
        predict_videos(cfg, ckpt, None, [str(video)], store_path=tmp_path / "cache.zarr", echo=None)
    assert not (tmp_path / "cache.zarr").exists()
