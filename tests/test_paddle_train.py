"""The seed's network through etspipe's own machinery: train (recipe, exact resume, batch parts, DDP),
fine-tune an imported run, evaluate and predict with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from py2_pickle import dumps_py27
from seed_net_golden import make_params
from test_ddp import run_two_ranks
from test_train import WORDS, make_corpus, tiny_cfg

from caption_model.architectures import build_captioner, load_model
from caption_model.dataset import collate, collate_parts
from caption_model.paddle_ets import PaddleETS
from caption_model.runs.checkpoint import load_checkpoint
from caption_model.train import _param_groups, fit, train
from pipeline import cli

pytestmark = pytest.mark.usefixtures("one_thread")
PADDLE = {"arch": "paddle_ets", "proj_dim": 12, "gru_dim": 8, "hidden_dim": 16, "embed_dim": 10}  # 12 != 2 x 8


def paddle_cfg(save_dir: Path, **train_kw) -> dict:
    cfg = tiny_cfg(save_dir, **train_kw)
    cfg["model"].update(PADDLE)
    cfg["train"]["noam_factor"] = 5.0
    return cfg


def test_paddle_ets_trains_learns_and_resumes_exactly(tmp_path: Path) -> None:
    store, ann = make_corpus(tmp_path, missing=0)
    result = fit(paddle_cfg(tmp_path / "run", epochs=12, valid_interval=0), str(store), [str(ann)], progress=False)
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    model, vocab, ckpt = load_model(tmp_path / "run")
    assert isinstance(model, PaddleETS) and model.embed.shape[0] == len(vocab) - 1
    # stop after 4 steps (mid-epoch 2), resume, and reach what a run that never stopped reaches
    train(paddle_cfg(tmp_path / "a", max_steps=4), str(store), [str(ann)], progress=False)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["step"] == 4
    train(paddle_cfg(tmp_path / "a", max_steps=100), str(store), [str(ann)], resume=str(tmp_path / "a"), progress=False)
    train(paddle_cfg(tmp_path / "b"), str(store), [str(ann)], progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 9
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name


def test_the_input_bias_alone_is_trained_without_weight_decay() -> None:
    """The seed's recipe: coupled L2 1e-4 on every weight except fc_0.b_0 (etspipe's ETS: on all)."""
    paddle = build_captioner(PADDLE, 6, 10)
    groups = _param_groups(paddle, 1e-4)
    names = {id(p): n for n, p in paddle.named_parameters()}
    assert [names[id(p)] for p in groups[1]["params"]] == ["input_b"] and groups[1]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) == len(list(paddle.parameters())) - 1 and groups[0]["weight_decay"] == 1e-4
    ets = build_captioner({"proj_dim": 8, "embed_dim": 8, "hidden_dim": 8, "attn_dim": 8}, 6, 10)
    assert len(_param_groups(ets, 1e-4)) == 1


@pytest.mark.parametrize("arch", ["ets", "paddle_ets"])
def test_a_batch_in_parts_has_the_whole_batchs_gradient(arch: str) -> None:
    """train.max_batch_rows: parts weighted by their tokens add up to the whole batch's mean-loss gradient."""
    torch.manual_seed(0)
    cfg = PADDLE if arch == "paddle_ets" else {"proj_dim": 8, "embed_dim": 8, "hidden_dim": 8, "attn_dim": 8,
                                                "dropout": 0.0}
    model = build_captioner(cfg, 6, 12).double()
    rng = np.random.default_rng(0)
    samples = [(rng.normal(size=(n, 6)), np.array([1] + list(rng.integers(4, 12, size=k)) + [2]), i)
               for i, (n, k) in enumerate([(9, 3), (2, 5), (7, 1), (4, 4), (1, 2)])]
    batch = collate(samples)
    batch.feats = batch.feats.double()
    parts = collate_parts(samples, 16).parts
    for p in parts:
        p.feats = p.feats.double()
    assert len(parts) > 2 and all(p.feats.shape[0] * p.feats.shape[1] <= 16 or p.feats.shape[0] == 1 for p in parts)
    assert sum(p.feats.shape[0] for p in parts) == 5
    whole = torch.autograd.grad(model.loss(batch.feats, batch.feat_mask, batch.tokens)[0],
                                [p for p in model.parameters() if p.requires_grad])
    total = sum(int((p.tokens[:, 1:] != 0).sum()) for p in parts)
    summed = None
    for p in parts:
        loss, _, n = model.loss(p.feats, p.feat_mask, p.tokens)
        g = torch.autograd.grad(loss * (n / total), [q for q in model.parameters() if q.requires_grad])
        summed = g if summed is None else [a + b for a, b in zip(summed, g, strict=True)]
    for a, b in zip(whole, summed, strict=True):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()  # both compute softmaxes in float32


def test_two_cpu_ranks_train_the_seed_network_to_identical_weights(tmp_path: Path) -> None:
    """DDP: W6 (which has no gradient) must not stall it; both ranks end with the same weights."""
    store, ann = make_corpus(tmp_path, n_videos=12, missing=0)
    a, b = run_two_ranks(paddle_cfg(tmp_path / "run", epochs=2, batch_size=4, device="cpu"), store, ann, tmp_path)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def _imported_run(tmp_path: Path) -> Path:
    """A small 'released' model in the seed's file layout, its dict.txt of the corpus' words, imported."""
    words = ["<s>", "<e>", "<unk>"] + WORDS
    sizes = dict(feat=16, fc=10, hid=8, dec=12, emb=6, vocab=len(words))
    (tmp_path / "ETS.pdparams").write_bytes(dumps_py27(make_params(sizes, seed=5)))
    (tmp_path / "dict.txt").write_text("".join(f"{w} 1\n" for w in words), encoding="utf-8")
    result = CliRunner().invoke(cli, ["import-weights", "paddle-ets", str(tmp_path / "ETS.pdparams"), "--dict",
                                      str(tmp_path / "dict.txt"), "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    return tmp_path / "imported"


def test_an_imported_run_fine_tunes_evaluates_and_predicts(tmp_path: Path) -> None:
    store, ann = make_corpus(tmp_path, missing=0)
    run = _imported_run(tmp_path)
    runner = CliRunner()
    tiny = ["-o", "data.num_workers=0", "-o", "train.val_meteor=false", "-o", "decode.max_len=6"]
    res = runner.invoke(cli, ["train", "--store", str(store), "--train", str(ann), "--init-from", str(run),
                              "--save-dir", str(tmp_path / "tuned"), "--epochs", "1", "--batch-size", "8", *tiny])
    assert res.exit_code == 0, res.output
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["vocab"] == load_checkpoint(run / "best.pt")["vocab"]  # the imported word ids are kept
    assert tuned["config"]["model"]["arch"] == "paddle_ets"
    out = tmp_path / "eval"
    res = runner.invoke(cli, ["evaluate", "--weights", str(run), "--store", str(store), "--annotations", str(ann),
                              "--out", str(out), *tiny])
    assert res.exit_code == 0, res.output
    result_file = next(p for p in out.glob("*.json") if not p.name.endswith("_scores.json"))
    results = json.loads(result_file.read_text())["results"]
    sentences = [e["sentence"] for entries in results.values() for e in entries]
    assert len(sentences) == 30 and all(sentences) and all(w in WORDS for s in sentences for w in s.split())
    assert "METEOR" in json.loads(next(out.glob("*_scores.json")).read_text())["average"]
    filelist = tmp_path / "list.txt"
    filelist.write_text("v_video001 1.0 4.0\nv_video002\n", encoding="utf-8")
    pred = tmp_path / "pred"
    res = runner.invoke(cli, ["predict", "--weights", str(run), "--store", str(store), "--filelist", str(filelist),
                              "--out", str(pred), "--plot", str(tmp_path / "plots"), "--html", *tiny])
    assert res.exit_code == 0, res.output
    result_file = next(p for p in pred.glob("*.json") if "attention" not in p.name)
    assert set(json.loads(result_file.read_text())["results"]) == {"v_video001", "v_video002"}
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2  # one attention plot per caption
    assert list(pred.glob("*.html"))  # the viewer's page


def test_the_seed_recipe_trains_from_its_config_file(tmp_path: Path) -> None:
    """`etspipe train --config configs/paddle_ets.yaml`: the recipe's settings reach the run (sizes overridden
    small here); its config records them for `--config run/config.yaml` to repeat."""
    store, ann = make_corpus(tmp_path, missing=0)
    small = [f"model.{k}={v}" for k, v in PADDLE.items() if k != "arch"]
    args = ["train", "--config", str(Path(__file__).parent.parent / "configs" / "paddle_ets.yaml"), "--store",
            str(store), "--train", str(ann), "--save-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8"]
    for item in [*small, "data.num_workers=0", "train.val_meteor=false", "decode.max_len=6"]:
        args += ["-o", item]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    cfg = load_checkpoint(tmp_path / "run" / "last.pt")["config"]
    assert cfg["model"]["arch"] == "paddle_ets" and cfg["data"]["max_rows"] == 0
    assert cfg["train"]["warmup_steps"] == 1000 and cfg["train"]["d_model"] == 512
    assert cfg["decode"]["length_norm"] == 0.0 and cfg["decode"]["beam_size"] == 3
    assert cfg["train"]["max_batch_rows"] == 65536 and cfg["train"]["weight_decay"] == 1e-4


def test_the_loader_hands_long_batches_over_in_parts_that_train_as_the_whole(tmp_path: Path) -> None:
    """train.max_batch_rows: the loader pads parts, never the whole batch (`collate_parts`), and a run in parts
    ends where the run on whole batches ends (the seed's network has no dropout; float rounding only)."""
    from caption_model.dataset import BatchParts

    rng = np.random.default_rng(0)
    samples = [(rng.normal(size=(n, 4)).astype(np.float32), np.array([1, 5, 2]), i)
               for i, n in enumerate([3, 40, 7, 12, 1, 25])]
    parted = collate_parts(samples, 48)
    assert isinstance(parted, BatchParts) and sorted(parted.index.tolist()) == list(range(6))
    assert all(p.feats.shape[0] * p.feats.shape[1] <= 48 or p.feats.shape[0] == 1 for p in parted.parts)
    store, ann = make_corpus(tmp_path, missing=0)
    whole = fit(paddle_cfg(tmp_path / "whole", epochs=2, valid_interval=0), str(store), [str(ann)], progress=False)
    parts = fit(paddle_cfg(tmp_path / "parts", epochs=2, valid_interval=0, max_batch_rows=100), str(store),
                [str(ann)], progress=False)
    assert whole.timing["steps"] == parts.timing["steps"] == 6
    for (name, a), b in zip(whole.model.state_dict().items(), parts.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=2e-5), name
