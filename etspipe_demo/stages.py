"""Reuse of the demo's expensive stages on a rerun: fingerprints, `stages.json`, stage timing.

Each expensive stage records a fingerprint of what decided its output in
`<out>/stages.json`: the data parameters for the videos, plus the `extract` and
`store` sections for the features, plus the `data`, `model`, `train` sections
for the checkpoint. A rerun with the same fingerprint reuses the stage (the
videos and features are skipped, a finished training run is not touched, an
interrupted one resumes from `last.pt`); a changed fingerprint redoes that
stage and the ones after it, so an edited config never meets stale features or
a stale model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from etspipe_demo.cache import write_json

STAGES_FILE = "stages.json"
# Keys that change where or how verbosely a stage runs, not what it produces.
_NEUTRAL_KEYS = {"train": {"save_dir", "log_interval", "device"},
                 "extract": {"batch_size", "decode_workers", "device"},
                 "data": {"num_workers"}}


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Print a stage header and record its wall time under its short name."""
    click.secho(f"\n== {name} ==", bold=True)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name.split(" ", 1)[1].split(" (")[0]] = time.perf_counter() - t0


def fingerprint(*parts: Any) -> str:
    """Short hash of the settings that decide a stage's output (neutral keys removed)."""
    def clean(part: Any) -> Any:
        if isinstance(part, dict) and part.get("__section__") in _NEUTRAL_KEYS:
            drop = _NEUTRAL_KEYS[part["__section__"]]
            return {k: v for k, v in part.items() if k not in drop}
        return part

    text = json.dumps([clean(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def section(cfg: dict, name: str) -> dict:
    """A config section tagged with its name, so `fingerprint` knows which keys are neutral."""
    return {"__section__": name, **cfg.get(name, {})}


def read_stages(out_dir: Path) -> dict[str, str]:
    try:
        return json.loads((out_dir / STAGES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_stages(out_dir: Path, stages: dict[str, str]) -> None:
    write_json(out_dir / STAGES_FILE, stages)


def remove_store(store_path: Path) -> None:
    """The store and the PCA side files `extract_corpus` keeps beside it."""
    shutil.rmtree(store_path, ignore_errors=True)
    shutil.rmtree(store_path.with_name(store_path.name + ".raw.zarr"), ignore_errors=True)
    store_path.with_name(store_path.name + ".pca.npz").unlink(missing_ok=True)


def training_state(save_dir: Path) -> tuple[int, int] | None:
    """(epochs done, epochs planned) of the run in `save_dir`, or None when there is none."""
    from caption_model.runs.checkpoint import LAST, load_checkpoint

    if not (save_dir / LAST).is_file():
        return None
    ckpt = load_checkpoint(save_dir / LAST)
    return int(ckpt["epoch"]), int(ckpt["config"]["train"]["epochs"])
