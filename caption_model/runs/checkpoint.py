"""Checkpoints: atomic writes, safe loads, and the model + vocabulary they rebuild.

A checkpoint is a plain dict saved with ``torch.save``:

``format, version, model, optimizer, schedule, rng, epoch, batch_in_epoch, step,
vocab, feat_dim, config, store_meta, val_videos, best, metrics``

`epoch`/`batch_in_epoch` are the position of the *next* batch, so resuming
replays exactly the batches that were not yet trained on. Only plain data and
tensors are stored (numpy RNG state as a list), so it loads with
``torch.load(weights_only=True)``: a checkpoint file cannot run code.

Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the target with ``os.replace``: a kill at any moment leaves either
the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import torch

from etspipe.errors import UserError

FORMAT = "etspipe-ets"
VERSION = 1
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _resolve(path: str | Path, prefer: tuple[str, ...]) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in prefer:
            if (path / name).is_file():
                return path / name
        raise UserError(f"no checkpoint ({' or '.join(prefer)}) in folder {path}")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def find_best(save_dir: str | Path) -> Path:
    """`best.pt` of a run folder (or `last.pt` when no validation ever ran)."""
    return _resolve(save_dir, (BEST, LAST))


def find_last(path: str | Path) -> Path:
    """The checkpoint to resume from: the file itself, or `last.pt` of a folder."""
    return _resolve(path, (LAST, BEST))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file (a folder means its best checkpoint); a bad file is a UserError."""
    path = find_best(path) if Path(path).is_dir() else _resolve(path, ())
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; anything else would fail in pickle's words
        raise UserError(f"{path}: not a checkpoint (give best.pt, last.pt or the run folder holding them)")
    return read_checkpoint_file(path, FORMAT, "caption-model", map_location)


def read_checkpoint_file(path: Path, fmt: str, what: str, map_location: str | torch.device = "cpu") -> dict:
    """`torch.load` of one of our checkpoints: a truncated or foreign file, or another `format`, is one error line.

    Shared by the captioner's and the proposal model's checkpoints (`what` names
    which in the message); the dict gets its own `path`.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, no traceback
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise UserError(f"{path}: not an etspipe {what} checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def load_weights(module: torch.nn.Module, state: dict, path: str | Path, what: str) -> None:
    """`module.load_state_dict(state)`, with a checkpoint of another shape or config as one line naming the file.

    Such a checkpoint comes from another version's model or from a run whose
    sizes were overridden (``-o model.hidden_dim=...``); torch's own message is
    a page of tensor names, cut here to its first line.
    """
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: this {what} checkpoint does not fit the model its config builds "
                        f"(another version, or sizes changed since: {first[:200]})") from None


def check_feat_dim(ckpt: dict, feat_dim: int, store_path: str | Path) -> None:
    """A store whose feature dimension differs from the checkpoint's cannot feed its model."""
    if int(ckpt["feat_dim"]) != int(feat_dim):
        raise UserError(
            f"feature dimension mismatch: store {store_path} has {feat_dim}-d features, "
            f"checkpoint {ckpt.get('path', '?')} was trained on {ckpt['feat_dim']}-d features"
        )
