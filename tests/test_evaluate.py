"""`run_evaluate` end to end on a tiny store and checkpoint, the result JSON schema, and weights lookup.

The feature store is stood in for by `FakeStore` (the store API of
docs/INTERFACES.md: `dim`, `meta`, `complete_ids`, `get`, `video_meta`,
`write_video`, `close`), so these tests do not depend on a backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from caption_model import evaluate as ev
from caption_model.checkpoint import FORMAT, VERSION, save_checkpoint
from caption_model.model import ETS
from caption_model.results import make_result, read_result, validate_result, write_result
from caption_model.text import Vocab
from etspipe.config import load_config
from etspipe.errors import UserError

DIM = 16


class FakeStore:
    """In-memory store with one row per second (row i at time i + 0.5) and the DESIGN time rule."""

    def __init__(self, videos: dict[str, float] | None = None, dim: int = DIM, meta: dict | None = None):
        self.dim = dim
        self.meta = dict(meta or {"extractor": "c3d-sports1m", "layer": "fc7", "dim": dim, "weights": "untrained"})
        self._rows: dict[str, np.ndarray] = {}
        self._meta: dict[str, dict] = {}
        rng = np.random.default_rng(0)
        for vid, duration in (videos or {}).items():
            n = max(1, int(duration))
            self.write_video(vid, rng.normal(size=(n, dim)).astype(np.float32), {"duration": duration})

    def complete_ids(self) -> list[str]:
        return sorted(self._rows)

    def is_complete(self, vid: str) -> bool:
        return vid in self._rows

    def write_video(self, vid: str, rows: np.ndarray, meta: dict) -> None:
        self._rows[vid] = np.asarray(rows, dtype=np.float32)
        self._meta[vid] = dict(meta, n_rows=len(rows))

    def video_meta(self, vid: str) -> dict:
        return self._meta[vid]

    def row_times(self, vid: str) -> np.ndarray:
        n = len(self._rows[vid])
        if "fps" in self._meta[vid]:
            m = self._meta[vid]
            return (np.arange(n) * m["stride"] + m["clip_len"] / 2) / m["fps"]
        return np.arange(n) * (self._meta[vid]["duration"] / n) + self._meta[vid]["duration"] / n / 2

    def get(self, vid: str, start: float, end: float):
        times = self.row_times(vid)
        keep = np.flatnonzero((times >= start) & (times <= end))
        if len(keep) == 0:
            keep = np.array([int(np.argmin(np.abs(times - (start + end) / 2)))])
        return self._rows[vid][keep], times[keep]

    def close(self) -> None:
        pass


def make_checkpoint(path: Path, feat_dim: int = DIM, extract: dict | None = None,
                    store_meta: dict | None = None) -> Path:
    """A small untrained ETS checkpoint in the trainer's format."""
    torch.manual_seed(0)
    cfg = load_config()
    cfg["model"].update(proj_dim=16, embed_dim=8, hidden_dim=16, attn_dim=8)
    if extract:
        cfg["extract"].update(extract)
    vocab = Vocab(["<pad>", "<s>", "<e>", "<unk>", "a", "man", "dog", "runs", "jumps"])
    model = ETS(cfg["model"], feat_dim, len(vocab))
    state = {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "vocab": vocab.to_dict(),
             "feat_dim": feat_dim, "config": cfg, "epoch": 1,
             "store_meta": store_meta or {"extractor": "c3d-sports1m", "layer": "fc7", "weights": "untrained"}}
    return save_checkpoint(state, path)


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    store = FakeStore({"v_a": 30.0, "v_b": 12.0})
    monkeypatch.setattr("caption_model.dataset.open_store", lambda path, mode="r": store)
    (tmp_path / "store.zarr").mkdir()
    val1 = {"v_a": {"duration": 30.0, "timestamps": [[0, 10], [0, 10], [5, 40]],
                    "sentences": ["A man runs.", "A man runs fast.", "A dog jumps."]},
            "v_b": {"duration": 12.0, "timestamps": [[2, 8]], "sentences": ["A dog runs."]},
            "v_missing": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["Nothing."]}}
    val2 = {"v_a": {"duration": 30.0, "timestamps": [[1, 9]], "sentences": ["Someone runs."]}}
    p1, p2 = tmp_path / "val_1.json", tmp_path / "val_2.json"
    p1.write_text(json.dumps(val1))
    p2.write_text(json.dumps(val2))
    cfg = load_config()
    cfg["decode"]["max_len"] = 6
    cfg["train"]["save_dir"] = str(tmp_path / "ckpts")
    return cfg, tmp_path, [p1, p2]


def test_evaluate_with_checkpoint_writes_results_and_scores(setup, capsys):
    cfg, tmp, anns = setup
    ckpt = make_checkpoint(tmp / "ckpts" / "best.pt")
    out = ev.run_evaluate(cfg, None, tmp / "store.zarr", anns, out_dir=tmp / "out", progress=False)
    printed = capsys.readouterr().out
    assert f"using checkpoint {ckpt}" in printed and "METEOR" in printed
    doc = read_result(out["results_path"])
    # distinct segments of the FIRST file only, with their original timestamps; v_missing skipped
    assert {v: [e["timestamp"] for e in es] for v, es in doc["results"].items()} == {
        "v_a": [[0.0, 10.0], [5.0, 40.0]], "v_b": [[2.0, 8.0]]}
    assert out["skipped"] == {"v_missing": "missing from store"} and out["n_segments"] == 3
    saved = json.loads(Path(out["scores_path"]).read_text())
    assert Path(out["scores_path"]).parent == Path(out["results_path"]).parent
    assert saved["average"] == out["scores"]["average"]
    assert saved["n_reference_videos"] == 3
    # ground-truth segments: every prediction meets its reference at tIoU 1, detection recall of
    # v_a in val_1 is 3/3, v_b 1/1, v_missing 0 -> 2/3 at every threshold
    assert saved["average"]["Recall"] == pytest.approx(200 / 3)


def test_evaluate_an_existing_result_file_without_checkpoint(setup):
    cfg, tmp, anns = setup
    res = tmp / "res.json"
    write_result(res, make_result({"v_b": [{"timestamp": [2, 8], "sentence": "A dog runs."}]}, "test"))
    out = ev.run_evaluate(cfg, None, None, anns, results_path=res, echo=None)
    assert out["checkpoint"] is None and out["scores_path"] == str(tmp / "res_scores.json")
    assert out["scores"]["average"]["ROUGE_L"] == pytest.approx(100 / 3)  # 1 of 3 videos, perfect


def test_no_checkpoint_and_bad_files_are_user_errors(setup):
    cfg, tmp, anns = setup
    with pytest.raises(UserError, match="no --weights given"):
        ev.run_evaluate(cfg, None, tmp / "store.zarr", anns, echo=None)
    with pytest.raises(UserError, match="checkpoint not found"):
        ev.run_evaluate(cfg, tmp / "nope.pt", tmp / "store.zarr", anns, echo=None)
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(UserError, match="bad.json.*missing field"):
        ev.run_evaluate(cfg, None, None, anns, results_path=bad, echo=None)
    make_checkpoint(tmp / "wide.pt", feat_dim=DIM + 1)
    with pytest.raises(UserError, match="feature dimension mismatch"):
        ev.run_evaluate(cfg, tmp / "wide.pt", tmp / "store.zarr", anns, echo=None)


@pytest.mark.parametrize("doc, problem", [
    ([], "JSON object"),
    ({"version": "VERSION 1.0", "results": {}}, "external_data"),
    ({"version": "", "results": {"v": {}}, "external_data": {}}, "must be a list"),
    ({"version": "", "results": {"v": [{"timestamp": [1], "sentence": "x"}]}, "external_data": {}}, "timestamp"),
    ({"version": "", "results": {"v": [{"timestamp": [1, 2], "sentence": 3}]}, "external_data": {}}, "sentence"),
])
def test_result_schema(doc, problem):
    with pytest.raises(UserError, match=problem):
        validate_result(doc, "f.json")


def test_result_round_trip(tmp_path):
    doc = make_result({"v_x": [{"timestamp": [0.5, 2.25], "sentence": "a man runs"}]}, "C3D fc7 features")
    assert set(doc) == {"version", "results", "external_data"} and doc["version"] == "VERSION 1.0"
    assert doc["external_data"] == {"used": True, "details": "C3D fc7 features"}
    write_result(tmp_path / "r.json", doc)
    assert read_result(tmp_path / "r.json") == doc
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        read_result(tmp_path / "broken.json")
