"""Training end to end on a tiny real feature store: files, learning, validation, resume, fine-tune, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caption_model.architectures import load_model
from caption_model.dataset import Item, SegmentDataset
from caption_model.runs.checkpoint import load_checkpoint
from caption_model.train import fit, train
from etspipe.config import load_config
from etspipe.errors import UserError

WORDS = "a man woman dog child plays runs jumps throws ball guitar drum in the park on stage with red blue".split()


pytestmark = pytest.mark.usefixtures("one_thread")


def make_corpus(root: Path, n_videos: int = 10, dim: int = 16, seed: int = 0, missing: int = 1,
                failed: int = 0) -> tuple[Path, Path]:
    """An ActivityNet-style annotation file and a real feature store of random rows (30 fps, stride 8).

    Each video's features carry its own pattern so that captions are learnable;
    `missing` videos are annotated but absent from the store, `failed` are marked failed.
    """
    from features_store import open_store

    rng = np.random.default_rng(seed)
    ann, store_path = {}, root / "store.zarr"
    meta = {"extractor": "random", "layer": "fc7", "dim": dim, "clip_len": 16, "stride": 8, "dtype": "float32"}
    with open_store(str(store_path), "w", meta=meta) as store:
        for v in range(n_videos + missing + failed):
            vid = f"v_video{v:03d}"
            duration = float(rng.uniform(8, 20))
            stamps, sentences = [], []
            for _ in range(3):
                start = float(rng.uniform(0, duration - 2))
                stamps.append([round(start, 2), round(min(duration, start + rng.uniform(1, 8)), 2)])
                sentences.append(" ".join(rng.choice(WORDS, rng.integers(3, 8))) + ".")
            ann[vid] = {"duration": duration, "timestamps": stamps, "sentences": sentences}
            n_rows = int((duration * 30 - 16) // 8) + 1
            if v < n_videos:
                rows = (rng.standard_normal((n_rows, dim)) * 0.1 + rng.standard_normal(dim)).astype(np.float32)
                store.write_video(vid, rows, {"source": f"{vid}.mp4", "fps": 30.0, "n_frames": int(duration * 30),
                                              "duration": duration, "clip_len": 16, "stride": 8})
            elif v >= n_videos + missing:
                store.mark_failed(vid, "unreadable", "test")
    ann_path = root / "train.json"
    ann_path.write_text(json.dumps(ann))
    return store_path, ann_path


def tiny_cfg(save_dir: Path, **train_kw) -> dict:
    cfg = load_config(None, ["model.proj_dim=32", "model.embed_dim=32", "model.hidden_dim=32", "model.attn_dim=16",
                             "model.dropout=0.1", "data.min_word_count=1", "data.val_fraction=0.2",
                             "data.num_workers=0", "train.batch_size=8", "train.epochs=3", "train.log_interval=1",
                             "train.warmup_steps=10", "train.noam_factor=20.0", f"train.save_dir={save_dir}"])
    cfg["train"]["val_meteor"] = False
    cfg["train"].update(train_kw)
    return cfg


def assert_resume_equals_straight_run(resumed: Path, tmp_path: Path, store: Path, ann: Path) -> None:
    """Exact resume: the resumed run's last.pt equals, bit for bit, that of a run that never stopped."""
    train(tiny_cfg(tmp_path / "straight"), str(store), [str(ann)], progress=False)
    a = load_checkpoint(resumed / "last.pt")
    b = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert a["step"] == b["step"] == 9
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name
    assert a["best"] == b["best"]


def validation_by_hand(checkpoint: Path, store: Path, ann: Path) -> tuple[float, list[tuple[str, str]]]:
    """Token-mean cross-entropy, and (reference, greedy caption) pairs, of the segments of the checkpoint's
    held-out videos, one segment at a time: what a validation of those weights must compute and score."""
    from caption_model.decode import greedy
    from caption_model.formats.text import tokenize

    model, vocab, ckpt = load_model(checkpoint)
    annotations = json.loads(ann.read_text())
    segments = [(vid, s, e, sentence) for vid in ckpt["val_videos"]
                for (s, e), sentence in zip(annotations[vid]["timestamps"], annotations[vid]["sentences"], strict=True)]
    items = [Item(vid, float(s), float(e), tuple(vocab.encode(tokenize(sentence), 30)))
             for vid, s, e, sentence in segments]
    dataset = SegmentDataset(str(store), items, max_rows=ckpt["config"]["data"]["max_rows"])
    nll_sum, n_tokens, pairs = 0.0, 0, []
    with torch.no_grad():
        for i, (_, _, _, sentence) in enumerate(segments):
            rows, tokens, _ = dataset[i]
            feats, mask = torch.tensor(rows)[None], torch.ones(1, len(rows), dtype=torch.bool)
            _, nll, n = model.loss(feats, mask, torch.tensor(tokens)[None])
            nll_sum, n_tokens = nll_sum + float(nll) * n, n_tokens + n
            caption = greedy(model, feats, mask, ckpt["config"]["decode"]["max_len"])[0].tokens
            pairs.append((" ".join(tokenize(sentence)), vocab.decode(caption) or "<empty>"))
    return nll_sum / n_tokens, sorted(pairs)


def test_train_learns_validates_and_writes_its_files(tmp_path, monkeypatch):
    from caption_model.runs.train_log import MeteorScorer

    scored = []  # what each validation gave METEOR (pycocoevalcap's, checked in test_densevid) and got back
    score = MeteorScorer.score

    def recording(self, references, hypotheses):
        value = score(self, references, hypotheses)
        scored.append((sorted((references[k][0], hypotheses[k] or "<empty>") for k in references), value))
        return value

    monkeypatch.setattr(MeteorScorer, "score", recording)
    store, ann = make_corpus(tmp_path, missing=1, failed=1)
    cfg = tiny_cfg(tmp_path / "run", epochs=24, val_meteor=True, valid_interval=12)
    result = fit(cfg, str(store), [str(ann)], progress=False)
    run = tmp_path / "run"
    assert result.best_path == run / "best.pt"
    for name in ("last.pt", "best.pt", "vocab.txt", "metrics.csv", "skipped_videos.txt", "annotations_report.json"):
        assert (run / name).is_file(), name
    skipped = (run / "skipped_videos.txt").read_text().splitlines()
    assert skipped == ["v_video010\tmissing from store", "v_video011\tfailed in store: unreadable"]
    train_losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert np.mean(train_losses[-3:]) < 0.6 * np.mean(train_losses[:3])  # memorising 24 captions
    vals = [h for h in result.history if h["kind"] == "val"]
    assert [h["epoch"] for h in vals] == [12, 24]
    # the last validation, redone here from the weights it validated (last.pt) on the held-out videos' segments:
    # the same loss, and METEOR given exactly these (reference, greedy caption) pairs, its score reported
    want_loss, want_pairs = validation_by_hand(run / "last.pt", store, ann)
    assert len(want_pairs) == 6 and len(scored) == 2  # 2 held-out videos x 3 captions; 2 validations
    assert vals[-1]["val_loss"] == pytest.approx(want_loss, rel=1e-5)
    assert scored[-1][0] == want_pairs
    assert vals[-1]["val_meteor"] == scored[-1][1] and [v["val_meteor"] for v in vals] == [v for _, v in scored]
    assert vals[-1]["val_meteor"] > 0
    best_val = max(vals, key=lambda h: h["val_meteor"])  # best.pt follows the highest METEOR
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["epoch"] == best_val["epoch"] and ckpt["best"]["value"] == best_val["val_meteor"]
    assert ckpt["feat_dim"] == 16 and ckpt["step"] == ckpt["epoch"] * 3 and ckpt["store_meta"]["extractor"] == "random"
    assert ckpt["best"]["metric"] == "val_meteor" and len(ckpt["val_videos"]) == 2
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert ckpt["vocab"]["itos"][:4] == ["<pad>", "<s>", "<e>", "<unk>"]
    model, vocab, _ = load_model(run / "best.pt")
    assert len(vocab) == model.vocab_size and (run / "vocab.txt").read_text().count("\n") == len(vocab)
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("time,kind,epoch,step,loss,lr,tokens_per_s")


DRIVER = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import caption_model.train as tr
cfg, store, ann, kill_after = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
original, saves = tr.save_checkpoint, []
def save_then_die(state, path):
    out = original(state, path)
    saves.append(path)
    if len(saves) == kill_after:
        print("killing at step", state["step"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return out
tr.save_checkpoint = save_then_die
tr.train(cfg, store, [ann], progress=False)
"""


def test_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    store, ann = make_corpus(tmp_path, missing=0)
    # 24 training segments / batch 8 = 3 steps per epoch; saves: last@2, last@3, best@3, last@4 <- killed there.
    cfg = tiny_cfg(tmp_path / "killed", save_interval=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(driver), json.dumps(cfg), str(store), str(ann), "4"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert "killing at step 4" in proc.stdout  # mid-epoch 2
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["batch_in_epoch"] == 1

    resumed = train(tiny_cfg(tmp_path / "elsewhere"), str(store), [str(ann)], resume=str(tmp_path / "killed"),
                    progress=False)
    assert resumed.parent == tmp_path / "killed"  # a resumed run stays in its folder
    assert_resume_equals_straight_run(tmp_path / "killed", tmp_path, store, ann)


def test_finetune_from_weights_and_dimension_mismatch(tmp_path):
    (tmp_path / "a").mkdir()
    store, ann = make_corpus(tmp_path / "a", missing=0)
    train(tiny_cfg(tmp_path / "run", epochs=1), str(store), [str(ann)], progress=False)
    tuned = fit(tiny_cfg(tmp_path / "tuned", epochs=1, valid_interval=0), str(store), [str(ann)],
                weights=str(tmp_path / "run" / "last.pt"), progress=False)
    assert tuned.best_path == tmp_path / "tuned" / "last.pt"  # no validation: the last one
    ckpt = load_checkpoint(tuned.best_path)
    assert ckpt["step"] == 3 and ckpt["vocab"] == load_checkpoint(tmp_path / "run" / "last.pt")["vocab"]
    (tmp_path / "b").mkdir()
    other_store, other_ann = make_corpus(tmp_path / "b", dim=12, missing=0)
    with pytest.raises(UserError, match="feature dimension mismatch.*12-d.*16-d"):
        train(tiny_cfg(tmp_path / "x"), str(other_store), [str(other_ann)], weights=str(tmp_path / "run" / "last.pt"))
    with pytest.raises(UserError, match="feature dimension mismatch"):
        train(tiny_cfg(tmp_path / "x"), str(other_store), [str(other_ann)], resume=str(tmp_path / "run"))


def test_no_usable_video_is_a_user_error(tmp_path):
    store, _ = make_corpus(tmp_path, n_videos=2, missing=0)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"v_elsewhere": {"duration": 5, "timestamps": [[0, 1]], "sentences": ["hi"]}}))
    with pytest.raises(UserError, match="none of the videos"):
        train(tiny_cfg(tmp_path / "run"), str(store), [str(other)], progress=False)
    assert (tmp_path / "run" / "skipped_videos.txt").read_text() == "v_elsewhere\tmissing from store\n"


def test_dataset_reads_rows_lazily_with_the_alignment_rule(tmp_path):
    from features_store import open_store

    store_path = tmp_path / "s.zarr"
    rows = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)  # 40 rows: centres at (8 i + 8) / 30 s
    with open_store(str(store_path), "w", meta={"extractor": "t", "dim": 4, "clip_len": 16, "stride": 8,
                                                 "dtype": "float32"}) as store:
        store.write_video("v_x", rows, {"fps": 30.0, "duration": 11.0, "clip_len": 16, "stride": 8})
    items = [Item("v_x", 0.0, 11.0, (1, 5, 2)), Item("v_x", 2.0, 2.0, (1, 2)), Item("v_x", 12.0, 12.0, (1, 2)),
             Item("v_x", 1.0, 2.0, (1, 2)), Item("v_x", 2.0, 1.0, (1, 2))]
    ds = SegmentDataset(str(store_path), items, max_rows=8)
    long, _, _ = ds[0]
    assert long.shape == (8, 4) and long[0, 0] == 0 and long[-1, 0] == rows[-1, 0]  # uniform subsample, ends kept
    zero, _, _ = ds[1]  # zero length: the row nearest to t = 2 s, i.e. row 6 (centre 1.87 s)
    assert zero.tolist() == [rows[6].tolist()]
    past, _, _ = ds[2]  # outside the store's video: its last row
    assert past.tolist() == [rows[-1].tolist()]
    inside, _, _ = ds[3]  # centres inside [1, 2]: rows 3..6
    assert inside[:, 0].tolist() == rows[3:7, 0].tolist()
    # reversed: read with start and end swapped, as evaluation and prediction read it (docs/ARCHITECTURE.md)
    swapped, _, _ = ds[4]
    assert swapped.tolist() == inside.tolist()


def test_resume_keeps_the_run_settings_but_takes_runtime_keys():
    from caption_model.runs.run_folder import resumed_config as _resumed_config
    from etspipe.config import reference_config

    saved = {"model": {"proj_dim": 32}, "data": {"num_workers": 0, "max_rows": 8},
             "train": {"batch_size": 8, "epochs": 3, "device": "cpu", "save_dir": "a"}}
    given = reference_config()  # a loaded config is complete: every key of configs/ets.yaml
    given["model"]["proj_dim"], given["data"]["max_rows"] = 512, 256
    given["train"].update(batch_size=64, epochs=given["train"]["epochs"] + 7, save_dir="b")
    cfg = _resumed_config(saved, given)
    assert cfg["model"]["proj_dim"] == 32 and cfg["train"]["batch_size"] == 8 and cfg["data"]["max_rows"] == 8
    assert cfg["train"]["epochs"] == given["train"]["epochs"]  # changed from the reference: the user asked for it
    # equal to the reference values (what a plain `--resume` passes): the run keeps its own
    assert cfg["train"]["device"] == "cpu" and cfg["data"]["num_workers"] == 0
    plain = _resumed_config(saved, reference_config())
    assert plain["train"]["epochs"] == 3 and plain["model"]["proj_dim"] == 32


def test_new_run_refuses_a_folder_holding_a_run_unless_overwrite(tmp_path):
    store, ann = make_corpus(tmp_path, missing=0)
    cfg = tiny_cfg(tmp_path / "run", epochs=1, valid_interval=0)
    fit(cfg, str(store), [str(ann)], progress=False)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == cfg  # the resolved config, loadable as --config
    before = (run / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"holds a training run \(last.pt\).*--resume.*--overwrite"):
        fit(tiny_cfg(run, epochs=2, seed=1), str(store), [str(ann)], progress=False)
    assert (run / "last.pt").read_bytes() == before  # refused before touching anything
    again = fit(tiny_cfg(run, epochs=2, seed=1, valid_interval=0), str(store), [str(ann)], progress=False,
                overwrite=True)
    assert load_checkpoint(again.last_path)["step"] == 6  # a fresh run, not a continuation of the old one
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[3]) for r in rows] == list(range(1, 7))  # only the new run's log lines
    assert load_config(run / "config.yaml")["train"]["seed"] == 1


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    import signal

    import caption_model.train as tr

    store, ann = make_corpus(tmp_path, missing=0)
    original = tr.NoamSchedule.step

    def step_then_interrupt(self):
        original(self)
        if self.step_num == 4:  # mid-epoch 2, with no checkpoint of the interval kind (save_interval 0)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(tr.NoamSchedule, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match=r"checkpoint saved at step 4: add --resume .*interrupted"):
        train(tiny_cfg(tmp_path / "interrupted"), str(store), [str(ann)], progress=False)
    assert load_checkpoint(tmp_path / "interrupted" / "last.pt")["batch_in_epoch"] == 1
    monkeypatch.setattr(tr.NoamSchedule, "step", original)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    train(tiny_cfg(tmp_path / "x"), str(store), [str(ann)], resume=str(tmp_path / "interrupted"), progress=False)
    assert_resume_equals_straight_run(tmp_path / "interrupted", tmp_path, store, ann)


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch):
    import caption_model.train as tr

    store, ann = make_corpus(tmp_path, n_videos=3, missing=0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_build", interrupted)
    with pytest.raises(KeyboardInterrupt, match="before a checkpoint was saved; rerun the same command"):
        train(tiny_cfg(tmp_path / "run"), str(store), [str(ann)], progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_non_finite_loss_is_one_line_naming_the_step_and_what_to_try(tmp_path):
    from caption_model.runs.train_log import IntervalStats

    stats = IntervalStats()
    stats.add(torch.tensor(float("nan")), tokens=10, segments=2)
    with pytest.raises(UserError) as err:
        stats.summary(step=42, lr=1e-3)
    msg = str(err.value)
    assert "\n" not in msg and "step 42" in msg and "learning rate" in msg and "store verify" in msg
