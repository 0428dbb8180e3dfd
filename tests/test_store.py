"""Every feature-store behaviour, against both backends (Zarr and HDF5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import features_store
from etspipe.errors import UserError
from features_store import FAILURE_REASONS, SegmentError, backend_for, format_info


def open_store(*args, **kwargs) -> features_store.FeatureStore:
    """The API under test, without fsyncs (store.durable false): durability is tested with faults."""
    return features_store.open_store(*args, durable=False, **kwargs)

DIM = 6
META = {"extractor": "c3d", "layer": "fc7", "dim": DIM, "clip_len": 16, "stride": 8, "chunk_rows": 4,
        "weights": "untrained"}
CLIP_META = {"fps": 25.0, "n_frames": 100, "source": "v.mp4", "clip_len": 16, "stride": 8}


def feats(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(params=["zarr", "hdf5"])
def store_path(request, tmp_path) -> str:
    return str(tmp_path / ("s.zarr" if request.param == "zarr" else "s.h5"))


@pytest.fixture
def filled(store_path) -> str:
    with open_store(store_path, "w", META) as st:
        st.write_video("v_a", feats(11, 1), CLIP_META)
        st.write_video("v_b", feats(3, 2), {"duration": 6.0, "source": "b"})
    return store_path


def test_backend_from_path():
    assert backend_for("x.h5") == "hdf5" and backend_for("X.HDF5") == "hdf5"
    assert backend_for("x.zarr") == "zarr" and backend_for("s3://bucket/x.zarr") == "zarr"


def test_roundtrip_float32_and_metadata(filled):
    with open_store(filled, "r") as st:
        assert st.backend == backend_for(filled)
        assert st.dim == DIM and st.meta["extractor"] == "c3d" and st.meta["format"] == "etspipe-features"
        assert st.complete_ids() == ["v_a", "v_b"] and len(st) == 2 and "v_a" in st
        rows = st.rows("v_a")
        assert rows.dtype == np.float32 and rows.shape == (11, DIM)
        np.testing.assert_array_equal(rows, feats(11, 1).astype(np.float16).astype(np.float32))
        vm = st.video_meta("v_a")
        assert vm["n_rows"] == 11 and vm["source"] == "v.mp4" and vm["duration"] == pytest.approx(4.0)
        assert vm["time_rule"] == {"kind": "clip", "fps": 25.0, "clip_len": 16.0, "stride": 8.0}
        np.testing.assert_allclose(st.row_times("v_a")[:3], [8 / 25, 16 / 25, 24 / 25])
        np.testing.assert_allclose(st.row_times("v_b"), [1.0, 3.0, 5.0])  # uniform rule: duration / n_rows


def test_get_applies_alignment_rule(filled):
    with open_store(filled, "r") as st:
        rows, times = st.get("v_a", 0.5, 1.5)  # centres 0.32, 0.64, ..., inside: 0.64 0.96 1.28
        np.testing.assert_allclose(times, [0.64, 0.96, 1.28])
        np.testing.assert_array_equal(rows, st.rows("v_a")[1:4])
        rows, times = st.get("v_a", 0.70, 0.71)  # shorter than a row: the nearest row (0.64)
        assert rows.shape == (1, DIM) and times[0] == pytest.approx(0.64)
        rows, times = st.get("v_a", -5, 100)  # clipped to [0, duration]: every row
        assert len(rows) == 11 and rows.dtype == np.float32
        rows, _ = st.get("v_b", 2.5, 5.5)
        np.testing.assert_array_equal(rows, st.rows("v_b")[1:3])
        with pytest.raises(SegmentError, match="v_a.*reversed"):
            st.get("v_a", 2.0, 1.0)
        with pytest.raises(SegmentError, match="empty"):
            st.get("v_a", 1.0, 1.0)
        with pytest.raises(SegmentError, match="outside"):
            st.get("v_a", 50.0, 60.0)


def test_reads_across_chunk_boundaries(filled):
    with open_store(filled, "r") as st:  # chunk_rows 4: rows 3..9 span three chunks
        full = st.rows("v_a")
        for start in range(11):
            for stop in range(start + 1, 12):
                np.testing.assert_array_equal(st._read_rows("v_a", start, stop), full[start:stop].astype(np.float16))


def test_unknown_video_is_a_user_error(filled):
    with open_store(filled, "r") as st:
        assert not st.is_complete("v_zz")
        with pytest.raises(UserError, match="v_zz"):
            st.rows("v_zz")
        with pytest.raises(UserError, match="invalid video id"):
            st.rows("../v_a")


def test_read_only_store_refuses_writes(filled):
    with open_store(filled, "r") as st:
        with pytest.raises(UserError, match="read-only"):
            st.write_video("v_c", feats(2), CLIP_META)
        with pytest.raises(UserError, match="read-only"):
            st.mark_failed("v_c", "unreadable")


def test_missing_store_and_missing_meta(store_path, tmp_path):
    with pytest.raises(UserError, match="no feature store"):
        open_store(store_path, "r")
    with pytest.raises(UserError, match="needs its metadata"):
        open_store(store_path, "a")
    with pytest.raises(UserError, match="dim"):
        open_store(store_path, "w", {"dim": 0})
    with pytest.raises(ValueError):
        open_store(store_path, "x")


def test_append_with_incompatible_meta(filled):
    for key, value in (("dim", DIM + 1), ("layer", "fc6"), ("extractor", "other"), ("stride", 4)):
        with pytest.raises(UserError, match=key):
            open_store(filled, "a", {**META, key: value})
    with open_store(filled, "a", {**META, "frame_size": [128, 171]}) as st:  # compatible: appends
        st.write_video("v_c", feats(2), CLIP_META)
    with open_store(filled, "a") as st:  # no meta: append to what is there
        assert st.complete_ids() == ["v_a", "v_b", "v_c"]


def test_mode_w_overwrites_but_refuses_foreign_paths(filled, tmp_path):
    with open_store(filled, "w", META) as st:
        assert st.complete_ids() == []
    foreign = tmp_path / ("foreign.zarr" if filled.endswith(".zarr") else "foreign.h5")
    if filled.endswith(".zarr"):
        foreign.mkdir()
        (foreign / "precious.txt").write_text("keep me")
    else:
        foreign.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not"):
        open_store(str(foreign), "w", META)
    assert foreign.exists()


def test_bad_rows_are_user_errors(store_path):
    with open_store(store_path, "w", META) as st:
        with pytest.raises(UserError, match=r"shape \(n, 6\)"):
            st.write_video("v_x", np.zeros((3, DIM + 1)), CLIP_META)
        with pytest.raises(UserError, match="no rows"):
            st.write_video("v_x", np.zeros((0, DIM)), CLIP_META)
        with pytest.raises(UserError, match="NaN"):
            st.write_video("v_x", np.full((2, DIM), np.nan), CLIP_META)
        with pytest.raises(UserError, match="NaN or infinity"):  # overflows float16
            st.write_video("v_x", np.full((2, DIM), 1e6), CLIP_META)
        with pytest.raises(UserError, match="fps"):
            st.write_video("v_x", np.zeros((2, DIM)), {"source": "no time rule"})
        with pytest.raises(UserError, match="n_rows"):
            st.write_video("v_x", np.zeros((2, DIM)), {**CLIP_META, "n_rows": 5})
        for bad in ("../x", "/abs", "a/b", "a\\b", "nul\0", "", ".", "..", ".hidden", "x" * 300):
            with pytest.raises(UserError, match="invalid video id"):
                st.write_video(bad, np.zeros((2, DIM)), CLIP_META)
        assert st.complete_ids() == [] and st.failed() == {}


def test_rewrite_replaces_and_delete_removes(filled):
    with open_store(filled, "a") as st:
        st.write_video("v_a", feats(2, 9), {"duration": 1.0})  # shorter than before
    with open_store(filled, "a") as st:
        np.testing.assert_array_equal(st.rows("v_a"), feats(2, 9).astype(np.float16).astype(np.float32))
        assert st.video_meta("v_a")["n_rows"] == 2
        st.delete_video("v_a")
        st.delete_video("v_never")  # no error
        assert not st.is_complete("v_a") and st.complete_ids() == ["v_b"]
    with open_store(filled, "r") as st:
        assert st.complete_ids() == ["v_b"]


def test_failures_recorded_listed_and_cleared(filled):
    with open_store(filled, "a") as st:
        st.mark_failed("v_bad", "unreadable", "moov atom not found", source="bad.mp4")
        st.mark_failed("v_short", "too_short", "3 frames")
        st.mark_failed("v_retry", "decode_error")
        with pytest.raises(ValueError, match="reason"):
            st.mark_failed("v_x", "bad luck")
    with open_store(filled, "a") as st:
        failed = st.failed()
        assert list(failed) == ["v_bad", "v_retry", "v_short"]
        assert failed["v_bad"]["reason"] == "unreadable" and failed["v_bad"]["source"] == "bad.mp4"
        assert failed["v_bad"]["detail"] == "moov atom not found" and failed["v_bad"]["time"]
        st.clear_failed("v_short")
        st.clear_failed("v_none")
        st.write_video("v_retry", feats(4), CLIP_META)  # success clears the failure
        assert list(st.failed()) == ["v_bad"] and st.is_complete("v_retry")
        info = st.info()
    assert info["videos_failed"] == 1 and info["failed_by_reason"] == {"unreadable": 1}
    assert set(FAILURE_REASONS) >= {"unreadable", "no_video_stream", "no_frames", "too_short", "decode_error"}


def test_info_and_format_info(filled):
    with open_store(filled, "a") as st:
        st.mark_failed("v_bad", "no_video_stream")
        info = st.info()
    assert info["videos_complete"] == 2 and info["videos_failed"] == 1 and info["rows_total"] == 14
    assert info["dim"] == DIM and info["dtype"] == "float16" and info["size_bytes"] > 14 * DIM * 2
    assert info["meta"]["extractor"] == "c3d" and info["backend"] == backend_for(filled)
    json.dumps(info)
    text = format_info(info)
    assert "videos complete  2" in text and "no_video_stream 1" in text and "c3d" in text


def test_float32_store(store_path):
    with open_store(store_path, "w", {**META, "dtype": "float32"}) as st:
        st.write_video("v_a", feats(5), CLIP_META)
        np.testing.assert_array_equal(st.rows("v_a"), feats(5))
    with pytest.raises(UserError, match="dtype"):
        open_store(store_path, "w", {**META, "dtype": "int8"})


def test_zarr_store_is_plain_zarr_and_fast_path_matches(tmp_path):
    path = str(tmp_path / "s.zarr")
    with open_store(path, "w", META) as st:
        st.write_video("v_a", feats(11, 1), CLIP_META)
    group = zarr.open_group(path, mode="r")
    assert group.attrs["etspipe"]["dim"] == DIM
    with open_store(path, "r") as st:
        array = group[st.array_path("v_a")]
    assert array.shape == (11, DIM) and array.attrs["etspipe_video"]["n_rows"] == 11
    with open_store(path, "r") as st:
        assert st._fast
        for start, stop in ((0, 11), (3, 9), (8, 11), (4, 5)):
            np.testing.assert_array_equal(st._read_rows("v_a", start, stop), array[start:stop])
        st._fast = False  # the zarr path gives the same rows
        np.testing.assert_array_equal(st.rows("v_a"), array[:].astype(np.float32))


def test_zarr_over_fsspec_url():
    path = "memory://etspipe-test/s.zarr"
    with open_store(path, "w", META) as st:
        st.write_video("v_a", feats(7), CLIP_META)
        st.mark_failed("v_b", "other", "x")
    with open_store(path, "r") as st:
        assert st.complete_ids() == ["v_a"] and list(st.failed()) == ["v_b"]
        np.testing.assert_array_equal(st.rows("v_a"), feats(7).astype(np.float16).astype(np.float32))
        assert st.info()["size_bytes"] > 0


def test_hdf5_rejects_remote_urls():
    with pytest.raises(UserError, match="local"):
        open_store("s3://bucket/x.h5", "r")


def test_float16_rows_read_back_bit_identical_to_numpys_cast():
    """The reader's fast float16 -> float32 cast must equal NumPy's for every half value (subnormals, signed
    zeros, infinities; NaN stays NaN), on strided and read-only rows, and keep the shape."""
    from features_store.base import as_float32

    every_half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    read_only = np.frombuffer(every_half.tobytes(), dtype=np.float16).reshape(256, 256)
    for rows in (every_half, every_half[3:200:2, 7:90], read_only[10:20], every_half[:0]):
        out = as_float32(rows)
        assert out.dtype == np.float32 and out.shape == rows.shape
        ref = rows.astype(np.float32)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        number = ~np.isnan(ref)
        np.testing.assert_array_equal(out.view(np.uint32)[number], ref.view(np.uint32)[number])
    assert as_float32(np.ones((2, 3), np.float32)).dtype == np.float32


def test_local_reads_survive_short_reads(tmp_path, monkeypatch):
    """A read(2) may return fewer bytes than asked: the store's file reader must read on to the end."""
    import os

    from features_store import zarr_files

    data = bytes(range(256)) * 40
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    real_read = os.read
    monkeypatch.setattr(zarr_files.os, "read", lambda fd, n: real_read(fd, min(n, 7)))
    assert zarr_files._read_local(str(path)) == data
    (tmp_path / "empty").write_bytes(b"")
    assert zarr_files._read_local(str(tmp_path / "empty")) == b""
