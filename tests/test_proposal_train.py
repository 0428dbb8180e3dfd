"""Proposal training on a tiny real store: it learns, checkpoints, resumes, and refuses bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from caption_model.proposals.infer import BEST, LAST, Proposer, load_proposal_checkpoint
from caption_model.proposals.train import train_proposals
from caption_model.scoring.proposal_metrics import ar_an
from etspipe.config import load_config
from etspipe.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

FPS, CLIP, STRIDE = 15.0, 16, 8
STORE_META = {"extractor": "random", "layer": "fc7", "dim": 8, "clip_len": CLIP, "stride": STRIDE,
              "dtype": "float32"}


def make_event_corpus(root: Path, n_videos: int = 24, dim: int = 8, seed: int = 0, meta: dict | None = None,
                      extra_rows: dict[str, int] | None = None) -> tuple[Path, Path]:
    """Videos of 14-30 rows (15 fps, 8-frame stride) with 2-3 events of 3-7 rows that the rows show.

    Inside an event every row carries the event's direction plus noise, so
    where events start and end is learnable; the annotation times are the row
    edges of those events. `extra_rows` adds store-only videos (id -> rows).
    """
    from features_store import open_store

    rng = np.random.default_rng(seed)
    ann, path = {}, root / "store.zarr"
    with open_store(str(path), "w", meta={**STORE_META, "dim": dim, **(meta or {})}) as store:
        for v in range(n_videos):
            vid, n = f"v_ev{v:03d}", int(rng.integers(14, 31))
            rows = rng.standard_normal((n, dim)).astype(np.float32) * 0.3
            times = (np.arange(n) * STRIDE + CLIP / 2) / FPS
            edges = np.concatenate([[0.0], (times[:-1] + times[1:]) / 2, [(n * STRIDE + CLIP / 2) / FPS]])
            t, stamps = int(rng.integers(0, 3)), []
            while t < n - 3 and len(stamps) < 3:
                length = int(rng.integers(3, 8))
                end = min(t + length, n)
                rows[t:end] += rng.standard_normal(dim).astype(np.float32) * 2
                stamps.append([round(float(edges[t]), 3), round(float(edges[end]), 3)])
                t = end + int(rng.integers(1, 4))
            duration = float(edges[-1])
            ann[vid] = {"duration": duration, "timestamps": stamps, "sentences": ["something happens"] * len(stamps)}
            store.write_video(vid, rows, {"fps": FPS, "duration": duration, "n_frames": int(duration * FPS)})
        for vid, n in (extra_rows or {}).items():
            store.write_video(vid, rng.standard_normal((n, dim)), {"fps": FPS, "n_frames": n * STRIDE})
    ann_path = root / "train.json"
    ann_path.write_text(json.dumps(ann))
    return path, ann_path


def tiny_cfg(save_dir: Path, epochs: int = 12, **proposals) -> dict:
    cfg = load_config()
    cfg["train"]["save_dir"] = str(save_dir)
    cfg["data"].update(val_fraction=0.2, num_workers=0)
    cfg["proposals"].update({"anchors": 4, "proj_dim": 16, "hidden_dim": 16, "epochs": epochs, "batch_size": 4,
                             "lr": 1e-2, "dropout": 0.0, "device": "cpu", **proposals})
    return cfg


@pytest.mark.parametrize("model, metric", [("sst", "val_auc"), ("bmn", "val_ar10")])
def test_training_learns_events_and_beats_an_untrained_model(tmp_path, model, metric):
    store, ann = make_event_corpus(tmp_path)
    extra = {"bm_input_dropout": 0.0, "bm_cell_dim": 16} if model == "bmn" else {}  # 8-d rows: nothing to spare
    run = train_proposals(tiny_cfg(tmp_path / "run", model=model, **extra), str(store), [str(ann)], progress=False)
    assert run.best_path.name == BEST and run.last_path.name == LAST and run.last_path.is_file()
    # the held-out figure rises with training; for bmn the top 10, since on videos of 14-30 rows the
    # 100 proposals that hard NMS keeps cover most of the grid whatever the scores (AUC ~70 untrained)
    vals = [h[metric] for h in run.history]
    assert max(vals) > vals[0] + (5 if metric == "val_auc" else 0.05), vals
    ckpt = load_proposal_checkpoint(tmp_path / "run")
    assert ckpt["path"].endswith(BEST) and ckpt["store_meta"]["dim"] == 8 and len(ckpt["anchors"]) >= 2
    assert (tmp_path / "run" / "proposals_metrics.csv").read_text().count("\n") == 13


def test_resume_continues_to_the_same_weights(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=10)
    full = train_proposals(tiny_cfg(tmp_path / "full", epochs=3), str(store), [str(ann)], progress=False)
    train_proposals(tiny_cfg(tmp_path / "part", epochs=2), str(store), [str(ann)], progress=False)
    resumed = train_proposals(tiny_cfg(tmp_path / "elsewhere", epochs=3), str(store), [str(ann)],
                              resume=str(tmp_path / "part"), progress=False)
    assert resumed.last_path.parent == tmp_path / "part" and not (tmp_path / "elsewhere").exists()
    assert [h["epoch"] for h in resumed.history] == [3]
    for name, tensor in full.net.state_dict().items():
        assert torch.allclose(tensor, resumed.net.state_dict()[name], atol=1e-6), name


def test_video_shorter_than_one_row_is_proposed_whole(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=10, extra_rows={"v_tiny": 1})
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    from features_store import open_store

    with open_store(str(store), "a") as s:
        s.write_video("v_blip", np.ones((1, 8)), {"fps": FPS, "duration": 0.4, "n_frames": 6})
        props = Proposer.load(run.best_path).propose(s, "v_blip", 0.8, 10)
    assert props and all(0.0 <= p["segment"][0] < p["segment"][1] <= 0.4 for p in props)  # within its one row
    assert props[0]["segment"][0] == 0.0


def test_store_too_coarse_for_anchors_is_one_line(tmp_path):
    from features_store import open_store

    path = tmp_path / "coarse.zarr"
    ann = {f"v_{i}": {"duration": 60.0, "timestamps": [[1.0, 5.0], [10.0, 14.0]], "sentences": ["a", "b"]}
           for i in range(4)}
    with open_store(str(path), "w", meta={**STORE_META, "dim": 4}) as store:
        for vid in ann:  # one row per 20 s: events of 4 s cannot be told apart
            store.write_video(vid, np.ones((3, 4)), {"duration": 60.0})
    (tmp_path / "a.json").write_text(json.dumps(ann))
    with pytest.raises(UserError, match=r"coarse.zarr.*cannot carry proposal anchors") as err:
        train_proposals(tiny_cfg(tmp_path / "run"), str(path), [str(tmp_path / "a.json")], progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_model_of_another_store_is_refused_naming_both(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store, ann = make_event_corpus(tmp_path / "a", n_videos=8)
    other, _ = make_event_corpus(tmp_path / "b", n_videos=8, dim=12, meta={"layer": "pool5"})
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    with pytest.raises(UserError) as err:
        train_proposals(tiny_cfg(tmp_path / "x", epochs=2), str(other), [str(ann)], resume=str(run.last_path),
                        progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(store) in msg and str(other) in msg and "fc7 8-d" in msg and "pool5 12-d" in msg


def test_ar_an_of_trained_model_is_well_formed(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=10)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=2), str(store), [str(ann)], progress=False)
    from features_store import open_store

    gt = {k: v["timestamps"] for k, v in json.loads(ann.read_text()).items()}
    with open_store(str(store)) as s:
        props = {vid: Proposer.load(run.best_path).propose(s, vid, 0.8, 100) for vid in gt}
    curve = ar_an(gt, props)
    assert np.all(np.diff(curve.ar) >= -1e-12) and 0 <= curve.auc <= 100 and curve.an[-1] == pytest.approx(100)


def test_one_unreadable_video_does_not_stop_the_corpus(tmp_path, monkeypatch):
    from caption_model.proposals.infer import propose_corpus
    from features_store import open_store

    store, ann = make_event_corpus(tmp_path, n_videos=8)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    cfg = tiny_cfg(tmp_path / "run")
    with open_store(str(store)) as s:
        ids = s.complete_ids()
        real_rows = s.rows

        def rows(vid):
            if vid == ids[1]:
                raise OSError("chunk unreadable")
            return real_rows(vid)

        monkeypatch.setattr(s, "rows", rows)
        props, failed = propose_corpus(Proposer.load(run.best_path), s, ids + ["v_nothere"], cfg["proposals"])
    assert set(failed) == {ids[1], "v_nothere"} and "chunk unreadable" in failed[ids[1]]
    assert set(props) == set(ids) - {ids[1]} and all(props[v] for v in props)


@pytest.mark.parametrize("model", ["sst", "bmn"])
def test_a_non_finite_proposal_loss_is_one_line(tmp_path, monkeypatch, model):
    from caption_model.proposals import train as proposal_train

    store, ann = make_event_corpus(tmp_path, n_videos=8)
    net_class = proposal_train.ProposalNet if model == "sst" else proposal_train.BMNet
    real = net_class.forward

    def poisoned(self, feats, lengths):
        first, second = real(self, feats, lengths)
        return first * float("nan"), second

    monkeypatch.setattr(net_class, "forward", poisoned)
    with pytest.raises(UserError) as err:
        train_proposals(tiny_cfg(tmp_path / "run", epochs=1, model=model), str(store), [str(ann)], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "proposal loss is nan" in msg and "proposals.lr" in msg


def test_a_proposal_checkpoint_of_another_shape_is_one_line_naming_it(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=8)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    ckpt = torch.load(run.last_path, weights_only=False)
    ckpt["config"]["proposals"]["hidden_dim"] = 24  # e.g. sizes overridden since it was trained
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(UserError) as err:
        Proposer.load(bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "does not fit" in msg
    del ckpt["anchors"]
    torch.save(ckpt, bad)
    with pytest.raises(UserError, match="cannot build"):
        Proposer.load(bad)


def test_calibrated_threshold_is_the_best_f1_on_held_out_videos():
    from caption_model.proposals.calibrate import calibrate_threshold

    gt = {"a": [[0, 10], [20, 30]], "b": [[5, 15]], "c": [[0, 4]]}
    props = {"a": [{"segment": [0, 10], "score": 0.9}, {"segment": [40, 50], "score": 0.8},
                   {"segment": [21, 30], "score": 0.3}],
             "b": [{"segment": [5, 14], "score": 0.7}, {"segment": [0, 2], "score": 0.2}],
             "c": [{"segment": [9, 12], "score": 0.6}]}
    # brute force over every threshold: events = proposals >= t (at most 10), pooled P/R at tIoU 0.5
    best_f1, best_t = -1.0, None
    for t in sorted({p["score"] for v in props.values() for p in v}, reverse=True):
        ev = {v: sorted((p for p in ps if p["score"] >= t), key=lambda p: -p["score"]) for v, ps in props.items()}
        good = 0  # events meeting a reference that no better event of their video met
        for v in ev:
            found = set()
            for p in ev[v]:
                new = {i for i, g in enumerate(gt[v]) if _tiou(p["segment"], g) >= 0.5} - found
                good += bool(new)
                found |= new
        met = sum(any(_tiou(p["segment"], g) >= 0.5 for p in ev[v]) for v in gt for g in gt[v])
        n_ev, n_ref = sum(map(len, ev.values())), sum(map(len, gt.values()))
        f1 = 2 * (good / n_ev) * (met / n_ref) / ((good / n_ev) + (met / n_ref))
        if f1 > best_f1:
            best_f1, best_t = f1, t
    got = calibrate_threshold(props, gt, max_events=10)
    assert got["threshold"] == best_t == 0.3 and got["f1"] == pytest.approx(best_f1)
    assert got["events_per_video"] == pytest.approx(5 / 3) and got["refs_per_video"] == pytest.approx(4 / 3)
    assert calibrate_threshold(props, gt, max_events=1)["threshold"] == 0.7  # the cap changes the answer


def test_a_second_event_on_a_found_event_is_not_counted_as_correct():
    from caption_model.proposals.calibrate import calibrate_threshold

    gt = {"a": [[0, 10]], "b": [[0, 10], [20, 30]]}
    props = {"a": [{"segment": [0, 10], "score": 0.9}, {"segment": [0, 9], "score": 0.8},
                   {"segment": [1, 10], "score": 0.7}],
             "b": [{"segment": [0, 10], "score": 0.95}, {"segment": [20, 29], "score": 0.5}]}
    got = calibrate_threshold(props, gt, max_events=10)
    # counting every hit, 0.5 would look perfect (5 of 5 events meet a reference, F1 1.0); but two of them
    # repeat one event: 3 of 5 are correct (F1 0.75), and 0.9 (2 of 2, recall 2/3: F1 0.8) is the best
    assert got["threshold"] == 0.9 and got["precision"] == 1.0 and got["recall"] == pytest.approx(2 / 3)
    only_distinct = {"a": props["a"][:1], "b": props["b"]}
    assert calibrate_threshold(only_distinct, gt, max_events=10)["threshold"] == 0.5


def _tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_training_keeps_a_calibrated_threshold_that_dense_captioning_uses(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=16)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=3), str(store), [str(ann)], progress=False)
    ckpt = load_proposal_checkpoint(run.best_path)
    cal = ckpt["calibration"]
    assert cal["threshold"] is not None and 0.0 < cal["f1"] <= 1.0 and cal["n_videos"] >= 1
    proposer = Proposer.load(run.best_path)
    pcfg = tiny_cfg(tmp_path / "x")["proposals"]
    assert pcfg["score_threshold"] is None  # the default: calibrated
    assert proposer.event_threshold(pcfg) == cal["threshold"]
    assert proposer.event_threshold({**pcfg, "score_threshold": 0.25}) == 0.25  # the config overrides it
    assert "val_events_f1" in (tmp_path / "run" / "proposals_metrics.csv").read_text().splitlines()[0]


def test_a_checkpoint_from_before_calibration_keeps_its_raw_scores_and_threshold(tmp_path):
    """Such a model was used with raw scores and 0.5: rescaling its scores but keeping 0.5 would drop events."""
    store, ann = make_event_corpus(tmp_path, n_videos=8)
    run = train_proposals(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    ckpt = torch.load(run.last_path, weights_only=False)
    assert Proposer.load(run.last_path).pos_share is not None
    del ckpt["calibration"]
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    proposer = Proposer.load(old)
    assert proposer.pos_share is None and proposer.event_threshold({"score_threshold": None}) == 0.5


def test_a_corpus_below_the_held_out_floor_is_said_once(tmp_path, caplog):
    store, ann = make_event_corpus(tmp_path, n_videos=10)
    with caplog.at_level("WARNING"):
        run = train_proposals(tiny_cfg(tmp_path / "run", epochs=2, min_val_videos=50), str(store), [str(ann)],
                              progress=False)
    said = [r.getMessage() for r in caplog.records if "min_val_videos" in r.getMessage()]
    assert len(said) == 1 and "10 annotated videos" in said[0] and "on 2 videos" in said[0], said
    assert len(run.history) == 2  # said once, not once per epoch
