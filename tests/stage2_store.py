"""Real (small) feature stores and checkpoints for the stage-2 tests: no stand-in with its own alignment.

A store is written through `features_store` with the layout of a real local
extraction: 30 fps, clip 16, stride 8, rows at (i*8 + 8) / 30 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from caption_model.formats.text import Vocab
from caption_model.model import ETS
from caption_model.runs.checkpoint import FORMAT, VERSION, save_checkpoint
from etspipe.config import load_config
from features_store import open_store

DIM = 16
FPS, CLIP, STRIDE = 30.0, 16, 8
STORE_META = {"extractor": "c3d-sports1m", "layer": "fc7", "clip_len": CLIP, "stride": STRIDE,
              "weights": "untrained", "dtype": "float32"}


def n_rows_for(duration: float) -> int:
    """Rows of a video of `duration` seconds: one clip every STRIDE frames that fits (at least one)."""
    return max(1, (int(duration * FPS) - CLIP) // STRIDE + 1)


def make_store(path: Path, durations: dict[str, float], dim: int = DIM, meta: dict | None = None,
               seed: int = 0) -> Path:
    """A Zarr store with one video per id, `durations[id]` seconds long, random rows."""
    rng = np.random.default_rng(seed)
    with open_store(str(path), "w", meta={**STORE_META, "dim": dim, **(meta or {})}) as store:
        for vid, duration in durations.items():
            n = n_rows_for(duration)
            store.write_video(vid, rng.normal(size=(n, dim)).astype(np.float32),
                              {"fps": FPS, "n_frames": int(duration * FPS), "duration": duration,
                               "source": f"{vid}.mp4"})
    return path


def make_checkpoint(path: Path, feat_dim: int = DIM, store_meta: dict | None = None, max_rows: int = 256) -> Path:
    """A small untrained ETS checkpoint in the trainer's format."""
    torch.manual_seed(0)
    cfg = load_config()
    cfg["model"].update(proj_dim=16, embed_dim=8, hidden_dim=16, attn_dim=8)
    cfg["data"]["max_rows"] = max_rows
    vocab = Vocab(["<pad>", "<s>", "<e>", "<unk>", "a", "man", "dog", "runs", "jumps"])
    model = ETS(cfg["model"], feat_dim, len(vocab))
    state = {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "vocab": vocab.to_dict(),
             "feat_dim": feat_dim, "config": cfg, "epoch": 1,
             "store_meta": store_meta or {**STORE_META, "dim": feat_dim}}
    return save_checkpoint(state, path)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
