"""Load C3D weights from a file safely, and say what was loaded.

Files are read with ``torch.load(..., weights_only=True)``: a pickle that would
run code is refused instead of executed. The state dict must match the network
key for key and shape for shape (fc8, the classifier, may be absent: no feature
layer needs it). Every mismatch is a UserError naming the file and the key.
The sha256 of the file goes into the store so features can be traced to weights.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import torch

from etspipe.errors import UserError
from extract_features.c3d import C3D

log = logging.getLogger(__name__)

UNTRAINED = "untrained"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from {'state_dict': ...} and 'module.' prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "unsafe pickle"
        raise UserError(f"{path}: not a plain weights file, refused to unpickle it ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # the weights-only unpickler fails in many ways on a file that is not a checkpoint at all
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: not a readable PyTorch weights file ({why})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_c3d_weights(model: C3D, path: str | Path) -> str:
    """Load `path` into `model` (checked key by key); returns the file's sha256."""
    state = read_state_dict(path)
    expected = model.state_dict()
    optional = {k for k in expected if k.startswith("fc8.")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise UserError(f"{path}: not C3D Sports-1M weights ({'; '.join(parts)})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            hint = "" if model.width_mult == 1.0 else f" (the network has width_mult {model.width_mult})"
            raise UserError(f"{path}: {key} has shape {tuple(tensor.shape)}, "
                            f"C3D needs {tuple(expected[key].shape)}{hint}")
    model.load_state_dict(state, strict=False)
    sha = file_sha256(path)
    log.info("loaded C3D weights %s (sha256 %s)", path, sha[:12])
    return sha


def warn_untrained() -> None:
    """Said on every run without weights: the features are then only good for tests and demos."""
    log.warning("!!! C3D has NO WEIGHTS: features come from an UNTRAINED network (fine for tests and "
                "demos, useless for real captioning). Pass --weights FILE (e.g. the Sports-1M c3d.pickle).")
