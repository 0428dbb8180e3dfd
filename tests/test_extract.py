"""extract_corpus end to end on tiny generated videos with a narrow untrained C3D.

Covers: a folder mixing good and broken videos, resume / retry / overwrite,
the same features alone, batched, resumed (after SIGKILLs) and through dask,
PCA (fitted in two passes, or from a file), extract_one, and the store meta.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import videos

from etspipe.config import load_config
from etspipe.errors import UserError
from extract_features import extract_corpus, extract_one
from extract_features.options import ExtractOptions

ROOT = Path(__file__).resolve().parent.parent
W = 0.0625  # 1/16 of C3D's width: the same code paths, ~50x fewer FLOPs
# durability is not under test here: the fault tests keep store.durable on
CFG = load_config(None, [f"extract.width_mult={W}", "extract.batch_size=4", "extract.decode_workers=2",
                         "store.dtype=float32", "store.durable=false"])
BROKEN = {
    "v_empty": (videos.write_zero_byte, "empty_file"),
    "v_text": (videos.write_text_as_video, "unreadable"),
    "v_trunc": (videos.write_truncated, "unreadable"),
    "v_audio": (videos.write_audio_only, "no_video_stream"),
    "v_garbage": (videos.write_no_decodable_frames, "no_frames"),
}


def open_store(path):
    from features_store import open_store as real_open

    return real_open(str(path), "r")


def snapshot(path) -> dict:
    """Everything a reader of the store can see, for comparing two stores."""
    with open_store(path) as store:
        return {
            "complete": store.complete_ids(),
            "failed": {k: v["reason"] for k, v in store.failed().items()},
            "rows": {v: store.rows(v) for v in store.complete_ids()},
            "meta": {v: {k: m for k, m in store.video_meta(v).items() if k != "source"}
                     for v in store.complete_ids()},
        }


def assert_same_store(a: dict, b: dict, atol: float = 1e-4) -> None:
    assert a["complete"] == b["complete"]
    assert a["failed"] == b["failed"]
    assert a["meta"] == b["meta"]
    for vid in a["complete"]:
        np.testing.assert_allclose(a["rows"][vid], b["rows"][vid], rtol=1e-3, atol=atol, err_msg=vid)


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    videos.write_video(folder / "v_one.mp4", n_frames=40)
    videos.write_video(folder / "v_two.mp4", n_frames=32, size=(63, 81))  # odd size
    (folder / "sub").mkdir()
    videos.write_video(folder / "sub" / "v_rot.mp4", n_frames=24, rotation=90)  # found recursively
    videos.write_video(folder / "v_short.mp4", n_frames=6)  # shorter than one clip
    videos.write_video(folder / "v_vfr.mp4", n_frames=30, vfr=True)
    return folder


@pytest.fixture(scope="module")
def mixed_videos(tmp_path_factory, good_videos) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    for p in good_videos.rglob("*.mp4"):
        (folder / p.name).write_bytes(p.read_bytes())
    for vid, (maker, _) in BROKEN.items():
        maker(folder / f"{vid}.mp4")
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mixed_videos) -> tuple[Path, dict, dict]:
    """One uninterrupted single-process run over the mixed folder."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = extract_corpus([str(mixed_videos)], str(store), CFG, progress=False)
    return store, summary, snapshot(store)


def test_mixed_folder_extracts_good_and_records_bad(reference, caplog):
    store, summary, snap = reference
    assert summary["done"] == 5 and summary["skipped"] == 0 and summary["failed"] == len(BROKEN)
    assert {k: v["reason"] for k, v in summary["failures"].items()} == {k: r for k, (_, r) in BROKEN.items()}
    assert snap["complete"] == ["v_one", "v_rot", "v_short", "v_two", "v_vfr"]
    assert snap["failed"] == {k: r for k, (_, r) in BROKEN.items()}
    dim = 256  # fc7 at width 1/16
    assert snap["rows"]["v_one"].shape == (4, dim)  # (40 - 16) // 8 + 1
    assert snap["rows"]["v_short"].shape == (1, dim) and snap["meta"]["v_short"]["padded"] is True
    assert snap["meta"]["v_rot"]["rotation"] == 90
    assert snap["meta"]["v_vfr"]["n_frames"] == 30
    meta = snap["meta"]["v_one"]
    assert (meta["fps"], meta["clip_len"], meta["stride"], meta["n_frames"]) == (25.0, 16, 8, 40)
    with open_store(store) as st:
        assert st.meta["weights"] == "untrained"
        assert st.meta["layer"] == "fc7" and st.meta["dim"] == dim
        assert st.meta["normalisation"]["channel_order"] == "bgr"
        assert st.meta["pad_short"]["rule"] == "repeat_last"
        times = st.row_times("v_one")
        assert np.allclose(times, (np.arange(4) * 8 + 8) / 25.0)


def test_rerun_skips_retry_failed_retries_and_overwrite_starts_over(good_videos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "v_one.mp4").write_bytes((good_videos / "v_one.mp4").read_bytes())
    videos.write_text_as_video(folder / "v_fixed.mp4")  # unreadable now, repaired below
    videos.write_zero_byte(folder / "v_empty.mp4")  # stays broken
    store = tmp_path / "s.zarr"
    first = extract_corpus([str(folder)], str(store), CFG, progress=False)
    assert (first["done"], first["failed"]) == (1, 2)
    videos.write_video(folder / "v_fixed.mp4", n_frames=24)  # the file is repaired
    again = extract_corpus([str(folder)], str(store), CFG, progress=False)  # failures are remembered, not retried
    assert (again["done"], again["skipped"], again["failed"]) == (0, 1, 2)
    assert snapshot(store)["failed"] == {"v_fixed": "unreadable", "v_empty": "empty_file"}
    retried = extract_corpus([str(folder)], str(store), CFG, retry_failed=True, progress=False)
    assert (retried["done"], retried["skipped"], retried["failed"]) == (1, 1, 1)
    snap = snapshot(store)
    assert snap["complete"] == ["v_fixed", "v_one"] and snap["failed"] == {"v_empty": "empty_file"}
    assert snap["rows"]["v_fixed"].shape == (2, 256)  # (24 - 16) // 8 + 1 rows of the repaired file
    fresh = extract_corpus([str(folder / "v_one.mp4")], str(store), CFG, overwrite=True, progress=False)
    assert fresh["done"] == 1
    assert snapshot(store)["complete"] == ["v_one"] and snapshot(store)["failed"] == {}


def test_same_features_alone_and_batched(reference, mixed_videos, tmp_path):
    _, _, snap = reference
    cfg = {"extract": {**CFG["extract"], "batch_size": 1, "decode_workers": 1}, "store": CFG["store"]}
    alone = tmp_path / "alone.zarr"
    extract_corpus([str(mixed_videos / "v_two.mp4")], str(alone), cfg, progress=False)
    np.testing.assert_allclose(snapshot(alone)["rows"]["v_two"], snap["rows"]["v_two"], rtol=1e-3, atol=1e-4)
    rows, meta = extract_one(mixed_videos / "v_two.mp4", CFG)
    np.testing.assert_allclose(rows, snap["rows"]["v_two"], rtol=1e-3, atol=1e-4)
    assert meta["n_rows"] == len(rows)
    with pytest.raises(UserError, match="v_audio"):
        extract_one(mixed_videos / "v_audio.mp4", CFG)


def test_untrained_warning_on_every_run(mixed_videos, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        extract_corpus([str(mixed_videos / "v_one.mp4")], str(tmp_path / "s.zarr"), CFG, progress=False)
        extract_corpus([str(mixed_videos / "v_one.mp4")], str(tmp_path / "s.zarr"), CFG, progress=False)
    assert sum("UNTRAINED" in r.message for r in caplog.records) == 2


def test_store_with_other_settings_is_refused(mixed_videos, tmp_path):
    path = str(tmp_path / "s.zarr")
    extract_corpus([str(mixed_videos / "v_one.mp4")], path, CFG, progress=False)
    other = {"extract": {**CFG["extract"], "layer": "fc6"}, "store": CFG["store"]}
    with pytest.raises(UserError, match="layer"):
        extract_corpus([str(mixed_videos / "v_two.mp4")], path, other, progress=False)


def test_hdf5_with_dask_is_refused(mixed_videos, tmp_path):
    with pytest.raises(UserError, match="HDF5"):
        extract_corpus([str(mixed_videos)], str(tmp_path / "s.h5"), CFG, workers=2, progress=False)


PCA_CFG = {"extract": {**CFG["extract"], "pca_dim": 3}, "store": CFG["store"]}


@pytest.fixture(scope="module")
def pca_store(tmp_path_factory, good_videos) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("pca") / "pca.zarr"
    summary = extract_corpus([str(good_videos)], str(path), PCA_CFG, progress=False)
    return path, summary, snapshot(path)


def test_pca_two_passes_and_from_file(pca_store, good_videos, tmp_path):
    from extract_features.pca import stored_projection

    path, summary, snap = pca_store
    assert summary["done"] == 5 and summary["pca"]["dim"] == 3 and summary["pca"]["n_samples"] == 12
    assert all(r.shape[1] == 3 for r in snap["rows"].values())
    assert {m["pca_sha256"] for m in snap["meta"].values()} == {summary["pca"]["sha256"]}
    assert not Path(str(path) + ".pca.npz").exists()  # the projection lives inside the store
    with open_store(path) as st:
        assert st.meta["dim"] == 3 and st.meta["pca"]["dim"] == 3 and st.meta["pca"]["source_dim"] == 256
        stored_projection(st).save(tmp_path / "pca.npz")
    # the same PCA given as a file gives the same rows
    again = tmp_path / "again.zarr"
    extract_corpus([str(good_videos / "v_one.mp4")], str(again), CFG, pca_file=str(tmp_path / "pca.npz"),
                   progress=False)
    np.testing.assert_allclose(snapshot(again)["rows"]["v_one"], snap["rows"]["v_one"], rtol=1e-3, atol=1e-3)
    # a rerun changes nothing (the PCA is not refitted)
    assert extract_corpus([str(good_videos)], str(path), PCA_CFG, progress=False)["skipped"] == 5
    assert_same_store(snapshot(path), snap, atol=0)


def test_a_copied_pca_store_projects_new_videos_with_its_own_projection(good_videos, mixed_videos, tmp_path):
    import shutil

    first = [str(good_videos / f"{v}.mp4") for v in ("v_one", "v_two", "v_short", "v_vfr")]
    path, copy = tmp_path / "a.zarr", tmp_path / "copied.zarr"
    extract_corpus(first, str(path), PCA_CFG, progress=False)
    shutil.copytree(path, copy)  # without the working store beside it
    new = [str(good_videos / "sub" / "v_rot.mp4")]
    extract_corpus(new, str(path), PCA_CFG, progress=False)
    extract_corpus(new, str(copy), PCA_CFG, progress=False)
    a, b = snapshot(path), snapshot(copy)
    np.testing.assert_allclose(b["rows"]["v_rot"], a["rows"]["v_rot"], rtol=1e-4, atol=1e-5)


def test_a_pca_from_fewer_rows_than_dimensions_is_refused(good_videos, tmp_path):
    cfg = {"extract": {**CFG["extract"], "pca_dim": 8}, "store": CFG["store"]}
    with pytest.raises(UserError, match="more feature rows than dimensions"):
        extract_corpus([str(good_videos / "v_one.mp4")], str(tmp_path / "s.zarr"), cfg, progress=False)
    # more videos later: the fit resumes from the working store and succeeds
    more = {"extract": {**CFG["extract"], "pca_dim": 4}, "store": CFG["store"]}
    summary = extract_corpus([str(good_videos)], str(tmp_path / "t.zarr"), more, progress=False)
    assert summary["done"] == 5 and summary["pca"]["n_samples"] == 12


def test_another_projection_is_refused_and_overwrite_starts_over(pca_store, good_videos, tmp_path):
    import shutil

    from extract_features.pca import IncrementalPCA

    path, _, snap = pca_store
    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)
    other = IncrementalPCA(256)
    other.partial_fit(np.random.default_rng(0).standard_normal((20, 256)))
    other.finish(3).save(tmp_path / "other.npz")
    one = [str(good_videos / "v_one.mp4")]
    with pytest.raises(UserError, match="another PCA"):
        extract_corpus(one, str(copy), CFG, pca_file=str(tmp_path / "other.npz"), progress=False)
    wider = {"extract": {**CFG["extract"], "pca_dim": 4}, "store": CFG["store"]}
    with pytest.raises(UserError, match="dim"):
        extract_corpus(one, str(copy), wider, progress=False)
    fresh = extract_corpus(one, str(copy), CFG, pca_file=str(tmp_path / "other.npz"), overwrite=True,
                           progress=False)
    assert fresh["done"] == 1 and snapshot(copy)["complete"] == ["v_one"]


def test_two_runs_fitting_at_once_end_with_one_projection(good_videos, tmp_path, monkeypatch):
    from extract_features.pca import STORE_AUX, IncrementalPCA
    from features_store import open_store as real_open

    path = tmp_path / "s.zarr"
    rival = IncrementalPCA(256)
    rival.partial_fit(np.random.default_rng(1).standard_normal((30, 256)))
    rival.finish(3)
    finish = IncrementalPCA.finish

    def finish_after_a_rival(self, k):  # another run stores its projection while this one fits
        with real_open(str(path), "a") as other:
            other.write_aux(STORE_AUX, rival.arrays(), exclusive=True)
        return finish(self, k)

    monkeypatch.setattr(IncrementalPCA, "finish", finish_after_a_rival)
    summary = extract_corpus([str(good_videos)], str(path), PCA_CFG, progress=False)
    assert summary["pca"]["sha256"] == rival.checksum()
    snap = snapshot(path)
    assert {m["pca_sha256"] for m in snap["meta"].values()} == {rival.checksum()}


def test_an_interrupted_projection_pass_resumes(pca_store, good_videos, tmp_path, monkeypatch):
    import extract_features.corpus as corpus

    _, _, snap = pca_store
    path = tmp_path / "s.zarr"
    project = corpus._project_raw

    def killed(out, videos, pca, opts):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "_project_raw", killed)
    with pytest.raises(KeyboardInterrupt):
        extract_corpus([str(good_videos)], str(path), PCA_CFG, progress=False)
    monkeypatch.setattr(corpus, "_project_raw", project)
    monkeypatch.setattr(corpus, "run_pipeline", None)  # nothing is decoded again: the raw rows are reused
    summary = extract_corpus([str(good_videos)], str(path), PCA_CFG, progress=False)
    assert summary["done"] == 5 and summary["projected"] == 5
    assert_same_store(snapshot(path), snap)


def test_pca_into_a_url_store(good_videos):
    import uuid

    url = f"memory://pca-{uuid.uuid4().hex}.zarr"
    summary = extract_corpus([str(good_videos)], url, PCA_CFG, progress=False)
    assert summary["done"] == 5
    with open_store(url) as st:
        assert st.dim == 3 and len(st.complete_ids()) == 5


def test_the_output_path_is_checked_before_any_work(mixed_videos, tmp_path, monkeypatch):
    import extract_features.corpus as corpus

    monkeypatch.setattr(corpus, "run_pipeline", None)  # any extraction would fail with a TypeError
    text_h5, plain = tmp_path / "notes.h5", tmp_path / "plain.zarr"
    text_h5.write_text("not hdf5")
    plain.write_text("a file")
    for path in (text_h5, plain):
        for cfg in (CFG, PCA_CFG):
            with pytest.raises(UserError, match=path.name):
                extract_corpus([str(mixed_videos)], str(path), cfg, progress=False)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))  # HDF5's reader lock
    assert left == ["notes.h5", "plain.zarr"]  # no working store, no PCA file left behind


def test_dask_cluster_gives_the_same_store(reference, mixed_videos, tmp_path):
    from dask.distributed import LocalCluster

    store, _, snap = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        path = tmp_path / "dask.zarr"
        summary = extract_corpus([str(mixed_videos)], str(path), CFG, scheduler=cluster.scheduler_address,
                                 progress=False)
    assert summary["done"] == 5 and summary["failed"] == len(BROKEN)
    assert_same_store(snapshot(path), snap)


DRIVER = textwrap.dedent("""
    import os, signal, sys
    import extract_features.corpus as corpus
    from extract_features import extract_corpus
    from extract_features.runner import Extractor

    kill_batch, kill_write = int(sys.argv[3]), int(sys.argv[4])
    seen = {"batch": 0, "write": 0}
    forward = Extractor.forward

    def killing_forward(self, clips):
        seen["batch"] += 1
        if seen["batch"] == kill_batch:
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(self, clips)

    Extractor.forward = killing_forward
    open_output_store = corpus.open_output_store

    def killing_open(*args, **kwargs):
        store = open_output_store(*args, **kwargs)
        write = store.write_video

        def write_video(*a, **k):
            write(*a, **k)
            seen["write"] += 1
            if seen["write"] == kill_write:
                os.kill(os.getpid(), signal.SIGKILL)

        store.write_video = write_video
        return store

    corpus.open_output_store = killing_open
    from etspipe.config import load_config

    cfg = load_config(None, ["extract.width_mult=%r", "extract.batch_size=4", "extract.decode_workers=2",
                             "store.dtype=float32"])  # store.durable stays on: a fault test
    extract_corpus([sys.argv[1]], sys.argv[2], cfg, progress=False)
""") % W


def test_sigkill_at_several_points_then_rerun_gives_the_same_store(reference, mixed_videos, tmp_path):
    _, _, snap = reference
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    path = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.environ.get("PYTHONPATH"), str(ROOT)] if p)}
    # kill in the 2nd network batch, then right after the first commit, then after a failure and a commit
    for kill_batch, kill_write in [(2, 0), (0, 1), (0, 2), (0, 0)]:
        proc = subprocess.run([sys.executable, str(driver), str(mixed_videos), str(path), str(kill_batch),
                               str(kill_write)], env=env, capture_output=True, text=True, timeout=120)
        expect = -9 if (kill_batch or kill_write) else 0
        assert proc.returncode == expect, proc.stderr[-2000:]
    assert_same_store(snapshot(path), snap)


def test_options_object_is_accepted_by_extract_one(mixed_videos):
    rows, meta = extract_one(mixed_videos / "v_short.mp4", ExtractOptions.from_config(CFG))
    assert rows.shape == (1, 256) and meta["padded"]


def test_odd_inputs_give_one_line_each_and_are_recorded(mixed_videos, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "odd"
    (folder / "locked").mkdir(parents=True)
    (folder / "v_dir.mp4").mkdir()  # a folder named like a video
    (folder / "v_dir.mp4" / "v_inner.mp4").write_bytes(b"")  # not searched: its parent is "a video"
    (folder / "v_loop.mp4").symlink_to("v_loop.mp4")
    (folder / "v_dangling.mp4").symlink_to("gone.mp4")
    (folder / "up").symlink_to("..")  # a folder link back to an ancestor: searched once
    (folder / "v_one.mp4").write_bytes((mixed_videos / "v_one.mp4").read_bytes())
    (folder / "locked" / "v_hidden.mp4").write_bytes(b"")
    locked = str(folder / "locked")
    os.chmod(locked, 0)
    scandir = os.scandir

    def no_access(path="."):  # root reads a mode-0 folder anyway: deny it as the kernel would a user
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_access)
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(str(folder / n) for n in ("v_dir.mp4", "v_loop.mp4", "v_one.mp4")) + "\n")
    expect = {"v_dir": "unreadable", "v_loop": "unreadable", "v_dangling": "missing"}
    try:
        with caplog.at_level(logging.WARNING):
            summary = extract_corpus([str(folder)], str(tmp_path / "a.zarr"), CFG, progress=False)
            from_list = extract_corpus([str(listed)], str(tmp_path / "b.zarr"), CFG, progress=False)
    finally:
        os.chmod(locked, 0o755)
    assert summary["done"] == 1 and {k: v["reason"] for k, v in summary["failures"].items()} == expect
    assert from_list["done"] == 1 and set(from_list["failures"]) == {"v_dir", "v_loop"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("locked" in w for w in warnings) == 1
    for vid in expect:
        assert sum(vid in w for w in warnings) == (2 if vid != "v_dangling" else 1), warnings


def test_a_write_error_or_decoder_crash_fails_one_video(mixed_videos, tmp_path, monkeypatch):
    import extract_features.corpus as corpus
    import extract_features.runner as runner

    real_open_video, real_open_store = runner.open_video, corpus.open_output_store

    def crashing_open_video(path, *args, **kwargs):
        if Path(path).stem == "v_two":
            raise RuntimeError("decoder bug")
        return real_open_video(path, *args, **kwargs)

    def faulty_store(*args, **kwargs):
        store = real_open_store(*args, **kwargs)
        write = store.write_video

        def write_video(vid, rows, meta):
            if vid == "v_one":
                raise OSError(28, "No space left on device")
            return write(vid, rows * 1e9 if vid == "v_rot" else rows, meta)  # float16 overflow

        store.write_video = write_video
        return store

    monkeypatch.setattr(runner, "open_video", crashing_open_video)
    monkeypatch.setattr(corpus, "open_output_store", faulty_store)
    cfg = {**CFG, "store": {**CFG["store"], "dtype": "float16"}}
    inputs = [str(mixed_videos / f"{v}.mp4") for v in ("v_one", "v_two", "v_rot", "v_short")]
    summary = extract_corpus(inputs, str(tmp_path / "s.zarr"), cfg, progress=False)
    assert summary["done"] == 1 and sorted(summary["failures"]) == ["v_one", "v_rot", "v_two"]
    details = {k: v["detail"] for k, v in summary["failures"].items()}
    assert "No space left" in details["v_one"] and "decoder bug" in details["v_two"]
    assert "infinity" in details["v_rot"]
    assert snapshot(tmp_path / "s.zarr")["complete"] == ["v_short"]


def test_a_store_that_cannot_record_anything_stops_with_one_line(mixed_videos, tmp_path, monkeypatch):
    from features_store.zarr_backend import ZarrStore

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ZarrStore, "write_video", no_space)
    monkeypatch.setattr(ZarrStore, "mark_failed", no_space)
    with pytest.raises(UserError, match="No space left"):
        extract_corpus([str(mixed_videos / "v_one.mp4")], str(tmp_path / "s.zarr"), CFG, progress=False)

