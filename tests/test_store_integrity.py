"""Store integrity: odd ids, durability, damage detection, `store verify`, and the store CLI commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from etspipe.errors import UserError
from features_store import format_info, open_store
from features_store.ids import id_from_key, store_key
from features_store.verify import verify_store

DIM = 6
META = {"extractor": "c3d", "layer": "fc7", "dim": DIM, "clip_len": 16, "stride": 8, "chunk_rows": 4}
VMETA = {"fps": 25.0, "source": "v.mp4"}


def feats(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float16).astype(np.float32)


def cli(*args: str):
    from pipeline import cli as group

    return CliRunner().invoke(group, list(args), catch_exceptions=False)


ODD_IDS = ["v_[ab]", "v_a", "v_b", "v_*", "v_?", "zarr.json", "c", "videos", "_etspipe", "v_A", "v_%41",
           "v_^a", "v_é", "v_É", "a~b", "x.json", "tmp-1"]


def test_store_keys_are_safe_distinct_and_reversible():
    keys = [store_key(v) for v in ODD_IDS]
    assert len({k.lower() for k in keys}) == len(ODD_IDS)  # distinct on a case-insensitive disk
    for vid, key in zip(ODD_IDS, keys, strict=True):
        assert not set(key) & set("*?[]/\\.~") and key == key.lower() and id_from_key(key) == vid
    assert store_key("v_uqi-Mw7tQ1Cc") == "v_uqi-^mw7t^q1^cc"
    assert id_from_key("zarr") == "zarr" and id_from_key("v_%zz") is None and id_from_key("A") is None


@pytest.mark.parametrize("where", ["local", "memory"])
def test_odd_ids_stored_apart_and_deleted_without_globbing(where, tmp_path):
    path = str(tmp_path / "s.zarr") if where == "local" else f"memory://odd-{os.getpid()}/s.zarr"
    with open_store(path, "w", META) as st:
        for i, vid in enumerate(ODD_IDS):
            st.write_video(vid, feats(3 + i, i), VMETA)
        st.delete_video("v_[ab]")  # a glob would also take v_a and v_b
        st.delete_video("v_*")
        st.delete_video("v_?")
    with open_store(path, "r") as st:
        kept = [v for v in ODD_IDS if v not in ("v_[ab]", "v_*", "v_?")]
        assert st.complete_ids() == sorted(kept)
        for i, vid in enumerate(ODD_IDS):
            if vid in kept:
                np.testing.assert_array_equal(st.rows(vid), feats(3 + i, i))
        assert st.meta["dim"] == DIM  # "zarr.json" as an id did not touch the store's own file
        assert verify_store(st).clean


def test_ids_that_address_other_entries_are_refused_with_one_line(tmp_path):
    with open_store(str(tmp_path / "s.zarr"), "w", META) as st:
        for bad in ("../x", "a/b", "..", ".tmp-123", "x" * 80 + "É" * 60):
            with pytest.raises(UserError, match="invalid video id") as info:
                st.write_video(bad, feats(2), VMETA)
            assert "\n" not in str(info.value)


def _fsynced(monkeypatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_commit_fsyncs_rows_marker_and_directories(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    with open_store(str(path), "w", META) as st:
        synced = _fsynced(monkeypatch)
        st.write_video("v_a", feats(10), VMETA)
        array = path / st.array_path("v_a")
    chunk_files = sorted(str(p) for p in array.rglob("*") if p.is_file())
    assert len(chunk_files) == 4  # zarr.json + 3 chunks
    assert set(chunk_files) <= set(synced)
    marker = str(path / "_etspipe" / "complete" / "v_a.json")
    for folder in (array, array.parent, path / "videos", path / "_etspipe" / "complete"):
        assert str(folder) in synced
    # the marker's contents reached the disk before it got its name, and its folder after
    tmp_marker = [s for s in synced if s.startswith(str(path / "_etspipe" / "complete" / ".tmp-"))]
    assert tmp_marker and synced.index(tmp_marker[-1]) > max(synced.index(f) for f in chunk_files)
    assert synced.index(str(path / "_etspipe" / "complete")) > synced.index(tmp_marker[-1])
    assert os.path.exists(marker)


def test_store_durable_off_makes_no_fsync(tmp_path, monkeypatch):
    """store.durable (on in configs/ets.yaml) false: commits stay atomic but nothing is fsynced."""
    from etspipe.config import load_config
    from extract_features.options import ExtractOptions

    assert load_config()["store"]["durable"] is True
    opts = ExtractOptions.from_config(load_config(None, ["store.durable=false"]))
    synced = _fsynced(monkeypatch)
    with open_store(str(tmp_path / "s.zarr"), "w", META, durable=opts.store_durable) as st:
        st.write_video("v_a", feats(10), VMETA)
        st.write_video("v_a", feats(10, 1), VMETA)
        np.testing.assert_array_equal(st.rows("v_a"), feats(10, 1))
    assert synced == []


def _damage(path: Path, store_rel: str) -> None:
    chunk = path / store_rel / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])


def test_truncated_chunk_is_an_error_never_rows(tmp_path):
    path = tmp_path / "s.zarr"
    with open_store(str(path), "w", META) as st:
        st.write_video("v_a", feats(10), VMETA)
        rel = st.array_path("v_a")
    _damage(path, rel)
    with open_store(str(path), "r") as st:
        np.testing.assert_array_equal(st.get("v_a", 0, 0.5)[0], feats(10)[:1])  # chunk 0 is fine
        with pytest.raises(UserError, match="chunk 1 of video 'v_a' is damaged"):
            st.rows("v_a")


def test_empty_or_truncated_marker_is_not_complete(tmp_path):
    path = tmp_path / "s.zarr"
    with open_store(str(path), "w", META) as st:
        st.write_video("v_a", feats(10), VMETA)
        st.write_video("v_b", feats(5), VMETA)
    (path / "_etspipe/complete/v_a.json").write_bytes(b"")
    marker = path / "_etspipe/complete/v_b.json"
    marker.write_bytes(marker.read_bytes()[:30])
    with open_store(str(path), "r") as st:
        assert "v_a" not in st.complete_ids() and not st.is_complete("v_a") and not st.is_complete("v_b")
        with pytest.raises(UserError, match="not complete"):
            st.rows("v_b")


def test_verify_finds_damage_and_repair_loses_nothing_good(tmp_path):
    path = tmp_path / "s.zarr"
    with open_store(str(path), "w", META) as st:
        for i in range(4):
            st.write_video(f"v_{i}", feats(10, i), VMETA)
        rel = st.array_path("v_1")
    _damage(path, rel)
    marker = path / "_etspipe/complete/v_2.json"
    marker.write_bytes(marker.read_bytes()[:30])
    (path / "_etspipe/complete/.tmp-deadbeef").write_bytes(b"{")
    result = cli("store", "verify", str(path))
    assert result.exit_code == 3, result.output
    assert "bad video v_1: chunk 1" in result.output and "bad video v_2: its commit marker" in result.output
    assert ".tmp-deadbeef" in result.output and "4 complete videos checked: 2 good, 2 bad" in result.output
    result = cli("store", "verify", str(path), "--repair")
    assert result.exit_code == 0, result.output
    with open_store(str(path), "a") as st:
        assert st.complete_ids() == ["v_0", "v_3"]
        for i in (0, 3):
            np.testing.assert_array_equal(st.rows(f"v_{i}"), feats(10, i))
        for i in (1, 2):  # what extract does for videos that are not done
            st.write_video(f"v_{i}", feats(10, i), VMETA)
    result = cli("store", "verify", str(path))
    assert result.exit_code == 0 and "4 good, 0 bad; 0 orphaned" in result.output
    assert not list((path / "videos").rglob(".tmp-*")) and len(list((path / "videos").glob("v_*/*-*"))) == 4


def test_hdf5_verify_and_repair(tmp_path):
    path = str(tmp_path / "s.h5")
    with open_store(path, "w", META) as st:
        st.write_video("v_a", feats(5), VMETA)
        st._file["videos"].create_dataset("v_half", data=np.zeros((3, DIM), np.float16))  # as a killed write
        st._file.flush()
    assert cli("store", "verify", path).exit_code == 3
    assert cli("store", "verify", path, "--repair").exit_code == 0
    assert cli("store", "verify", path).exit_code == 0


def _projection(seed: int, source_dim: int = 10):
    from extract_features.pca import IncrementalPCA

    fitter = IncrementalPCA(source_dim)
    fitter.partial_fit(np.random.default_rng(seed).standard_normal((40, source_dim)))
    return fitter.finish(DIM)


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_verify_checks_each_video_against_the_stores_projection(tmp_path, name):
    """A video projected by another PCA (or by none) in a store with a projection is bad; --repair makes
    it not done; `store info` shows the projection's checksum, dimensions and sample count."""
    path = str(tmp_path / name)
    ours, other = _projection(0), _projection(1)
    raw = np.random.default_rng(2).standard_normal((10, 10))
    with open_store(path, "w", META) as st:
        st.write_aux("pca", ours.arrays())
        st.write_video("v_ours", *ours.project(raw, VMETA))
        st.write_video("v_other", *other.project(raw, VMETA))
        st.write_video("v_none", feats(10), VMETA)
    result = cli("store", "verify", path)
    assert result.exit_code == 3, result.output
    assert f"bad video v_other: projected by another PCA ({other.checksum()[:12]}" in result.output
    assert "bad video v_none: records no PCA projection" in result.output
    assert "3 complete videos checked: 1 good, 2 bad" in result.output
    assert cli("store", "verify", path, "--repair").exit_code == 0
    with open_store(path, "r") as st:
        assert st.complete_ids() == ["v_ours"]
    out = cli("store", "info", path).output
    assert f"sha256 {ours.checksum()}, 10 -> {DIM} dimensions, fitted on 40 rows" in out
    info = json.loads(cli("store", "info", path, "--json").output)
    assert info["pca_projection"] == ours.identity()


def test_verify_finds_a_pca_video_in_a_store_without_projection(tmp_path):
    path = str(tmp_path / "s.zarr")
    with open_store(path, "w", META) as st:
        st.write_video("v_a", *_projection(0).project(np.ones((3, 10)), VMETA))
    result = cli("store", "verify", path)
    assert result.exit_code == 3 and "but the store holds no projection" in result.output


def test_info_lists_failed_videos_with_reasons(tmp_path):
    path = str(tmp_path / "s.zarr")
    with open_store(path, "w", META) as st:
        st.write_video("v_a", feats(5), VMETA)
        st.mark_failed("v_bad", "unreadable", "moov atom not found")
        st.mark_failed("v_[x]", "too_short", "3 frames")
        info = st.info()
    assert info["failed"] == {"v_[x]": {"reason": "too_short", "detail": "3 frames"},
                              "v_bad": {"reason": "unreadable", "detail": "moov atom not found"}}
    text = format_info(info)
    assert "v_bad  unreadable: moov atom not found" in text and "v_[x]  too_short: 3 frames" in text
    out = cli("store", "info", path).output
    assert "v_bad  unreadable: moov atom not found" in out


def test_store_ls_rm_export(tmp_path):
    path = str(tmp_path / "s.zarr")
    with open_store(path, "w", META) as st:
        st.write_video("v_a", feats(5), {**VMETA, "source": "a.mp4"})
        st.write_video("v_B", feats(3, 1), {"duration": 6.0, "source": "b.mp4"})
        st.mark_failed("v_c", "unreadable")
    lines = cli("store", "ls", path).output.splitlines()
    assert lines == ["v_B\t3\t6.00\tb.mp4", "v_a\t5\t1.92\ta.mp4"]
    out = tmp_path / "a.npy"
    result = cli("store", "export", path, "v_a", "--format", "npy", "-o", str(out))
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out, allow_pickle=False), feats(5))
    result = cli("store", "rm", path, "v_a", "v_c")
    assert result.exit_code == 0 and "removed 2" in result.output
    with open_store(path, "r") as st:
        assert st.complete_ids() == ["v_B"] and st.failed() == {}
    result = cli("store", "rm", path, "v_zz")
    assert result.exit_code == 1 and result.output.strip() == f"error: {path} has no video 'v_zz'"
    result = cli("store", "ls", str(tmp_path / "none.zarr"))
    assert result.exit_code == 1 and result.output.strip() == f"error: no feature store at {tmp_path / 'none.zarr'}"


def _old_layout_store(path: Path) -> None:
    """A store as etspipe format version 1 wrote it: arrays at videos/<id>, marker = metadata."""
    meta = {**META, "dtype": "float16", "format": "etspipe-features", "format_version": 1, "backend": "zarr",
            "zarr_layout": "zarr3-videos-v1", "codec": {"name": "blosc", "cname": "lz4", "clevel": 5,
                                                        "shuffle": "shuffle"}}
    root = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"etspipe": meta})
    vmeta = {"fps": 25.0, "n_rows": 5, "duration": 2.0, "source": "a", "n_frames": None,
             "time_rule": {"kind": "clip", "fps": 25.0, "clip_len": 16.0, "stride": 8.0}}
    root.create_array("videos/v_a", shape=(5, DIM), chunks=(4, DIM), dtype="float16",
                      compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                      config={"write_empty_chunks": True})[:] = feats(5)
    (path / "_etspipe/complete").mkdir(parents=True)
    (path / "_etspipe/complete/v_a.json").write_text(json.dumps(vmeta))


def test_format_1_store_is_read_and_writing_is_refused(tmp_path):
    path = tmp_path / "old.zarr"
    _old_layout_store(path)
    with open_store(str(path), "r") as st:
        assert st.complete_ids() == ["v_a"]
        np.testing.assert_array_equal(st.rows("v_a"), feats(5))
        assert verify_store(st).clean
    with pytest.raises(UserError, match="format version 1.*new store") as info:
        open_store(str(path), "a")
    assert "\n" not in str(info.value)
