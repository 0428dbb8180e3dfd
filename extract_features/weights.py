"""Load network weights (C3D, ResNet-152) from a file safely, and say what was loaded.

Files are read with ``torch.load(..., weights_only=True)``: a pickle that would
run code is refused instead of executed. The state dict must match the network
key for key and shape for shape (the classifier, C3D's fc8 or ResNet's fc, may be
absent: no feature needs it). Every mismatch is a UserError naming the file and the key.
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
from extract_features.resnet152 import ResNet152

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


# sha256 prefixes of torchvision's IMAGENET1K_V1 ResNet-152 files (the hash in their names): the 2017
# resnet152-b121ed2d.pth and its re-serialisation resnet152-394f9c45.pth. IMAGENET1K_V2 (f82ba261) is
# another network's weights as far as the recipe goes.
RESNET152_V1_FILE = "resnet152-394f9c45.pth"
RESNET152_V1_SHA256_PREFIXES = ("394f9c45", "b121ed2d")


def load_resnet_weights(model: ResNet152, path: str | Path) -> str:
    """Load a torchvision ResNet-152 state dict into `model`; returns the file's sha256.

    Checked in the network's own key order, so the one line of a file that does
    not fit names the first key that is missing or has another shape (and the
    shapes). ``num_batches_tracked`` (absent from files saved before PyTorch 0.4,
    unused in eval mode) and ``fc`` (the classifier) may be missing.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    hint = "" if model.width_mult == 1.0 else f" (the network has width_mult {model.width_mult})"
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked") or key.startswith("fc."):
                continue
            raise UserError(f"{path}: not torchvision ResNet-152 weights: it has no {key} "
                            f"(ResNet-152 needs {tuple(tensor.shape)}){hint}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(f"{path}: not torchvision ResNet-152 weights: {key} has shape "
                            f"{tuple(state[key].shape)}, ResNet-152 needs {tuple(tensor.shape)}{hint}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise UserError(f"{path}: not torchvision ResNet-152 weights: unexpected key {unexpected[0]} "
                        f"({len(unexpected)} in all)")
    model.load_state_dict(state, strict=False)
    sha = file_sha256(path)
    if not sha.startswith(RESNET152_V1_SHA256_PREFIXES):
        log.warning("%s is not one of torchvision's IMAGENET1K_V1 ResNet-152 files (%s; sha256 %s...): rows "
                    "will not mean what ActivityNet's frame features mean unless these are the same weights",
                    path, RESNET152_V1_FILE, sha[:8])
    log.info("loaded ResNet-152 weights %s (sha256 %s)", path, sha[:12])
    return sha


def warn_untrained(network: str = "c3d") -> None:
    """Said on every run without weights: the features are then only good for tests and demos."""
    if network == "resnet152":
        log.warning("!!! ResNet-152 has NO WEIGHTS: features come from an UNTRAINED network (fine for tests and "
                    "demos, useless for real captioning). Pass --resnet-weights FILE (torchvision's "
                    "%s, IMAGENET1K_V1).", RESNET152_V1_FILE)
        return
    log.warning("!!! C3D has NO WEIGHTS: features come from an UNTRAINED network (fine for tests and "
                "demos, useless for real captioning). Pass --weights FILE (e.g. the Sports-1M c3d.pickle).")
