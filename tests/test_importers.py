"""Importers, on small files built in the three published layouts, into both backends."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from etspipe.errors import PartialFailure, UserError
from features_store import open_store
from features_store.importers import import_activitynet_c3d, import_hdf5_per_video, import_npy_folder


@pytest.fixture(params=["zarr", "hdf5"])
def store_path(request, tmp_path) -> str:
    return str(tmp_path / ("out.zarr" if request.param == "zarr" else "out.h5"))


def rand(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_activitynet_c3d(tmp_path, store_path):
    src = tmp_path / "sub_activitynet_v1-3.c3d.hdf5"
    with h5py.File(src, "w") as f:
        for i, vid in enumerate(["v_aaa", "v_bbb", "v_ccc", "v_nodur"]):
            f.create_group(vid).create_dataset("c3d_features", data=rand(10 + i, 500, i))
    train, val = tmp_path / "train.json", tmp_path / "val_1.json"
    train.write_text(json.dumps({"v_aaa": {"duration": 20.0, "timestamps": [[0, 5]], "sentences": ["a"]}}))
    val.write_text(json.dumps({"v_bbb": {"duration": 11.0, "timestamps": [], "sentences": []},
                               "v_ccc": {"duration": 60.0, "timestamps": [], "sentences": []}}))
    summary = import_activitynet_c3d(src, store_path, [train, val])
    assert summary["imported"] == 3 and summary["skipped_no_duration"] == 1
    assert summary["skipped_no_duration_ids"] == ["v_nodur"]
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == ["v_aaa", "v_bbb", "v_ccc"] and st.dim == 500
        assert st.meta["extractor"] == "c3d-activitynet-official"
        np.testing.assert_allclose(st.rows("v_aaa"), rand(10, 500, 0), atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(st.row_times("v_aaa"), (np.arange(10) + 0.5) * 2.0)  # 20 s over 10 rows
        rows, times = st.get("v_bbb", 0.0, 3.0)  # 11 rows over 11 s: centres 0.5, 1.5, 2.5
        assert len(rows) == 3 and times[-1] == pytest.approx(2.5)
    again = import_activitynet_c3d(src, store_path, [train, val])  # resumes
    assert again["imported"] == 0 and again["skipped_existing"] == 3


def test_activitynet_bad_inputs(tmp_path, store_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    src = tmp_path / "c3d.hdf5"
    with h5py.File(src, "w") as f:
        f.create_dataset("wrong_layout", data=np.zeros((2, 3)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"v_a": {"duration": 3.0}}))
    with pytest.raises(UserError, match="bad.json"):
        import_activitynet_c3d(src, store_path, [bad])
    with pytest.raises(UserError, match="not found"):
        import_activitynet_c3d(src, store_path, [tmp_path / "missing.json"])
    with pytest.raises(UserError, match="c3d_features"):
        import_activitynet_c3d(src, store_path, [good])


def test_hdf5_per_video_at_stated_fps(tmp_path, store_path):
    src = tmp_path / "resnet152.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v_one", data=rand(25, 32, 1))
        f.create_group("v_two").create_dataset("feats", data=rand(8, 32, 2))
        f.create_dataset("v_flat", data=np.zeros(32))  # not 2-D: skipped
    summary = import_hdf5_per_video(src, store_path, fps=5.0)
    assert summary["imported"] == 2 and summary["skipped_bad_shape"] == 1
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == ["v_one", "v_two"]
        np.testing.assert_allclose(st.row_times("v_one")[:2], [0.1, 0.3])  # frame i at 5 fps, centre +0.1
        assert st.video_meta("v_one")["duration"] == pytest.approx(5.0)
        rows, _ = st.get("v_one", 1.0, 2.0)
        np.testing.assert_allclose(rows, rand(25, 32, 1)[5:10], atol=2e-3, rtol=1e-3)


def test_npy_folder_with_stride(tmp_path, store_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "v_x.npy", rand(12, 16, 1))
    np.save(folder / "v_y.npy", rand(4, 16, 2))
    np.save(folder / "v_z_wrongdim.npy", rand(4, 15, 3))
    (folder / "v_broken.npy").write_bytes(b"garbage")
    summary = import_npy_folder(folder, store_path, fps=30.0, stride=8, clip_len=16)
    assert summary["imported"] == 2 and summary["skipped_bad_shape"] == 1 and summary["skipped_unreadable"] == 1
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == ["v_x", "v_y"]
        np.testing.assert_allclose(st.row_times("v_x")[:2], [8 / 30, 16 / 30])
        assert st.meta["stride"] == 8 and st.meta["fps"] == 30.0
    with pytest.raises(UserError, match="fps"):
        import_npy_folder(folder, store_path, fps=0, stride=8)
    with pytest.raises(UserError, match="no .npy"):
        import_npy_folder(tmp_path, store_path, fps=30.0, stride=8)


def test_reimport_with_other_fps_stride_or_dim_is_refused(tmp_path, store_path):
    folder, wide = tmp_path / "npy", tmp_path / "wide"
    folder.mkdir()
    wide.mkdir()
    np.save(folder / "v_x.npy", rand(6, 16, 1))
    np.save(wide / "v_y.npy", rand(6, 24, 2))
    import_npy_folder(folder, store_path, fps=30.0, stride=8)
    for kwargs, key in [({"fps": 25.0, "stride": 8}, "fps"), ({"fps": 30.0, "stride": 4}, "stride")]:
        with pytest.raises(UserError, match=key):
            import_npy_folder(folder, store_path, **kwargs)
    with pytest.raises(UserError, match="dim"):
        import_npy_folder(wide, store_path, fps=30.0, stride=8)
    again = import_npy_folder(folder, store_path, fps=30, stride=8)  # the same settings resume
    assert again["skipped_existing"] == 1


def test_import_that_matches_no_video_is_a_partial_failure(tmp_path, store_path):
    src = tmp_path / "c3d.hdf5"
    with h5py.File(src, "w") as f:
        f.create_group("v_aaa").create_dataset("c3d_features", data=rand(4, 8, 0))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"v_zzz": {"duration": 3.0}}))
    with pytest.raises(PartialFailure, match="duration"):
        import_activitynet_c3d(src, store_path, [other])
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "v_flat.npy", np.zeros((2, 3, 4)))
    np.save(folder / "v_ok.npy", rand(2, 8, 1))
    (folder / "v_empty.npy").write_bytes(b"")  # np.load raises EOFError on it
    summary = import_npy_folder(folder, store_path, fps=5.0, stride=1)
    assert summary["imported"] == 1 and summary["skipped_unreadable"] == 1
    (folder / "v_ok.npy").rename(folder / ".v_ok.npy")  # an id the store refuses: skipped
    with pytest.raises(PartialFailure, match="matched no video"):
        import_npy_folder(folder, str(tmp_path / ("x" + Path(store_path).suffix)), fps=5.0, stride=1)
