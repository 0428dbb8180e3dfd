"""The Python, numpy and torch (and CUDA) random states, as a checkpoint holds them.

Saving and restoring all of them is what lets a resumed run draw the same
dropout masks as a run that never stopped (caption_model.train, exact resume).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The states as plain lists (numpy's as a list), so a checkpoint needs no numpy pickles."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Undo `rng_state`; a CUDA state is restored only where CUDA is present."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    """One seed for all three generators, so every rank builds the same initial weights."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
