"""`import-features activitynet-resnet152`: the streamed pickle reader and the import of the seed's features.

The pickles are written as Python 2.7 wrote them (tests/py2_pickle.py): cPickle's protocol 2 with and
without its memo for the official file, pickle.py's protocol 0 for Paddle's per-video files. Goldens
below came from CPython 2.7.18 itself (with a stand-in numpy module whose __reduce__ builds what
numpy's does), so the writers are checked against Python 2, not against this reader.
"""

from __future__ import annotations

import io
import pickle
import pickletools

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from py2_pickle import dumps_py27, dumps_py27_array_proto0, write_py27

from etspipe.errors import PartialFailure, UserError
from features_store import open_store
from features_store.pickle_stream import PickleReadError, PickleStream, read_pickled_array
from features_store.recipes import RESNET_EXTRACTOR, RESNET_RECIPE
from features_store.resnet_import import import_activitynet_resnet152
from pipeline import cli

DIM = 2048

# cPickle.dumps(d, 2) by CPython 2.7.18 of v_bb (1x3 f4 0.5), v_quote (1x2 f4, raw b"'\n\\\x00\x7f\x80\"x"),
# v_a (2x3 f4 arange), v_c (1x2 f8 [1.25, -2]), in 2.7's dict order
GOLDEN_CPICKLE = bytes.fromhex(
    "80027d7101285504765f62627102636e756d70792e636f72652e6d756c746961727261790a5f7265636f6e7374727563740a7103636e75"
    "6d70790a6e6461727261790a71044b008555016287527105284b014b014b0386636e756d70790a64747970650a7106550266344b004b01"
    "87527107284b0355013c4e4e4e4affffffff4affffffff4b00746289550c0000003f0000003f0000003f74625507765f71756f74657108"
    "680368044b008555016287527109284b014b014b02866807895508270a5c007f80227874625503765f61710a680368044b0085550162875"
    "2710b284b014b024b03866807895518000000000000803f0000004000004040000080400000a04074625503765f63710c680368044b008"
    "55501628752710d284b014b014b02866806550266384b004b018752710e284b0355013c4e4e4e4affffffff4affffffff4b00746289551"
    "0000000000000f43f00000000000000c07462752e")
# pickle.dump(v_quote, f) by CPython 2.7.18's pickle.py (protocol 0), as Paddle's generate_train_pickle.py wrote
GOLDEN_PROTO0 = (b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\ntp4\nRp5\n"
                 b"(I1\n(I1\nI2\ntp6\ncnumpy\ndtype\np7\n(S'f4'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\np11\nNNNI-1\n"
                 b"I-1\nI0\ntp12\nbI00\nS'\\'\\n\\\\\\x00\\x7f\\x80\"x'\np13\ntp14\nb.")


def golden_arrays() -> dict[str, np.ndarray]:
    return {"v_bb": np.full((1, 3), 0.5, np.float32),
            "v_quote": np.frombuffer(b"'\n\\\x00\x7f\x80\"x", np.float32).reshape(1, 2),
            "v_a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "v_c": np.array([[1.25, -2.0]], dtype=np.float64)}


def videos(n: int, seed: int = 0, first_len: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"v_vid{i:03d}": rng.random((first_len + i % 5, DIM), dtype=np.float32) for i in range(n)}


def read_all(data: bytes, skip=None) -> dict:
    return {item.key: item.rows for item in PickleStream(io.BytesIO(data), len(data), skip=skip).items()}


# ---------------------------------------------------------------- the Python 2 writers, against Python 2
def test_py27_writers_are_byte_for_byte_python_27():
    arrays = golden_arrays()
    assert dumps_py27(arrays, memo=True) == GOLDEN_CPICKLE
    assert dumps_py27_array_proto0(arrays["v_quote"]) == GOLDEN_PROTO0


def test_memo_layout_batches_and_long_memo_indices():
    arrays = {f"v_{i}": np.full((1, 2), i, np.float32) for i in range(2000)}
    data = dumps_py27(arrays, memo=True)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    names = [name for name, _ in ops]
    assert names.count("SETITEMS") == 3 and data.endswith(b"u(u.")  # cPickle's batches of 1,000, then an empty one
    assert ("LONG_BINPUT", 256) in ops and ("LONG_BINGET", 256) not in ops
    assert names.count("BINGET") == 3 * 1999  # _reconstruct, ndarray and the dtype, memoized by the first item
    assert ("GLOBAL", "numpy dtype") in ops and names.count("GLOBAL") == 3
    stream = PickleStream(io.BytesIO(data), len(data))
    got = {item.key: item.rows for item in stream.items()}
    assert list(got) == list(arrays) and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    one = dumps_py27({"v_x": arrays["v_7"]}, memo=True)
    assert one.endswith(b"tbs.") and np.array_equal(read_all(one)["v_x"], arrays["v_7"])


# ---------------------------------------------------------------- the stream reader
@pytest.mark.parametrize("memo", [False, True])
def test_reads_python_2_pickles_with_and_without_memo(memo):
    arrays = golden_arrays()
    got = read_all(dumps_py27(arrays, memo=memo))
    assert list(got) == list(arrays)
    for key, want in arrays.items():
        assert got[key].dtype == want.dtype and np.array_equal(got[key], want)
    assert np.array_equal(PickleStream(io.BytesIO(GOLDEN_PROTO0)).array(), arrays["v_quote"])


@pytest.mark.parametrize("protocol", range(6))
def test_reads_python_3_pickles_of_every_protocol(protocol):
    arrays = {"v_a": np.arange(6, dtype=np.float32).reshape(2, 3), "v_b": np.ones((1, 4), ">f8"),
              "v_f": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2))}
    got = read_all(pickle.dumps(arrays, protocol=protocol))
    assert all(np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in arrays.items())
    one = pickle.dumps(arrays["v_f"], protocol=protocol)
    assert np.array_equal(PickleStream(io.BytesIO(one)).array(), arrays["v_f"])


class CountingRaw(io.RawIOBase):
    """A raw file that counts the bytes it hands out (seeks are free)."""

    def __init__(self, data: bytes) -> None:
        self.inner, self.delivered = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.inner.readinto(buffer)
        self.delivered += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()


@pytest.mark.parametrize("writer", ["py27", "py27-memo", "py3-protocol2", "py3-protocol4"])
def test_skipped_videos_are_seeked_over_not_read(writer):
    arrays = videos(6, first_len=20)
    data = (dumps_py27(arrays, memo=writer == "py27-memo") if writer.startswith("py27")  # Python 3 memoizes data
            else pickle.dumps(arrays, protocol=int(writer[-1])))
    skip = {"v_vid001", "v_vid002", "v_vid004"}
    raw = CountingRaw(data)
    stream = PickleStream(io.BufferedReader(raw, buffer_size=256), len(data), skip=skip.__contains__)
    got = {item.key: item.rows for item in stream.items()}
    assert list(got) == list(arrays) and all(got[k] is None for k in skip)
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays if k not in skip)
    skipped_bytes = sum(arrays[k].nbytes for k in skip)
    assert raw.delivered <= len(data) - skipped_bytes + 3 * 256 and stream.pos == len(data)
    def big(v) -> bool:
        return isinstance(v, (np.ndarray, bytes)) and len(v) > 1024 or isinstance(v, tuple) and any(map(big, v))

    kept = list(stream._memo.values()) + stream._stack  # what the reader holds on to: no video's data
    assert not any(map(big, kept))


def test_items_come_out_before_their_batch_closes():
    data = dumps_py27(videos(3), memo=True)
    items = PickleStream(io.BytesIO(data), len(data)).items()
    first = next(items)
    assert first.key == "v_vid000" and first.end < data.index(b"v_vid001")


def test_truncated_pickle_says_where():
    data = dumps_py27(videos(4), memo=True)
    cut = data.index(b"v_vid002") + 100
    seen = []
    with pytest.raises(PickleReadError, match=f"ends at byte {cut:,}") as info:
        for item in PickleStream(io.BytesIO(data[:cut]), cut).items():
            seen.append(item.key)
    assert info.value.truncated and info.value.offset == cut and seen == ["v_vid000", "v_vid001"]


def test_other_globals_are_refused_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("ran",))  # pickle names builtins.print

    for protocol in (0, 2, 4):
        data = pickle.dumps({"v_a": Boom()}, protocol=protocol)
        with pytest.raises(PickleReadError, match=r"names (__builtin__|builtins)\.print: only numpy arrays") as info:
            read_all(data)
        assert not info.value.truncated and 0 < info.value.offset < len(data)
    with pytest.raises(PickleReadError, match="dtype"):
        read_all(pickle.dumps({"v_o": np.array([[None]], dtype=object)}, protocol=2))
    with pytest.raises(PickleReadError, match="not a dict of arrays"):
        read_all(pickle.dumps(np.zeros((1, 2), np.float32), protocol=2))
    with pytest.raises(PickleReadError, match="not an array"):
        read_all(pickle.dumps({"v_a": 3}, protocol=2))
    with pytest.raises(PickleReadError, match="opcode EMPTY_LIST"):
        read_all(pickle.dumps({"v_a": []}, protocol=2))
    path = tmp_path / "v_x"
    path.write_bytes(b"garbage\n")
    with pytest.raises(PickleReadError):
        read_pickled_array(path)


# ---------------------------------------------------------------- the import
def write_pickle(path, arrays: dict, memo: bool = True) -> None:
    with open(path, "wb") as f:
        write_py27(f, arrays.items(), len(arrays)) if memo else f.write(dumps_py27(arrays))


@pytest.fixture(params=["zarr", "hdf5"])
def store_path(request, tmp_path) -> str:
    return str(tmp_path / ("anet_resnet.zarr" if request.param == "zarr" else "anet_resnet.h5"))


@pytest.mark.parametrize("memo", [False, True])
def test_official_pickle_imports_with_the_recipe(tmp_path, memo):
    arrays = videos(5)
    src = tmp_path / "resnet152_features_activitynet_5fps_320x240.pkl"
    write_pickle(src, arrays, memo)
    store_path = str(tmp_path / "s.zarr")
    summary = import_activitynet_resnet152(src, store_path, dtype="float32")
    assert summary["imported"] == 5 and summary["source_bytes"] == src.stat().st_size
    with open_store(store_path, "r") as st:
        assert st.meta["extractor"] == RESNET_EXTRACTOR and st.meta["recipe"]["name"] == RESNET_RECIPE
        assert (st.meta["fps"], st.meta["clip_len"], st.meta["stride"], st.dim) == (5.0, 1, 1, DIM)
        for vid, want in arrays.items():
            np.testing.assert_array_equal(st.rows(vid), want)
            vm = st.video_meta(vid)
            assert vm["duration"] == pytest.approx(len(want) / 5) and vm["fps"] == 5.0
            assert vm["source"] == f"{src}:{vid}"
        # row i is the frame at i/5 s: a segment gets the seed's rows [int(s*5), int(e*5+0.5))
        rows, _ = st.get("v_vid004", 0.15, 1.0)
        np.testing.assert_array_equal(rows, arrays["v_vid004"][0:5])


def test_cut_file_stops_with_one_line_keeps_what_was_committed_and_a_rerun_goes_on(tmp_path, store_path):
    arrays = videos(6)
    full = tmp_path / "full.pkl"
    write_pickle(full, arrays)
    data = full.read_bytes()
    src = tmp_path / "resnet152_features_activitynet_5fps_320x240.pkl"
    src.write_bytes(data[:data.index(b"v_vid003") + 500])
    with pytest.raises(UserError) as info:
        import_activitynet_resnet152(src, store_path, dtype="float32")
    message = str(info.value)
    assert "\n" not in message and "ends early" in message and f"byte {len(src.read_bytes()):,}" in message
    assert "3 videos came before it: the 3 imported now and the 0 already there stay in" in message
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == ["v_vid000", "v_vid001", "v_vid002"]
    src.write_bytes(data)  # downloaded again
    summary = import_activitynet_resnet152(src, store_path, dtype="float32")
    assert summary["imported"] == 3 and summary["skipped_existing"] == 3
    again = import_activitynet_resnet152(src, store_path, dtype="float32")
    assert again["imported"] == 0 and again["skipped_existing"] == 6
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == sorted(arrays)
        np.testing.assert_array_equal(st.rows("v_vid005"), arrays["v_vid005"])


def test_corrupt_pickle_names_the_byte(tmp_path):
    src = tmp_path / "feats.pkl"
    data = dumps_py27(videos(2), memo=True)
    at = data.index(b"v_vid001") - 2  # the SHORT_BINSTRING opcode of the second key
    src.write_bytes(data[:at] + b"\xff" + data[at + 1:])
    with pytest.raises(UserError, match=rf"feats.pkl: byte {at:,} .*no pickle opcode.*1 videos came before it"):
        import_activitynet_resnet152(src, str(tmp_path / "s.zarr"))


def test_bad_videos_are_recorded_and_the_rest_go_on(tmp_path):
    arrays = videos(2)
    arrays.update({"v_empty": np.zeros((0, DIM), np.float32), "v_narrow": np.ones((3, 16), np.float32),
                   "v_nan": np.full((2, DIM), np.nan, np.float32), "bad/id": np.ones((2, DIM), np.float32)})
    src = tmp_path / "feats.pkl"
    write_pickle(src, arrays)
    summary = import_activitynet_resnet152(src, str(tmp_path / "s.zarr"))
    assert summary["imported"] == 2
    assert (summary["skipped_empty"], summary["skipped_bad_shape"], summary["skipped_bad_rows"],
            summary["skipped_invalid_id"]) == (1, 1, 1, 1)
    with open_store(str(tmp_path / "s.zarr"), "r") as st:
        failed = st.failed()
        assert failed["v_empty"]["reason"] == "no_frames" and "no rows" in failed["v_empty"]["detail"]
        assert failed["v_narrow"]["reason"] == "other" and "(3, 16)" in failed["v_narrow"]["detail"]
        assert "NaN" in failed["v_nan"]["detail"]


def test_paddle_folder_of_per_video_pickles(tmp_path, store_path):
    arrays = videos(3)
    folder = tmp_path / "feat_data"
    folder.mkdir()
    for vid, rows in arrays.items():
        (folder / vid).write_bytes(dumps_py27_array_proto0(rows))
    (folder / "v_zero").write_bytes(b"")
    (folder / "v_junk").write_bytes(b"not a pickle\n")
    (folder / ".DS_Store").write_bytes(b"x")
    summary = import_activitynet_resnet152(folder, store_path, dtype="float32")
    assert summary["imported"] == 3 and summary["skipped_unreadable"] == 2
    with open_store(store_path, "r") as st:
        assert st.complete_ids() == sorted(arrays)
        np.testing.assert_array_equal(st.rows("v_vid002"), arrays["v_vid002"])
        assert st.failed()["v_zero"]["reason"] == "empty_file" and st.failed()["v_junk"]["reason"] == "unreadable"
    again = import_activitynet_resnet152(folder, store_path, dtype="float32")
    assert again["skipped_existing"] == 3 and again["imported"] == 0


def test_hdf5_variant(tmp_path, store_path):
    arrays = videos(3)
    src = tmp_path / "resnet152_features_activitynet_5fps_320x240.hdf5"
    with h5py.File(src, "w") as f:
        for vid, rows in arrays.items():
            f.create_dataset(vid, data=rows)
    summary = import_activitynet_resnet152(src, store_path, dtype="float32")
    assert summary["imported"] == 3
    with open_store(store_path, "r") as st:
        assert st.meta["recipe"]["name"] == RESNET_RECIPE
        np.testing.assert_array_equal(st.rows("v_vid001"), arrays["v_vid001"])


def test_nothing_imported_is_a_partial_failure_and_other_stores_are_refused(tmp_path):
    src = tmp_path / "feats.pkl"
    write_pickle(src, {"v_narrow": np.ones((3, 16), np.float32)})
    with pytest.raises(PartialFailure, match="matched no video"):
        import_activitynet_resnet152(src, str(tmp_path / "a.zarr"))
    other = str(tmp_path / "generic.zarr")
    with open_store(other, "w", meta={"extractor": "imported", "layer": "imported", "dim": DIM, "clip_len": 1,
                                      "stride": 1, "fps": 5.0}):
        pass
    write_pickle(src, videos(1))
    with pytest.raises(UserError, match="extractor='imported'"):
        import_activitynet_resnet152(src, other)


def test_cli(tmp_path):
    src = tmp_path / "resnet152_features_activitynet_5fps_320x240.pkl"
    data = dumps_py27(videos(2), memo=True)
    src.write_bytes(data)
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    ok = runner.invoke(cli, ["import-features", "activitynet-resnet152", str(src), store])
    assert ok.exit_code == 0, ok.output
    wrong = runner.invoke(cli, ["import-features", "activitynet-resnet152", str(src), store, "--fps", "30"])
    assert wrong.exit_code == 1 and "--fps does not apply" in wrong.output
    src.write_bytes(data[:-40])
    cut = runner.invoke(cli, ["import-features", "activitynet-resnet152", str(src), str(tmp_path / "t.zarr")])
    assert cut.exit_code == 1 and cut.output.count("\n") == 1 and "ends early" in cut.output
