"""extract_like_store: raw files into an existing store, through the store's own PCA, matched by content."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import videos

from etspipe.config import load_config
from extract_features import extract_corpus
from extract_features.like_store import extract_like_store
from features_store import open_store

EXTRACT = {"width_mult": 0.0625, "batch_size": 4, "decode_workers": 1}
STORE = {**load_config()["store"], "dtype": "float32", "durable": False}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for i, n in enumerate((40, 32, 48, 24)):
        videos.write_video(folder / f"v_{i}.mp4", n_frames=n, fps=25,
                           frame_fn=lambda k, h, w, i=i: videos.synthetic_frame(k * (i + 1), h, w))
    return folder


def cfg_for() -> dict:
    cfg = load_config()
    cfg["extract"].update(EXTRACT)
    cfg["store"]["durable"] = False
    return cfg


def test_a_new_file_goes_through_the_stores_own_pca(clips, tmp_path):
    cfg = {"extract": {**load_config()["extract"], **EXTRACT, "pca_dim": 3}, "store": STORE}
    store, reference = tmp_path / "pca.zarr", tmp_path / "reference.zarr"
    extract_corpus([str(clips / f"v_{i}.mp4") for i in range(3)], str(store), cfg, progress=False)
    shutil.copytree(store, reference)
    got = extract_like_store([clips / "v_3.mp4"], store, cfg=cfg_for())
    outcome = got[clips / "v_3.mp4"]
    assert outcome.ok and outcome.extracted and outcome.video_id == "v_3", outcome.error
    extract_corpus([str(clips / "v_3.mp4")], str(reference), cfg, progress=False)  # the corpus path
    with open_store(str(store)) as a, open_store(str(reference)) as b:
        assert a.rows("v_3").shape[1] == 3
        np.testing.assert_allclose(a.rows("v_3"), b.rows("v_3"), rtol=1e-3, atol=1e-4)
        assert a.video_meta("v_3")["pca_sha256"] == b.video_meta("v_0")["pca_sha256"]


def test_a_file_is_matched_by_content_not_by_name(clips, tmp_path, caplog):
    store = tmp_path / "s.zarr"
    cfg = {"extract": {**load_config()["extract"], **EXTRACT}, "store": STORE}
    extract_corpus([str(clips / "v_0.mp4")], str(store), cfg, progress=False)
    impostor = tmp_path / "other" / "v_0.mp4"
    impostor.parent.mkdir()
    shutil.copy(clips / "v_1.mp4", impostor)  # another video under the stored video's name
    with open_store(str(store)) as st:
        before = st.rows("v_0")
    same = extract_like_store([clips / "v_0.mp4"], store, cfg=cfg_for())[clips / "v_0.mp4"]
    assert same.video_id == "v_0" and not same.extracted
    with caplog.at_level(logging.WARNING):
        new = extract_like_store([impostor], store, cfg=cfg_for())[impostor]
    assert new.ok and new.extracted and new.video_id.startswith("v_0-")
    assert sum("not the file" in r.getMessage() for r in caplog.records) == 1
    again = extract_like_store([impostor], store, cfg=cfg_for())[impostor]
    assert again.video_id == new.video_id and not again.extracted
    with open_store(str(store)) as st:
        np.testing.assert_array_equal(st.rows("v_0"), before)  # the stored video is left as it was
        assert st.rows(new.video_id).shape[0] == 3  # v_1: 32 frames
