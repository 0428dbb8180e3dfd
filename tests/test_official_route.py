"""Issue 21's route: ActivityNet's official C3D features imported, trained on, then a raw video captioned.

Files in the official layouts are made here: the feature file (random 500-d rows),
``PCA_activitynet_v1-3.hdf5`` (random U, S, x_mean) and ``c3d.pickle`` (an untrained
full-size C3D in the PyTorch port's parameter names). The run is the one a user
types: import-features, store set-projection, train, train-proposals, then
predict VIDEO with --c3d-weights and --pca-file, events and all.
"""

from __future__ import annotations

import json

import pytest
import videos
from official_files import error_lines, run_cli, write_anet_pca, write_c3d_weights, write_official_features

from features_store import open_store
from features_store.recipes import OFFICIAL_RECIPE

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["-o", "model.hidden_dim=8", "-o", "model.proj_dim=8", "-o", "model.embed_dim=8", "-o", "model.attn_dim=8",
        "-o", "data.num_workers=0", "-o", "train.val_meteor=false", "-o", "decode.max_len=6",
        "-o", "store.durable=false"]
PROPOSALS = ["-o", "proposals.anchors=4", "-o", "proposals.proj_dim=8", "-o", "proposals.hidden_dim=8",
             "-o", "data.num_workers=0", "-o", "store.durable=false"]
PREDICT = ["--device", "cpu", "-o", "proposals.score_threshold=0", "-o", "decode.max_len=6",
           "-o", "extract.batch_size=4", "-o", "extract.decode_workers=1", "-o", "store.durable=false"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    h5, train = write_official_features(d)
    files = {"h5": h5, "train": train, "pca": write_anet_pca(d / "PCA_activitynet_v1-3.hdf5", n_cols=600),
             "weights": write_c3d_weights(d / "c3d.pickle"), "store": d / "anet_c3d.zarr", "run": d / "checkpoints",
             "video": videos.write_video(d / "my_video.mp4", n_frames=24, fps=8), "dir": d}
    steps = [["import-features", "activitynet-c3d", h5, files["store"], "--annotations", train,
              "-o", "store.durable=false"],
             ["store", "set-projection", files["store"], files["pca"]],
             ["train", "--store", files["store"], "--train", train, "--save-dir", files["run"],
              "-o", "train.max_steps=2", "-o", "train.epochs=1", "-o", "train.device=cpu", *TINY],
             ["train-proposals", "--store", files["store"], "--train", train, "--save-dir", files["run"],
              "--epochs", "1", "--device", "cpu", *PROPOSALS]]
    for step in steps:
        result = run_cli(*step)
        assert result.exit_code == 0, (step[:2], result.output)
    return files


def predict(official, out_name: str, *extra):
    out = official["dir"] / out_name
    result = run_cli("predict", official["video"], "--weights", official["run"] / "best.pt", "--out", out,
                     *extra, *PREDICT)
    return result, out


def test_predict_captions_a_raw_video_with_a_model_trained_on_the_official_features(official):
    result, out = predict(official, "pred", "--c3d-weights", official["weights"], "--pca-file", official["pca"])
    assert result.exit_code == 0, result.output
    [results] = list(out.glob("*.json"))
    entries = json.loads(results.read_text())["results"]["my_video"]
    assert entries and all(e["sentence"] and "proposal_score" in e for e in entries)  # events, then captions
    cache = out / "features.zarr"  # the working store beside the results, with the trained-on recipe
    with open_store(str(cache)) as st:
        vmeta = st.video_meta("my_video")
        assert st.dim == 500 and st.rows("my_video").shape == (2, 500)  # 24 frames: clips at 0 and 8
        assert vmeta["recipe"] == OFFICIAL_RECIPE and vmeta["mean"] == "per-channel"
        assert vmeta["pca_sha256"] == st.info()["pca_projection"]["sha256"]
        assert st.meta["recipe"]["projection"]["sha256"] == vmeta["pca_sha256"]
        assert (vmeta["clip_len"], vmeta["stride"]) == (16, 8)
    assert run_cli("store", "verify", cache).exit_code == 0


def test_predict_into_the_imported_store_itself_keeps_it_verifiable(official):
    result, _ = predict(official, "pred_store", "--store", official["store"], "--c3d-weights", official["weights"])
    assert result.exit_code == 0, result.output  # the projection was kept by set-projection: no --pca-file
    verify = run_cli("store", "verify", official["store"])
    assert verify.exit_code == 0 and "9 complete videos checked: 9 good, 0 bad" in verify.output, verify.output


@pytest.mark.parametrize("case,words", [
    ("no_weights", "pass --c3d-weights c3d.pickle"),
    ("another_projection", "is not the projection"),
    ("too_few_components", "data/U holds 300 components, 500 are needed"),
    ("another_dimension", "maps 1024-d features to 500"),
    ("foreign", "not a PCA file"),
])
def test_predict_says_in_one_line_what_the_recipe_lacks(official, case, words):
    d = official["dir"]
    pca = d / f"{case}.hdf5"
    if case == "another_projection":
        write_anet_pca(pca, n_cols=600, seed=9)
    elif case == "too_few_components":
        write_anet_pca(pca, n_cols=300)
    elif case == "another_dimension":
        write_anet_pca(pca, dim=1024, n_cols=600)
    elif case == "foreign":
        pca.write_text("x_mean,U\n")
    else:
        pca = official["pca"]
    extra = ["--pca-file", pca] + ([] if case == "no_weights" else ["--c3d-weights", official["weights"]])
    result, out = predict(official, f"refused_{case}", *extra)
    assert result.exit_code == 3, result.output
    assert len(error_lines(result)) == 1 and words in error_lines(result)[0], result.output
    assert str(official["video"]) in error_lines(result)[0]
    assert not (out / "features.zarr").exists()  # the working store made for the refused video is not left behind


def test_the_run_brings_the_projection_it_was_trained_through(official):
    """Trained after set-projection, the checkpoint carries ActivityNet's projection: a fresh working store gets
    it, so a raw video needs no --pca-file (before: refused with 'pass --pca-file')."""
    result, out = predict(official, "carried", "--c3d-weights", official["weights"])
    assert result.exit_code == 0, result.output
    with open_store(str(out / "features.zarr")) as st, open_store(str(official["store"])) as trained:
        assert st.info()["pca_projection"]["sha256"] == trained.info()["pca_projection"]["sha256"]
        assert st.video_meta("my_video")["pca_sha256"] == st.info()["pca_projection"]["sha256"]


def test_import_with_the_projection_and_set_projection_refusals(official, tmp_path):
    store = tmp_path / "with_pca.h5"
    result = run_cli("import-features", "activitynet-c3d", official["h5"], store, "--annotations", official["train"],
                     "--pca-file", official["pca"])
    assert result.exit_code == 0, result.output
    with open_store(str(store)) as st:
        assert st.meta["recipe"]["projection"]["sha256"] == st.info()["pca_projection"]["sha256"]
        assert st.info()["pca_projection"]["kind"] == "activitynet"
    assert run_cli("store", "verify", store).exit_code == 0
    assert run_cli("store", "set-projection", store, official["pca"]).exit_code == 0  # the same again: fine
    other = write_anet_pca(tmp_path / "other.hdf5", n_cols=600, seed=4)
    refused = run_cli("store", "set-projection", store, other)
    assert refused.exit_code == 1 and len(error_lines(refused)) == 1 and "not the projection" in refused.output
    small = write_anet_pca(tmp_path / "small.hdf5", n_cols=100)
    refused = run_cli("import-features", "activitynet-c3d", official["h5"], tmp_path / "s.zarr",
                      "--annotations", official["train"], "--pca-file", small)
    assert refused.exit_code == 1 and error_lines(refused) == [
        f"error: {small}: data/U holds 100 components, 500 are needed"]


def test_a_store_imported_before_recipes_were_recorded_gets_one(official, tmp_path):
    old = {"extractor": "c3d-activitynet-official", "layer": "fc7+pca", "dim": 500, "clip_len": 16, "stride": 8,
           "pca": {"dim": 500, "source": "official release"}, "weights": "official", "dtype": "float32"}
    store = tmp_path / "old.zarr"
    with open_store(str(store), "w", meta=old) as st:
        st.write_video("v_old", [[0.0] * 500] * 3, {"duration": 3.0})
    assert run_cli("store", "set-projection", store, official["pca"]).exit_code == 0
    with open_store(str(store)) as st:
        assert st.meta["recipe"]["name"] == OFFICIAL_RECIPE and st.meta["recipe"]["projection"]["sha256"]
    assert run_cli("store", "verify", store).exit_code == 0
    npy = tmp_path / "npy"
    npy.mkdir()
    import numpy as np

    np.save(npy / "v_a.npy", np.zeros((4, 500), np.float32))
    assert run_cli("import-features", "npy", npy, tmp_path / "n.zarr", "--fps", "2").exit_code == 0
    refused = run_cli("store", "set-projection", tmp_path / "n.zarr", official["pca"])
    assert refused.exit_code == 1 and len(error_lines(refused)) == 1 and "records no recipe" in refused.output


def test_proposals_trained_on_the_import_accept_rows_extract_made_by_the_same_recipe(official):
    """Compatibility is the recipe, not the extractor's name: `extract --weights c3d.pickle --pca-file ...` makes
    rows of the official recipe, which the proposal model trained on the imported store takes (before: refused
    for 'extractor, layer differ'); rows of another crop are still refused."""
    from caption_model.proposals.infer import check_store, load_proposal_checkpoint
    from etspipe.errors import UserError

    extracted = official["dir"] / "extracted.zarr"
    result = run_cli("extract", official["video"], "-o", extracted, "--weights", official["weights"], "--pca-file",
                     official["pca"], "-o", "store.durable=false")
    assert result.exit_code == 0, result.output
    ckpt = load_proposal_checkpoint(official["run"])
    with open_store(str(extracted)) as st:
        meta = dict(st.meta)
    assert meta["extractor"] != ckpt["store_meta"]["extractor"]  # made by another route
    check_store(ckpt, meta, str(extracted))
    with pytest.raises(UserError, match="differ"):
        check_store(ckpt, {**meta, "crop": 100}, str(extracted))
