"""The Sports-1M mean cube as the input mean: its file, the transform, and stores made with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import videos
from official_files import error_lines, run_cli

from etspipe.config import load_config
from etspipe.errors import UserError
from extract_features.c3d import C3DInput
from extract_features.like_store import extract_like_store
from extract_features.mean_cube import crop_cube, load_mean_cube
from features_store import open_store

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = np.array([90.25, 97.66, 101.41], dtype=np.float32)  # BGR
SMALL = ["-o", "extract.width_mult=0.0625", "-o", "extract.batch_size=4", "-o", "extract.decode_workers=1",
         "-o", "store.dtype=float32", "-o", "store.durable=false"]


def cube(seed: int = 0, spread: float = 10.0) -> np.ndarray:
    """A (16, 128, 171, 3) cube: the per-channel means plus spatial variation."""
    rng = np.random.default_rng(seed)
    return (MEAN + rng.uniform(-spread, spread, (16, 128, 171, 3))).astype(np.float32)


def test_the_cube_file_in_both_layouts_and_its_mistakes(tmp_path):
    c = cube()
    np.save(tmp_path / "thwc.npy", c)
    np.save(tmp_path / "cthw.npy", c.transpose(3, 0, 1, 2))  # Caffe's channels-first blob
    np.save(tmp_path / "ncthw.npy", c.transpose(3, 0, 1, 2)[None])
    for name in ("thwc", "cthw", "ncthw"):
        np.testing.assert_array_equal(load_mean_cube(tmp_path / f"{name}.npy", 16, (128, 171)), c)
    np.save(tmp_path / "small.npy", c[:, :112, :112])
    (tmp_path / "mean.binaryproto").write_bytes(b"\x08\x01")
    for name, words in (("small.npy", "expected (16, 128, 171, 3)"), ("mean.binaryproto", "convert it once to .npy"),
                        ("absent.npy", "mean cube file not found")):
        with pytest.raises(UserError) as err:
            load_mean_cube(tmp_path / name, 16, (128, 171))
        assert words in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_the_cube_is_cropped_like_the_frames_and_subtracted_per_pixel():
    c = cube()
    centre = crop_cube(c, 112)
    np.testing.assert_array_equal(centre, c[:, 8:120, 29:141])  # (128-112)//2, (171-112)//2: clips.center_crop's
    clips = np.random.default_rng(1).integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8)
    x = C3DInput("bgr", mean_cube=centre)(torch.from_numpy(clips))
    want = clips[..., ::-1].astype(np.float32) - centre  # RGB frames to BGR, then the cube
    np.testing.assert_allclose(x.numpy(), want.transpose(0, 4, 1, 2, 3), rtol=0, atol=1e-4)
    flat = np.broadcast_to(MEAN, centre.shape).copy()  # a cube with no variation is the per-channel mean
    np.testing.assert_allclose(C3DInput("bgr", mean_cube=flat)(torch.from_numpy(clips)).numpy(),
                               C3DInput("bgr", MEAN)(torch.from_numpy(clips)).numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return videos.write_video(tmp_path_factory.mktemp("v") / "v_cube.mp4", n_frames=24, fps=8)


def test_extract_with_a_mean_cube_records_it_and_new_videos_need_the_same_cube(clip, tmp_path):
    np.save(tmp_path / "flat.npy", np.broadcast_to(MEAN, (16, 128, 171, 3)).copy())
    np.save(tmp_path / "cube.npy", cube())
    np.save(tmp_path / "other.npy", cube(seed=3))
    runs = {}
    for name, extra in (("plain", []), ("flat", ["--mean-cube", tmp_path / "flat.npy"]),
                        ("cube", ["--mean-cube", tmp_path / "cube.npy"])):
        result = run_cli("extract", clip, "-o", tmp_path / f"{name}.zarr", *extra, *SMALL)
        assert result.exit_code == 0, result.output
        with open_store(str(tmp_path / f"{name}.zarr")) as st:
            runs[name] = (st.rows("v_cube"), st.meta["normalisation"].get("mean_cube"))
    assert runs["plain"][1] is None and runs["cube"][1]["shape"] == [16, 128, 171, 3]
    np.testing.assert_allclose(runs["flat"][0], runs["plain"][0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(runs["cube"][0], runs["plain"][0], rtol=1e-4, atol=1e-4)

    cfg = load_config(None, [s for s in SMALL if s != "-o"])
    other = tmp_path / "v_new.mp4"
    videos.write_video(other, n_frames=20, fps=8)
    store = tmp_path / "cube.zarr"
    for given, words in ((None, "pass --mean-cube FILE"), (tmp_path / "other.npy", "is not the mean cube")):
        outcome = extract_like_store([other], store, cfg=cfg, mean_cube=given)[other]
        assert not outcome.ok and words in outcome.error and "\n" not in outcome.error
    outcome = extract_like_store([other], store, cfg=cfg, mean_cube=str(tmp_path / "cube.npy"))[other]
    assert outcome.ok and outcome.extracted, outcome.error
    bad = run_cli("extract", clip, "-o", tmp_path / "x.zarr", "--mean-cube", tmp_path / "absent.npy", *SMALL)
    assert bad.exit_code == 1 and len(error_lines(bad)) == 1 and "absent.npy" in bad.output
