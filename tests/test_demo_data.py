"""The demo data generator: reproducible real videos, valid annotations, a grammar that round-trips.

One small set (6 videos, the least that gives every split a twin pair) is
generated once per module and shared; tests that change files make their own.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from etspipe.errors import UserError
from etspipe_demo import dataset as dd
from etspipe_demo.dataset import generate_demo_dataset, load_meta
from etspipe_demo.grammar import ACTIONS, COLOURS, SHAPES, Event, caption_correct, caption_for, parse_caption
from etspipe_demo.scoring import score_captions, split_annotations_by_order

N = 6


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_videos=N, seed=3)


def _load(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _all_meta(demo: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for split in dd.SPLITS:
        out.update(load_meta(demo[f"{split}_meta"]))
    return out


# ----------------------------------------------------------------- files and formats


def test_layout_and_summary(demo: dict) -> None:
    videos = sorted(Path(demo["videos_dir"]).glob("*.mp4"))
    assert [v.stem for v in videos] == [f"v_demo{i:04d}" for i in range(1, N + 1)]
    assert demo["reused"] is False
    assert demo["counts"]["videos"] == N
    assert sum(demo["counts"][s]["videos"] for s in dd.SPLITS) == N
    assert "order-dependent" in demo["summary"]


def test_annotations_are_activitynet_format(demo: dict) -> None:
    seen: set[str] = set()
    for split in dd.SPLITS:
        ann = _load(demo[split])
        assert ann, f"{split} is empty"
        assert not seen & set(ann), "a video is in two splits"
        seen |= set(ann)
        for vid, entry in ann.items():
            assert set(entry) == {"duration", "timestamps", "sentences"}
            assert (Path(demo["videos_dir"]) / f"{vid}.mp4").is_file()
            assert len(entry["timestamps"]) == len(entry["sentences"]) >= 3
            for (start, end), sentence in zip(entry["timestamps"], entry["sentences"], strict=True):
                assert 0 <= start < end <= entry["duration"]
                assert isinstance(sentence, str) and sentence.endswith(".")
    assert len(seen) == N


def test_meta_matches_annotations(demo: dict) -> None:
    for split in dd.SPLITS:
        ann, meta = _load(demo[split]), load_meta(demo[f"{split}_meta"])
        assert set(ann) == set(meta)
        for vid, entry in ann.items():
            segs = meta[vid]["segments"]
            assert [s["timestamp"] for s in segs] == entry["timestamps"]
            assert [s["sentence"] for s in segs] == entry["sentences"]
            for s in segs:
                assert s["order_dependent"] == (len(s["events"]) == 2)
                assert caption_correct(s["sentence"], s["events"])


def test_every_split_has_pairs_in_both_orders(demo: dict) -> None:
    """Order-dependent segments exist in each split, and each pair also occurs reversed there."""
    for split in dd.SPLITS:
        meta = load_meta(demo[f"{split}_meta"])
        pairs = {tuple(map(tuple, s["events"])) for m in meta.values() for s in m["segments"]
                 if s["order_dependent"]}
        assert pairs, f"no order-dependent segment in {split}"
        assert any((b, a) in pairs for a, b in pairs), f"no pair in both orders in {split}"


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_videos_decode_with_right_length_and_rate(demo: dict, reader: str) -> None:
    for vid, m in _all_meta(demo).items():
        path = str(Path(demo["videos_dir"]) / f"{vid}.mp4")
        if reader == "decord":
            decord = pytest.importorskip("decord")
            vr = decord.VideoReader(path)
            n, fps = len(vr), vr.get_avg_fps()
            assert vr[0].shape == (128, 172, 3)
        else:
            with av.open(path) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert stream.codec_context.pix_fmt == "yuv420p"
                n = sum(1 for _ in container.decode(stream))
                fps = float(stream.average_rate)
        assert n == m["n_frames"]
        assert fps == pytest.approx(15.0)
        assert n / fps == pytest.approx(m["duration"], abs=1e-3)
        assert 4.0 <= m["duration"] <= 8.0


def test_objects_stay_inside_the_c3d_crop(tmp_path: Path) -> None:
    """On plain backgrounds everything outside C3D's centre crop is background only.

    The crop (112x112 of the frame resized to 128x171) covers source columns
    29.2..141.8 and rows 8..120 of the 128x172 video.
    """
    info = generate_demo_dataset(tmp_path, n_videos=N, seed=5, background="plain")
    for vid in _all_meta(info):
        with av.open(str(Path(info["videos_dir"]) / f"{vid}.mp4")) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)
        bg = np.median(frames[:, :, :20].reshape(-1, 3), axis=0)
        outside = np.concatenate([frames[:, :, :28].reshape(-1, 3), frames[:, :, 144:].reshape(-1, 3),
                                  frames[:, :7].reshape(-1, 3), frames[:, 122:].reshape(-1, 3)])
        assert np.abs(outside - bg).max() <= 12, vid
        # ...and something does show inside it: saturated object pixels.
        inside = frames[:, 8:120, 30:141]
        assert (inside.max(-1) - inside.min(-1) > 150).any(), vid


# ----------------------------------------------------------------- determinism and reuse


def test_same_seed_same_bytes_other_seed_other_data(demo: dict, tmp_path: Path) -> None:
    again = generate_demo_dataset(tmp_path / "again", n_videos=N, seed=3)
    for split in dd.SPLITS:
        assert Path(again[split]).read_bytes() == Path(demo[split]).read_bytes()
        assert Path(again[f"{split}_meta"]).read_bytes() == Path(demo[f"{split}_meta"]).read_bytes()
    for video in Path(demo["videos_dir"]).glob("*.mp4"):
        assert (Path(again["videos_dir"]) / video.name).read_bytes() == video.read_bytes(), video.name
    other = generate_demo_dataset(tmp_path / "other", n_videos=N, seed=4)
    assert Path(other["test"]).read_bytes() != Path(demo["test"]).read_bytes()


def test_reuse_when_parameters_match(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path, n_videos=N, seed=1)
    video = Path(first["videos_dir"]) / "v_demo0001.mp4"
    stamp = video.stat().st_mtime_ns
    second = generate_demo_dataset(tmp_path, n_videos=N, seed=1)
    assert second["reused"] is True and video.stat().st_mtime_ns == stamp
    assert second["counts"] == first["counts"]
    # Other parameters, or a missing file, make it write the set again.
    third = generate_demo_dataset(tmp_path, n_videos=N + 2, seed=1)
    assert third["reused"] is False and third["counts"]["videos"] == N + 2
    (Path(third["videos_dir"]) / "v_demo0003.mp4").unlink()
    fourth = generate_demo_dataset(tmp_path, n_videos=N + 2, seed=1)
    assert fourth["reused"] is False and (Path(third["videos_dir"]) / "v_demo0003.mp4").is_file()
    assert generate_demo_dataset(tmp_path, n_videos=N + 2, seed=1, force=True)["reused"] is False


def test_bad_parameters_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="n_videos"):
        generate_demo_dataset(tmp_path, n_videos=4)
    with pytest.raises(UserError, match="unknown parameter"):
        generate_demo_dataset(tmp_path, n_videos=N, colour_count=3)
    with pytest.raises(UserError, match="pairs_per_video"):
        generate_demo_dataset(tmp_path, n_videos=N, n_events=2, pairs_per_video=2)


def test_split_sizes_follow_fractions() -> None:
    rng = np.random.default_rng(0)
    names = dd.split_groups(50, (0.7, 0.1, 0.2), rng)
    assert (names.count("train"), names.count("val"), names.count("test")) == (35, 5, 10)
    assert sorted(set(dd.split_groups(3, (0.7, 0.1, 0.2), rng))) == ["test", "train", "val"]


# ----------------------------------------------------------------- grammar and scoring


def test_every_caption_round_trips_through_the_parser() -> None:
    singles = [Event(c, s, a) for c, s, a in itertools.product(COLOURS, SHAPES, ACTIONS)]
    for event in singles:
        assert parse_caption(caption_for([event])) == [event]
    for a, b in zip(singles, singles[7:] + singles[:7], strict=True):
        assert parse_caption(caption_for([a, b])) == [a, b]


def test_caption_correct_is_strict_about_order_and_content() -> None:
    ref = "A blue square grows and then a green triangle moves up."
    assert caption_correct("a blue square grows and then a green triangle moves up", ref)
    assert caption_correct("The blue square grows, then the green triangle moves up .", ref)
    assert not caption_correct("a green triangle moves up and then a blue square grows", ref)
    assert not caption_correct("a blue square grows", ref)
    assert not caption_correct("a blue square grows and then a green triangle moves down", ref)
    assert not caption_correct("a blue square grows and then a green <unk> moves up", ref)
    assert not caption_correct("a blue square grows and then a green triangle moves up up", ref)
    assert not caption_correct("", ref)
    left = [("red", "circle", "move_left")]
    assert caption_correct("a red circle moves left", left)
    assert caption_correct("A red circle moves to the left.", left)
    assert not caption_correct("a red circle moves to the right", left)
    with pytest.raises(ValueError):
        caption_correct("a red circle", "not a sentence of the grammar")


def test_score_captions_and_order_subsets(demo: dict) -> None:
    meta = load_meta(demo["test_meta"])
    perfect = {vid: [{"timestamp": s["timestamp"], "sentence": s["sentence"]} for s in m["segments"]]
               for vid, m in meta.items()}
    scores = score_captions(perfect, meta)
    assert scores["all"]["fraction"] == 1.0
    assert scores["order_dependent"]["n"] + scores["single"]["n"] == scores["all"]["n"]

    # Reverse every pair caption: all order-dependent segments become wrong, the rest stay right.
    swapped = {vid: [{"timestamp": p["timestamp"],
                      "sentence": caption_for(list(reversed(parse_caption(p["sentence"]))))} for p in preds]
               for vid, preds in perfect.items()}
    scores = score_captions(swapped, meta)
    assert scores["order_dependent"]["correct"] == 0
    assert scores["single"]["fraction"] == 1.0
    assert score_captions({}, meta)["all"]["correct"] == 0

    ordered, rest = split_annotations_by_order(meta)
    n_ordered = sum(len(e["timestamps"]) for e in ordered.values())
    n_rest = sum(len(e["timestamps"]) for e in rest.values())
    assert (n_ordered, n_rest) == (scores["order_dependent"]["n"], scores["single"]["n"])
    assert all(" and then " in s for e in ordered.values() for s in e["sentences"])


def test_worker_processes_write_the_same_files(demo: dict, tmp_path: Path) -> None:
    parallel = generate_demo_dataset(tmp_path, n_videos=N, seed=3, workers=2)
    assert Path(parallel["test_meta"]).read_bytes() == Path(demo["test_meta"]).read_bytes()
    for video in Path(demo["videos_dir"]).glob("*.mp4"):
        assert (Path(parallel["videos_dir"]) / video.name).read_bytes() == video.read_bytes(), video.name
