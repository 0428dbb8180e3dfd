"""The boundary-matching proposer: its grid and targets against brute force, its region means and their
gradient, nested events it must find, and the checkpoint contract it shares with SST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_proposal_train import FPS, STORE_META, STRIDE, tiny_cfg

from caption_model.proposals.bm_data import (
    BMDataset,
    bm_collate,
    boundary_targets,
    cell_segments,
    cell_targets,
    crop_window,
    length_grid,
    positions,
    window_references,
)
from caption_model.proposals.bm_model import BMNet, _RegionMeans, bm_propose, moved_segments
from caption_model.proposals.data import VideoTimes
from caption_model.proposals.infer import Proposer, proposal_kind
from caption_model.proposals.train import train_proposals
from etspipe.config import load_config
from etspipe.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _bm_cfg(**extra) -> dict:
    cfg = load_config()["proposals"]
    cfg.update({"model": "bmn", "hidden_dim": 8, "bm_cell_dim": 4, "bm_positions": 12, "bm_lengths": 6,
                "dropout": 0.0, **extra})
    return cfg


def test_length_grid_is_distinct_log_spaced_from_one_to_the_positions():
    grid = length_grid(256, 64)
    assert grid[0] == 1 and grid[-1] == 256 and np.all(np.diff(grid) > 0)
    assert set(range(1, 9)) <= set(grid.tolist())  # every short length is there: where short events sit
    ratios = grid[1:] / grid[:-1]
    assert ratios[-10:].max() < 1.15  # long lengths are a few % apart: tIoU lost to the grid stays small


def test_short_video_keeps_its_rows_and_a_long_one_is_averaged_by_time():
    rows = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    edges = np.linspace(0.0, 5.0, 11)
    feats, pos_edges = positions(rows, edges, 10)
    assert np.array_equal(feats, rows) and np.array_equal(pos_edges, edges)
    feats, pos_edges = positions(rows, edges, 4)  # 4 spans of 1.25 s over rows of 0.5 s
    assert np.allclose(pos_edges, [0.0, 1.25, 2.5, 3.75, 5.0])
    # the first position covers rows 0, 1 wholly and half of row 2: (0 + 1 + 0.5 * 2) / 2.5
    assert feats[0, 0] == pytest.approx(2.0 / 2.5) and feats.shape == (4, 3)
    assert feats[:, 0].mean() == pytest.approx(rows[:, 0].mean())


def test_cell_segments_and_tiou_equal_brute_force():
    rng = np.random.default_rng(3)
    pos_edges = np.cumsum(np.r_[0.0, rng.uniform(0.3, 0.7, 9)])
    lengths = np.array([1, 2, 3, 5, 9])
    gt = np.array([[0.2, 1.9], [1.0, 4.4]])
    segs, valid = cell_segments(pos_edges, lengths)
    tiou = cell_targets(pos_edges, lengths, gt).tiou
    for s in range(9):
        for k, n in enumerate(lengths):
            assert valid[s, k] == (s + n <= 9)
            if not valid[s, k]:
                assert tiou[s, k] == 0
                continue
            a, b = pos_edges[s], pos_edges[s + n]
            assert tuple(segs[s, k]) == (a, b)
            best = max((min(b, e) - max(a, g)) / (max(b, e) - min(a, g)) if min(b, e) > max(a, g) else 0.0
                       for g, e in gt)
            assert tiou[s, k] == pytest.approx(best, abs=1e-6)


def test_boundary_targets_mark_the_positions_next_to_each_edge():
    starts, ends = boundary_targets(np.arange(11, dtype=float), np.array([[3.0, 7.0]]))
    assert np.flatnonzero(starts).tolist() == [2, 3, 4]  # left edges 2, 3, 4 are within 1.5 of 3.0
    assert np.flatnonzero(ends).tolist() == [5, 6, 7]  # right edges 6, 7, 8 are within 1.5 of 7.0


def test_region_means_equal_brute_force_with_edges_and_padding():
    torch.manual_seed(0)
    net = BMNet(_bm_cfg(), feat_dim=3).double()
    b, t, p = 2, 12, net.cell_dim
    n_pos = torch.tensor([12, 7])
    z = torch.randn(b, t, 5, p, dtype=torch.float64)
    z[1, 7:] = 0  # the forward zeroes rows past a video's end
    got = net.region_means(z, n_pos)
    for k, spans in enumerate(net.region_spans()):
        for v in range(b):
            n = int(n_pos[v])
            for s in range(t):
                want = torch.zeros(p, dtype=torch.float64)
                for r, (lo, hi) in enumerate(spans):
                    idx = [i for i in range(s + lo, s + hi) if 0 <= i < (n if r >= 3 else t)]
                    if r >= 3:
                        want += z[v, idx, r].sum(0) / max(len(idx), 1)
                    else:
                        want += z[v, [i for i in range(s + lo, s + hi) if i < t], r].sum(0) / (hi - lo)
                assert torch.allclose(got[k, s, v], want), (k, s, v)


def test_region_means_gradient_is_exact():
    net = BMNet(_bm_cfg(bm_positions=6, bm_lengths=3), feat_dim=3).double()
    spans = net.region_spans()
    left = max(-lo for sp in spans for lo, _ in sp)
    bounds = [[(left + lo, left + hi) for lo, hi in sp] for sp in spans]
    t, b = 5, 2
    scales = [[0.5, 0.25, torch.rand(t, b, 1, dtype=torch.float64), 1.0, 2.0] for _ in spans]
    prefix = torch.randn(left + 1 + t + 20, 5, b * 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _RegionMeans.apply(x, bounds, scales, t, b), (prefix,))


def test_padding_does_not_change_a_videos_scores():
    torch.manual_seed(1)
    net = BMNet(_bm_cfg(), feat_dim=3).eval()
    x = torch.randn(1, 7, 3)
    alone = net(x, torch.tensor([7]))
    padded = net(torch.cat([x, torch.randn(1, 5, 3)], dim=1), torch.tensor([7]))
    assert torch.allclose(alone[0], padded[0][:, :7], atol=1e-5)
    valid = net.valid_cells(torch.tensor([7]), 7).bool()
    assert torch.allclose(alone[1][valid], padded[1][:, :7][valid], atol=1e-5)


def test_crop_windows_are_seeded_and_keep_the_references_mostly_inside():
    rng = np.random.default_rng(0)
    windows = [crop_window(100, rng, 1.0) for _ in range(50)]
    assert all(0 <= a < b <= 100 and b - a >= 50 for a, b in windows) and len(set(windows)) > 10
    assert crop_window(100, np.random.default_rng(0), 0.0) == (0, 100)
    refs = window_references(np.array([[0.0, 10.0], [8.0, 12.0], [15.0, 30.0]]), 9.0, 20.0)
    assert refs.tolist() == [[9.0, 12.0]]  # 1/10 inside: dropped; 3/4 inside: clipped; 1/3 inside: dropped


def _nested_corpus(root: Path, n_videos: int, seed: int) -> tuple[Path, Path]:
    """Videos of 40-60 rows, each with a long event (20-30 rows) holding a short one (3-5 rows) of
    another activity inside it, and one separate short event."""
    from features_store import open_store

    rng = np.random.default_rng(seed)
    dirs = np.eye(6, dtype=np.float32)[:3] * 2.5
    path, ann = root / "nested.zarr", {}
    with open_store(str(path), "w", meta={**STORE_META, "dim": 6}) as store:
        for v in range(n_videos):
            n = int(rng.integers(40, 61))
            rows = rng.standard_normal((n, 6)).astype(np.float32) * 0.4
            edges = np.arange(n + 1) * STRIDE / FPS
            a = int(rng.integers(2, n - 35))
            b = a + int(rng.integers(20, 31))
            c = a + int(rng.integers(5, b - a - 8))
            d = c + int(rng.integers(3, 6))
            e = int(rng.integers(b + 2, n - 4))
            f = e + int(rng.integers(3, 5))
            rows[a:b] += dirs[0]
            rows[c:d] += dirs[1]
            rows[e:f] += dirs[2]
            stamps = [[float(edges[i]), float(edges[j])] for i, j in ((a, b), (c, d), (e, f))]
            ann[f"v_n{v:03d}"] = {"duration": float(edges[-1]), "timestamps": stamps, "sentences": ["x"] * 3}
            store.write_video(f"v_n{v:03d}", rows, {"fps": FPS, "duration": float(edges[-1]),
                                                     "n_frames": int(edges[-1] * FPS)})
    (root / "nested.json").write_text(json.dumps(ann))
    return path, root / "nested.json"


def test_learns_a_short_event_inside_a_long_one(tmp_path):
    from features_store import open_store

    store, ann = _nested_corpus(tmp_path, 40, seed=0)
    cfg = tiny_cfg(tmp_path / "run", epochs=25, model="bmn", bm_positions=64, bm_lengths=24, bm_cell_dim=16,
                   hidden_dim=16, batch_size=8, lr=3e-3)
    run = train_proposals(cfg, str(store), [str(ann)], progress=False)
    (tmp_path / "test").mkdir()
    test_store, test_ann = _nested_corpus(tmp_path / "test", 8, seed=1)
    proposer = Proposer.load(run.best_path)
    found = {"long": 0, "inner": 0, "short": 0}
    with open_store(str(test_store)) as s:
        for vid, a in json.loads(test_ann.read_text()).items():
            props = np.array([p["segment"] for p in proposer.propose_with(s, vid, cfg["proposals"])[:5]])
            for name, (g0, g1) in zip(found, a["timestamps"], strict=True):
                inter = np.clip(np.minimum(props[:, 1], g1) - np.maximum(props[:, 0], g0), 0, None)
                union = (props[:, 1] - props[:, 0]) + (g1 - g0) - inter
                found[name] += bool((inter / union >= 0.5).any())
    assert found["long"] >= 7 and found["short"] >= 7, found
    assert found["inner"] >= 7, found  # the nested one keeps a top-5 place next to the event around it


def test_checkpoint_says_its_model_and_proposes_inside_the_video(tmp_path):
    from test_proposal_train import make_event_corpus

    from features_store import open_store

    store, ann = make_event_corpus(tmp_path, n_videos=10)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1, model="bmn"), str(store), [str(ann)],
                          progress=False)
    proposer = Proposer.load(run.best_path)
    assert isinstance(proposer.net, BMNet) and proposer.ckpt["config"]["proposals"]["model"] == "bmn"
    with open_store(str(store)) as s:
        vid = sorted(json.loads(ann.read_text()))[0]
        duration = float(s.video_meta(vid)["duration"])
        props = proposer.propose(s, vid, 0.8, 20)
    scores = [p["score"] for p in props]
    assert props and scores == sorted(scores, reverse=True)
    assert all(0.0 <= p["segment"][0] < p["segment"][1] <= duration + 1e-6 for p in props)


def test_an_unknown_model_is_one_line():
    with pytest.raises(UserError, match="proposals.model must be one of sst, bmn, not 'bsn'"):
        proposal_kind({"model": "bsn"})
    assert proposal_kind({}) == "sst"  # checkpoints from before the choice


def test_dataset_and_collate_shapes(tmp_path):
    from test_proposal_train import make_event_corpus

    from caption_model.proposals.data import video_times
    from features_store import open_store

    store, ann = make_event_corpus(tmp_path, n_videos=3)
    doc = json.loads(ann.read_text())
    with open_store(str(store)) as s:
        videos = [video_times(s, v) for v in sorted(doc)]
    videos = [VideoTimes(v.store_id, v.edges, np.array(doc[v.store_id]["timestamps"])) for v in videos]
    lengths = length_grid(16, 8)
    batch = bm_collate([BMDataset(str(store), videos, lengths, 16)[i] for i in range(3)])
    n = [min(v.n_rows, 16) for v in videos]
    assert batch.feats.shape == (3, max(n), 8) and batch.tiou.shape == (3, max(n), len(lengths))
    assert batch.n_pos.tolist() == n and float(batch.tiou.max()) > 0.9  # some cell fits an event closely
    for i, m in enumerate(n):
        assert float(batch.tiou[i, m:].abs().sum() + batch.starts[i, m:].sum()) == 0.0


def test_bm_propose_of_a_one_row_video_stays_inside_the_row():
    torch.manual_seed(0)
    net = BMNet(_bm_cfg(), feat_dim=3).eval()
    props = bm_propose(net, np.ones((1, 3), np.float32), np.array([0.0, 0.4]), _bm_cfg(max_proposals=5,
                       nms_tiou=0.8), torch.device("cpu"))
    assert len(props) == 1 and 0.0 <= props[0]["segment"][0] < props[0]["segment"][1] <= 0.4


def test_offsets_move_cells_onto_their_reference_and_stay_inside_the_video():
    pos_edges = np.arange(11, dtype=float)
    tiou, offsets, closest, _ = cell_targets(pos_edges, np.array([2, 4]), np.array([[2.5, 6.5]]))
    segs, valid = cell_segments(pos_edges, np.array([2, 4]))
    moved = moved_segments(segs[valid], offsets[valid], 10.0)
    near = tiou[valid] >= 0.5
    assert near.any() and np.allclose(moved[near], [2.5, 6.5])  # every near cell lands on the event exactly
    assert np.flatnonzero(closest.ravel()).tolist() == [2 * 2 + 1, 3 * 2 + 1]  # [2, 6] and [3, 7]: tIoU 0.78
    wild = moved_segments(np.array([[0.0, 2.0], [8.0, 10.0], [4.0, 6.0]]),
                          np.array([[-1.0, 0.0], [0.0, 5.0], [0.9, -0.9]]), 10.0)
    assert wild.tolist() == [[0.0, 2.0], [8.0, 10.0], [4.0, 6.0]]  # clipped at 0 / the end; a crossing pair: kept


def test_pooled_positions_equal_time_weighted_means_over_irregular_rows():
    rng = np.random.default_rng(5)
    edges = np.cumsum(np.r_[0.0, rng.uniform(0.1, 0.9, 40), 0.0])  # the last row has no length (a clipped end)
    rows = rng.standard_normal((41, 3)).astype(np.float32)
    feats, pos_edges = positions(rows, edges, 7)
    for j in range(7):
        a, b = pos_edges[j], pos_edges[j + 1]
        w = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
        assert np.allclose(feats[j], (w[:, None] * rows).sum(0) / w.sum(), atol=1e-5), j
