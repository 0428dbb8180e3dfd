"""ActivityNet's PCA file layout (data/U, data/S, data/x_mean): reading, identity, and `extract --pca-file`."""

from __future__ import annotations

import numpy as np
import pytest
import videos
from official_files import error_lines, read_anet_pca, run_cli, write_anet_pca

from etspipe.errors import UserError
from extract_features.pca import IncrementalPCA, load_projection
from features_store import open_store
from features_store.anet_pca import ANET_KIND, read_activitynet_pca
from features_store.projection import projection_checksum

pytestmark = pytest.mark.usefixtures("one_thread")

W, D = 0.125, 512  # an eighth of C3D: fc7 of 512, enough for ActivityNet's 500 components
SMALL = ["-o", f"extract.width_mult={W}", "-o", "extract.batch_size=4", "-o", "extract.decode_workers=1",
         "-o", "store.dtype=float32", "-o", "store.durable=false"]


def test_rows_are_x_minus_mean_times_the_first_columns_of_u(tmp_path):
    path = write_anet_pca(tmp_path / "PCA_activitynet_v1-3.hdf5", dim=64, n_cols=40, mean_shape=(1, 64))
    u, mean = read_anet_pca(path)
    pca = load_projection(path, 30)
    x = np.random.default_rng(1).standard_normal((5, 64))
    np.testing.assert_allclose(pca.transform(x), (x - mean) @ u[:, :30], rtol=1e-5, atol=1e-5)
    assert pca.kind == ANET_KIND and pca.n_components == 30 and pca.dim == 64


def test_a_square_u_is_read_by_columns_unless_told_rows_and_a_transposed_u_says_so_itself(tmp_path):
    square = write_anet_pca(tmp_path / "square.hdf5", dim=32)
    u, mean = read_anet_pca(square)
    x = np.random.default_rng(2).standard_normal((3, 32))
    np.testing.assert_allclose(load_projection(square, 8).transform(x), (x - mean) @ u[:, :8], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load_projection(square, 8, "rows").transform(x), (x - mean) @ u[:8, :].T,
                               rtol=1e-5, atol=1e-5)
    transposed = write_anet_pca(tmp_path / "t.hdf5", dim=32, n_cols=10, rows_layout=True)  # U is (10, 32)
    ut, mean_t = read_anet_pca(transposed)
    np.testing.assert_allclose(load_projection(transposed, 8).transform(x), (x - mean_t) @ ut[:8, :].T,
                               rtol=1e-5, atol=1e-5)


def test_the_projection_has_its_own_identity(tmp_path):
    path = write_anet_pca(tmp_path / "p.hdf5", dim=16, n_cols=8)
    arrays = read_activitynet_pca(path, 4)
    pca = IncrementalPCA.from_arrays(arrays, "p")
    ours = IncrementalPCA.from_arrays({**arrays, "kind": np.array("etspipe")}, "p")
    assert pca.identity()["kind"] == ANET_KIND and pca.checksum() != ours.checksum()
    assert ours.checksum() == projection_checksum(arrays["mean"], arrays["components"], 0)  # old rule kept
    again = IncrementalPCA.from_arrays(pca.arrays(), "again")  # what a store keeps reads back the same
    assert again.kind == ANET_KIND and again.checksum() == pca.checksum()


@pytest.mark.parametrize("case,message", [
    ("no_u", "not ActivityNet's PCA layout (no dataset data/U"),
    ("mean_mismatch", "data/U has shape (64, 40) but data/x_mean has 50 values"),
    ("too_few", "data/U holds 40 components, 50 are needed"),
    ("text", "not a PCA file"),
    ("npz", "not a PCA written by etspipe"),
])
def test_a_wrong_shaped_or_foreign_file_is_one_line(tmp_path, case, message):
    path = tmp_path / "PCA_activitynet_v1-3.hdf5"
    if case == "no_u":
        write_anet_pca(path, dim=64, n_cols=40, drop="U")
    elif case == "mean_mismatch":
        write_anet_pca(path, dim=64, n_cols=40, mean_shape=(50,))
    elif case == "too_few":
        write_anet_pca(path, dim=64, n_cols=40)
    elif case == "text":
        path.write_text("not hdf5 at all\n")
    else:
        path = tmp_path / "pca.npz"
        np.savez(path, U=np.zeros((3, 3)))
    with pytest.raises(UserError) as err:
        load_projection(path, 50)
    assert message in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return videos.write_video(tmp_path_factory.mktemp("v") / "v_clip.mp4", n_frames=32, fps=8)


def test_extract_with_activitynets_pca_file_equals_numpy_on_the_fc7_rows(clip, tmp_path):
    pca_file = write_anet_pca(tmp_path / "PCA_activitynet_v1-3.hdf5", dim=D, n_cols=D)
    raw, reduced = tmp_path / "fc7.zarr", tmp_path / "anet.zarr"
    result = run_cli("extract", clip, "-o", raw, *SMALL)
    assert result.exit_code == 0, result.output
    result = run_cli("extract", clip, "-o", reduced, "--pca-file", pca_file, *SMALL)
    assert result.exit_code == 0, result.output
    u, mean = read_anet_pca(pca_file)
    with open_store(str(raw)) as a, open_store(str(reduced)) as b:
        fc7 = a.rows("v_clip").astype(np.float64)
        assert fc7.shape == (3, D) and b.dim == 500 and b.meta["pca"]["kind"] == ANET_KIND
        np.testing.assert_allclose(b.rows("v_clip"), (fc7 - mean) @ u[:, :500], rtol=1e-4, atol=1e-4)
        assert b.video_meta("v_clip")["pca_sha256"] == b.info()["pca_projection"]["sha256"]
    verify = run_cli("store", "verify", reduced)
    assert verify.exit_code == 0 and "1 good, 0 bad" in verify.output, verify.output
    assert "activitynet's published projection" in run_cli("store", "info", reduced).output
    other = write_anet_pca(tmp_path / "other.hdf5", dim=D, n_cols=D, seed=5)  # another projection: refused
    result = run_cli("extract", clip, "-o", reduced, "--pca-file", other, *SMALL)
    assert result.exit_code == 1 and len(error_lines(result)) == 1 and "another PCA" in result.output


def test_extract_with_a_pca_file_of_another_width_is_one_line(clip, tmp_path):
    pca_file = write_anet_pca(tmp_path / "PCA_activitynet_v1-3.hdf5", dim=4096, n_cols=600)
    result = run_cli("extract", clip, "-o", tmp_path / "s.zarr", "--pca-file", pca_file, *SMALL)
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [f"error: {pca_file} projects 4096-d features, layer fc7 gives {D}"]
    assert not (tmp_path / "s.zarr").exists()
