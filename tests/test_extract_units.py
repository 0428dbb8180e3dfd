"""Pure parts of extraction: clip planning, streaming, resampling, PCA, inputs, options."""

from __future__ import annotations

import numpy as np
import pytest

from etspipe.config import load_config
from etspipe.errors import UserError
from extract_features.clips import ClipStream, clip_positions, count_clips, frame_positions
from extract_features.inputs import collect_videos
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from features_store.alignment import row_times


class FakeReader:
    """Frame i is filled with i; records the largest read; may end early."""

    def __init__(self, n_real: int) -> None:
        self.n_real = n_real
        self.max_read = 0
        self.last = -1

    def read(self, indices):
        assert all(i > self.last for i in indices), "reads must go forwards"
        if len(indices):
            self.last = int(indices[-1])
        idx = [int(i) for i in indices if i < self.n_real]
        self.max_read = max(self.max_read, len(idx))
        out = np.zeros((len(idx), 128, 171, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = i
        return out


def run_stream(n_announced, n_real=None, fps=25.0, target=None, chunk=2):
    reader = FakeReader(n_announced if n_real is None else n_real)
    stream = ClipStream(reader, frame_positions(n_announced, fps, target), 16, 8, 112, chunk_clips=chunk)
    clips = list(stream)
    return stream, reader, clips


def test_count_clips_and_positions():
    assert count_clips(0, 16, 8) == 0
    assert count_clips(5, 16, 8) == 1  # padded
    assert count_clips(16, 16, 8) == 1
    assert count_clips(23, 16, 8) == 1
    assert count_clips(24, 16, 8) == 2
    assert list(clip_positions(0, 16, 8, 5)) == [0, 1, 2, 3, 4] + [4] * 11
    # the one row-time rule (features_store.alignment) puts a row at the centre of its clip
    assert np.allclose(row_times({"kind": "clip", "fps": 25.0, "clip_len": 16, "stride": 8}, 2), [8 / 25, 16 / 25])


def test_stream_yields_the_right_frames_and_keeps_memory_bounded():
    stream, reader, clips = run_stream(200, chunk=2)
    assert [c for c, _ in clips] == list(range(count_clips(200, 16, 8)))
    for c, clip in clips:
        assert clip.shape == (16, 112, 112, 3)
        assert list(clip[:, 0, 0, 0]) == list(range(c * 8, c * 8 + 16))
    assert reader.max_read <= 2 * 8 + 8  # one chunk of new frames, never the whole video


def test_short_video_gives_one_padded_clip():
    stream, _, clips = run_stream(5)
    assert len(clips) == 1 and stream.padded
    assert list(clips[0][1][:, 0, 0, 0]) == [0, 1, 2, 3, 4] + [4] * 11


def test_stream_that_ends_early_is_replanned():
    stream, _, clips = run_stream(100, n_real=41)
    assert stream.native_end == 41 and stream.n_clips == count_clips(41, 16, 8) == len(clips)
    stream, _, clips = run_stream(100, n_real=10)
    assert len(clips) == 1 and stream.padded
    assert list(clips[0][1][:, 0, 0, 0]) == list(range(10)) + [9] * 6


def test_target_fps_resamples_by_index():
    assert list(frame_positions(10, 30.0, 15.0)) == [0, 2, 4, 6, 8]
    assert list(frame_positions(4, 10.0, 20.0)) == [0, 0, 1, 1, 2, 2, 3, 3]
    stream, _, clips = run_stream(60, fps=10.0, target=20.0, chunk=1)  # repeated frames across chunks
    assert stream.n_positions == 120
    for c, clip in clips:
        assert list(clip[:, 0, 0, 0]) == [p // 2 for p in range(c * 8, c * 8 + 16)]


def test_incremental_pca_matches_batch_pca(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 3.0
    pca = IncrementalPCA(12)
    for part in np.array_split(x, 7):
        pca.partial_fit(part)
    pca.finish(4)
    assert np.allclose(pca.mean, x.mean(0))
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    assert np.allclose(pca.explained_variance, s[:4] ** 2 / (len(x) - 1))
    assert np.allclose(np.abs(pca.components), np.abs(vt[:4]), atol=1e-8)
    pca.save(tmp_path / "p.npz")
    again = IncrementalPCA.load(tmp_path / "p.npz")
    assert np.allclose(again.transform(x), pca.transform(x))
    assert pca.transform(x).shape == (300, 4)
    with pytest.raises(UserError):
        IncrementalPCA(12).finish(20)


def test_collect_videos_from_folder_glob_and_list(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ["a/v_1.mp4", "a/v_2.MKV", "a/notes.txt", "v_3.webm"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_videos([str(tmp_path / "a")])] == ["v_1.mp4", "v_2.MKV"]
    assert [p.name for p in collect_videos([str(tmp_path / "*.webm")])] == ["v_3.webm"]
    (tmp_path / "list.txt").write_text("# videos\na/v_1.mp4\n\nv_3.webm\n")
    assert [p.name for p in collect_videos([str(tmp_path / "list.txt")])] == ["v_1.mp4", "v_3.webm"]
    with pytest.raises(UserError, match="not found"):
        collect_videos([str(tmp_path / "missing.mp4")])
    with pytest.raises(UserError, match="matches no files"):
        collect_videos([str(tmp_path / "*.avi")])


def test_options_from_config_and_validation():
    cfg = load_config(None, ["extract.layer=fc6", "extract.mean=[1, 2, 3]", "store.dtype=float32"])
    opts = ExtractOptions.from_config(cfg)
    assert opts.layer == "fc6" and opts.mean == (1.0, 2.0, 3.0) and opts.store_dtype == "float32"
    assert opts.clip_len == cfg["extract"]["clip_len"] and opts.store_durable is cfg["store"]["durable"]
    with pytest.raises(UserError, match="extract.layer"):
        ExtractOptions.from_config(cfg, layer="fc9")
    with pytest.raises(UserError, match="crop"):
        ExtractOptions.from_config(cfg, crop=100)


def test_options_come_from_the_config_only():
    """configs/ets.yaml is the one copy of the defaults: a config without a key is an error naming it."""
    cfg = load_config()
    del cfg["extract"]["stride"]
    with pytest.raises(UserError, match="extract.stride"):
        ExtractOptions.from_config(cfg)
    with pytest.raises(UserError, match="store.dtype"):
        ExtractOptions.from_config({"extract": load_config()["extract"]})
