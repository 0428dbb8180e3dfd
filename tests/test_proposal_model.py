"""Proposal model pieces: row edges, anchors, labels, the loss weights, NMS, proposals from scores, baselines."""

import numpy as np
import pytest
import torch

from caption_model.proposals.baselines import random_segments, sliding_windows
from caption_model.proposals.data import anchors_fit, segment_rows, video_times, window_start
from caption_model.proposals.model import (
    ProposalNet,
    anchor_labels,
    anchor_segments,
    kmeans_anchors,
    nms,
    proposals_from_scores,
    row_edges,
    weighted_bce,
)
from etspipe.errors import UserError
from features_store.alignment import select_rows

PCFG = {"proj_dim": 8, "hidden_dim": 8, "num_layers": 1, "bidirectional": True, "dropout": 0.0,
        "regress_boundaries": True}


def test_row_edges_round_trip_through_the_alignment_rule():
    times = (np.arange(10) * 8 + 8) / 15.0  # clip rule: 16-frame clips every 8 frames at 15 fps
    edges = row_edges(times, duration=6.0)
    assert edges[0] == 0.0 and edges[-1] == 6.0 and np.all(np.diff(edges) > 0)
    for a in range(10):
        for b in range(a, 10):
            sel = select_rows(times, edges[a], edges[b + 1], 6.0)
            assert (sel.start, sel.stop) == (a, b + 1)


def test_row_edges_of_a_video_shorter_than_one_row():
    edges = row_edges(np.array([16 / 2 / 15.0]), duration=0.3)  # one padded clip longer than the video
    assert edges.tolist() == [0.0, 0.3]
    props = proposals_from_scores(np.array([[0.7, 0.2]]), edges, np.array([1, 4]), 0.8, 10)
    assert props == [{"segment": [0.0, 0.3], "score": 0.7}]


def test_kmeans_anchors_cover_the_lengths_and_merge_close_ones():
    lengths = np.array([3] * 50 + [4] * 30 + [20] * 10 + [60] * 5, dtype=float)
    anchors = kmeans_anchors(lengths, 4)
    assert anchors.dtype == np.int64 and np.all(np.diff(anchors) > 0) and anchors.min() >= 1
    assert anchors.min() <= 4 and any(abs(a - 20) <= 2 for a in anchors) and anchors.max() >= 55
    assert len(kmeans_anchors(np.array([5.0] * 10), 8)) == 1  # one length: one anchor, not 8 copies


def test_anchor_labels_mark_the_anchor_that_matches_an_event():
    edges = np.arange(11, dtype=float)  # 10 rows of 1 s
    anchors = np.array([2, 5])
    labels = anchor_labels(edges, anchors, np.array([[3.0, 8.0]]), 0.5)
    segs = anchor_segments(edges, anchors)
    assert segs[7, 1].tolist() == [3.0, 8.0] and labels[7, 1] == 1.0
    assert labels[:, 0].sum() == 0  # 2 s anchors reach at most tIoU 0.4 with a 5 s event
    assert labels[0].tolist() == [0.0, 0.0]
    assert anchor_labels(edges, anchors, np.zeros((0, 2)), 0.5).sum() == 0


def test_weighted_bce_balances_rare_positives():
    logits = torch.zeros(1, 4, 1)
    labels = torch.tensor([[[1.0], [0.0], [0.0], [0.0]]])
    weight = torch.ones(1, 4, 1)
    share = torch.tensor([0.25])
    loss = weighted_bce(logits, labels, weight, share)
    expected = (0.75 * 1 + 0.25 * 3) * np.log(2) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    masked = weighted_bce(logits, labels, torch.zeros(1, 4, 1), share)
    assert float(masked) == 0.0


def test_nms_keeps_the_best_and_drops_near_duplicates():
    segs = np.array([[0, 10], [0.5, 10], [20, 30], [0, 5]], dtype=float)
    keep = nms(segs, np.array([0.9, 0.8, 0.7, 0.6]), 0.8, 10)
    assert keep.tolist() == [0, 2, 3]
    assert nms(segs, np.array([0.9, 0.8, 0.7, 0.6]), 0.8, 2).tolist() == [0, 2]


def test_proposals_are_sorted_unique_and_inside_the_video():
    edges = np.linspace(0, 5, 11)
    rng = np.random.default_rng(0)
    props = proposals_from_scores(rng.random((10, 3)), edges, np.array([1, 3, 6]), 0.9, 100)
    scores = [p["score"] for p in props]
    assert scores == sorted(scores, reverse=True)
    segs = [tuple(p["segment"]) for p in props]
    assert len(set(segs)) == len(segs) and all(0 <= s < e <= 5 for s, e in segs)


def test_network_shapes_and_padding_do_not_leak():
    torch.manual_seed(0)
    net = ProposalNet(PCFG, feat_dim=6, n_anchors=3).eval()
    a = torch.randn(1, 5, 6)
    padded = torch.cat([a, torch.randn(1, 4, 6)], dim=1)
    out_a, off_a = net(a, torch.tensor([5]))
    out_p, off_p = net(torch.cat([padded, torch.randn(1, 9, 6)]), torch.tensor([5, 9]))
    assert out_p.shape == (2, 9, 3) and off_p.shape == (2, 9, 3, 2)
    assert torch.allclose(out_a[0], out_p[0, :5], atol=1e-5)  # the backward pass starts at the real end
    assert torch.allclose(off_a[0], off_p[0, :5], atol=1e-5)
    assert ProposalNet({**PCFG, "regress_boundaries": False}, 6, 3)(a, torch.tensor([5]))[1] is None


def test_boundary_targets_move_an_anchor_onto_its_event():
    from caption_model.proposals.model import anchor_targets, refine

    edges = np.linspace(0.0, 5.0, 11)  # 10 rows of 0.5 s
    anchors = np.array([4])
    gt = np.array([[1.2, 3.1]])  # not on row edges
    labels, offsets = anchor_targets(edges, anchors, gt, 0.5)
    assert labels[6, 0] == 1.0 and np.all(offsets[labels == 0] == 0)
    moved = refine(edges, anchors, offsets)
    assert np.allclose(moved[labels == 1], [1.2, 3.1])  # exact offsets give the event itself
    props = proposals_from_scores(labels, edges, anchors, 0.8, 5, offsets)
    assert props[0]["segment"] == pytest.approx([1.2, 3.1])


def test_segment_rows_and_coarse_store_refused():
    edges = np.arange(11, dtype=float)
    assert segment_rows(edges, 2.0, 6.0) == 4 and segment_rows(edges, 2.1, 2.2) == 1
    from caption_model.proposals.data import VideoTimes

    fine = [VideoTimes("v", edges, np.array([[1.0, 5.0], [2.0, 9.0]]))]
    assert anchors_fit(fine, "s").tolist() == [4.0, 7.0]
    coarse = [VideoTimes("v", np.array([0.0, 30.0, 60.0]), np.array([[1.0, 5.0], [10.0, 20.0]]))]
    with pytest.raises(UserError, match="cannot carry proposal anchors"):
        anchors_fit(coarse, "coarse.zarr")


def test_window_start_is_deterministic_and_in_range():
    starts = {window_start(0, 3, 7, 1000, 256) for _ in range(3)}
    assert len(starts) == 1 and 0 <= starts.pop() <= 744
    assert window_start(0, 3, 7, 100, 256) == 0
    assert len({window_start(0, e, 7, 1000, 256) for e in range(10)}) > 1


def test_baselines_give_the_number_asked_for_inside_the_video():
    for n in (1, 5, 10, 100):
        sw = sliding_windows(60.0, n)
        rnd = random_segments(60.0, n, seed=0, video_id="v_a")
        assert len(sw) == n and len(rnd) == n
        assert all(0 <= p["segment"][0] <= p["segment"][1] <= 60.0 for p in sw + rnd)
    assert sliding_windows(60.0, 1)[0]["segment"] == [0.0, 60.0]
    assert random_segments(60.0, 5, 0, "v_a") == random_segments(60.0, 5, 0, "v_a")
    assert random_segments(60.0, 5, 0, "v_a") != random_segments(60.0, 5, 0, "v_b")


def test_video_times_from_store_metadata(tmp_path):
    from features_store import open_store

    meta = {"extractor": "random", "layer": "fc7", "dim": 4, "clip_len": 16, "stride": 8, "dtype": "float32"}
    with open_store(str(tmp_path / "s.zarr"), "w", meta=meta) as store:
        store.write_video("v_short", np.ones((1, 4)), {"fps": 15.0, "duration": 0.4, "n_frames": 6})
        vt = video_times(store, "v_short")
    assert vt.n_rows == 1 and vt.edges.tolist() == [0.0, 0.4] and vt.gt.shape == (0, 2)


def test_events_follow_threshold_and_limit_sorted_by_start():
    from caption_model.proposals.infer import video_events

    props = [{"segment": [5.0, 9.0], "score": 0.9}, {"segment": [1.0, 3.0], "score": 0.8},
             {"segment": [0.0, 9.0], "score": 0.6}, {"segment": [2.0, 4.0], "score": 0.3}]
    events, note = video_events(props, 10.0, 0.5, 2)
    assert note is None and [e["segment"] for e in events] == [[1.0, 3.0], [5.0, 9.0]]
    events, note = video_events(props, 10.0, 0.5, 10)
    assert [e["segment"][0] for e in events] == [0.0, 1.0, 5.0]


def test_empty_set_after_threshold_captions_the_whole_video_and_says_so():
    from caption_model.proposals.infer import video_events

    events, note = video_events([{"segment": [1.0, 2.0], "score": 0.2}], 7.5, 0.5, 10)
    assert events == [{"segment": [0.0, 7.5], "score": None}]
    assert "threshold 0.5 (proposals.score_threshold" in note and "0.200" in note and "whole video" in note
    events, note = video_events([], 7.5, 0.5, 10)
    assert events[0]["segment"] == [0.0, 7.5] and "no proposal at all" in note


def test_every_anchor_trains_wholly_inside_a_window_at_every_position():
    """Issue 20: a 256-row window never held a 701-row anchor, and anchors clipped at row 0 were trained in
    windows that start later (their labels depend on rows the window does not hold)."""
    from caption_model.proposals.data import ProposalDataset, training_window, usable_anchors
    from caption_model.proposals.model import anchor_bounds

    anchors = np.array([2, 9, 300, 701])
    assert training_window(256, anchors) == 1402 and training_window(4096, anchors) == 4096
    start, _ = anchor_bounds(3000, anchors)
    a = 1000  # a window starting at row 1000
    usable = usable_anchors(start[a:a + 1402], a)
    assert not usable[0, 3] and not usable[699, 3] and usable[700, 3]  # the 701-row anchor ending at row 1700
    assert usable[1, 0] and not usable[0, 1]
    # an anchor clipped at the video's first row is a real segment only for a window that starts there
    assert usable_anchors(start[0:1402], 0)[5, 3]
    assert not usable_anchors(start[40:1442], 40)[0, 3]  # row 40's 701-row anchor reaches back to row 0
    # at every end row from the anchor's length on, some window start holds it whole
    window = training_window(256, anchors)
    for end in (700, 1500, 2999):
        a = max(end - window + 1, 0)
        assert usable_anchors(start[a:a + window], a)[end - a, 3]
    ds = ProposalDataset("unused.zarr", [], anchors, 0.5, 256, seed=0)
    assert ds.window == 1402


def test_soft_nms_sinks_near_duplicates_below_a_distinct_event_but_keeps_them():
    from caption_model.proposals.model import nms, soft_nms

    segs = np.array([[0.0, 10.0], [0.5, 10.0], [1.0, 10.5], [30.0, 34.0]])
    scores = np.array([0.9, 0.85, 0.8, 0.5])
    assert nms(segs, scores, 0.8, 10).tolist() == [0, 3]  # hard: the tight variants are gone
    assert nms(segs, scores, 0.95, 2).tolist() == [0, 1]  # or they fill the top places
    keep, kept = soft_nms(segs, scores, 0.99, 10, sigma=0.3)
    assert keep.tolist() == [0, 3, 2, 1]  # the distinct event second, the variants after it (closest last)
    assert kept[0] == 0.9 and kept[1] == 0.5 and kept[2] == pytest.approx(0.8 * np.exp(-(6 / 7) ** 2 / 0.3))
    assert np.all(np.diff(kept) <= 0)  # the decayed scores are the ranking
    assert soft_nms(segs, scores, 0.9, 10, sigma=0.3)[0].tolist() == [0, 3, 2]  # above the threshold: dropped


def test_scores_undo_the_loss_weights_so_anchors_of_all_lengths_rank_on_one_scale():
    """SST's weights inflate a rare anchor's odds by (1 - p) / p; the proposer's probabilities take that out."""
    import torch

    from caption_model.proposals.infer import Proposer
    from caption_model.proposals.model import ProposalNet
    from etspipe.config import load_config

    pcfg = {**load_config()["proposals"], "proj_dim": 4, "hidden_dim": 4, "regress_boundaries": False}
    net = ProposalNet(pcfg, 6, 2)
    torch.nn.init.zeros_(net.score.weight)
    torch.nn.init.zeros_(net.score.bias)  # the network says "even odds" for both anchors everywhere
    share = np.array([0.5, 0.01])  # anchor 2 is rare: its positives were weighed 99x its negatives
    probs, _ = Proposer(net.eval(), np.array([2, 8]), {}, torch.device("cpu"), share).scores(np.ones((5, 6)))
    assert probs[:, 0] == pytest.approx(0.5) and probs[:, 1] == pytest.approx(0.01)
    raw, _ = Proposer(net.eval(), np.array([2, 8]), {}, torch.device("cpu")).scores(np.ones((5, 6)))
    assert raw == pytest.approx(0.5)  # without the shares (no loss weights to undo) the scores stay as they are


def test_hard_nms_chooses_the_proposals_and_soft_nms_only_orders_them():
    from caption_model.proposals.model import nms, rank_segments

    segs = np.array([[0.0, 10.0], [0.0, 7.5], [50.0, 52.0], [20.0, 30.0]])
    scores = np.array([0.9, 0.8, 0.3, 0.85])
    got = rank_segments(segs, scores, 0.8, 3, nms_sigma=0.5)
    # Soft-NMS alone would keep the far, weak [50, 52] over [0, 7.5] (0.8 decayed to 0.26 by its tIoU 0.75
    # with [0, 10]); the tight variant is what high tIoUs need, so the three kept are hard NMS's three
    assert sorted(map(tuple, (p["segment"] for p in got))) == sorted(map(tuple, segs[nms(segs, scores, 0.8, 3)]))
    assert [p["segment"] for p in got] == [[0.0, 10.0], [20.0, 30.0], [0.0, 7.5]]  # ordered by decayed score
    assert [p["score"] for p in got] == sorted((p["score"] for p in got), reverse=True)
    assert got[2]["score"] == pytest.approx(0.8 * np.exp(-0.75 ** 2 / 0.5))
