"""A training run's folder and starting point: new, resumed (--resume) or fine-tuned (--weights).

A new run owns its folder: another run's checkpoints there are an error unless
``--overwrite`` (left in place, an old last.pt or metrics.csv would mix with the
new run's, and `evaluate DIR` could pick the old model). The resolved config is
written next to the checkpoints as YAML, so a run can be repeated with
``etspipe train --config DIR/config.yaml``.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from caption_model.runs.checkpoint import BEST, LAST, find_last, load_checkpoint
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
# What a run writes into its folder; a new run with --overwrite removes exactly these.
RUN_FILES = (LAST, BEST, CONFIG_FILE, "metrics.csv", "vocab.txt", "skipped_videos.txt", "annotations_report.json")


def plain(obj: object) -> object:
    """JSON-like copy (the store metadata may hold numpy values), loadable with weights_only=True."""
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


@dataclass
class Start:
    """The config a run uses, its folder, and the checkpoint it continues (`ckpt`) or fine-tunes from (`init`)."""

    cfg: dict
    save_dir: Path
    resumed: bool
    ckpt: dict | None = None
    init: dict | None = None


# Keys a resumed run takes from the given config; all others come from the checkpoint (same run, same maths).
RUNTIME_KEYS = (("train", "epochs"), ("train", "device"), ("train", "log_interval"), ("train", "valid_interval"),
                ("train", "save_interval"), ("train", "max_steps"), ("train", "val_meteor"), ("data", "num_workers"))


def resumed_config(saved: dict, given: dict) -> dict:
    """The checkpoint's config, with only the runtime keys (more epochs, another device, ...) from `given`.

    `given` is a full config (reference values filled in), so a key counts as given
    only where it differs from configs/ets.yaml: a plain `--resume` keeps the run's
    own epochs, intervals and device instead of falling back to the reference values.
    Keys newer than the checkpoint come from `given`, so the result is complete.
    """
    from etspipe.config import reference_config

    ref = reference_config()
    cfg = copy.deepcopy(given)

    def changed(section: str, key: str) -> bool:
        """Given unlike configs/ets.yaml; a key ets.yaml no longer holds (an older checkpoint's) never is."""
        return section in ref and key in ref[section] and given[section][key] != ref[section][key]

    ignored = []
    for section, values in saved.items():
        for key, value in values.items():
            if (section, key) in RUNTIME_KEYS and changed(section, key):
                continue
            if section in ("model", "data", "train") and key != "save_dir" and changed(section, key) \
                    and given[section][key] != value:
                ignored.append(f"{section}.{key}")
            cfg.setdefault(section, {})[key] = copy.deepcopy(value)
    if ignored:
        logger.info("resume continues the checkpoint's run; not applying changed setting(s): %s", ", ".join(ignored))
    return cfg


def starting_point(cfg: dict, resume: str | None, weights: str | None) -> Start:
    """A run to continue (`--resume`), weights to fine-tune (`--weights`), or nothing."""
    if resume and weights:
        raise UserError("give either --resume (continue a run) or --weights (fine-tune), not both")
    if resume:
        ckpt = load_checkpoint(find_last(resume))
        if "optimizer" not in ckpt:
            raise UserError(f"{ckpt['path']} was imported, not trained here: nothing to resume; fine-tune it "
                            f"with --init-from {resume}")
        logger.info("resuming %s at epoch %d, step %d", ckpt["path"], ckpt["epoch"] + 1, ckpt["step"])
        # a resumed run keeps writing into its own folder
        return Start(resumed_config(ckpt["config"], cfg), Path(ckpt["path"]).parent, True, ckpt=ckpt)
    init = None
    if weights:
        init = load_checkpoint(weights)
        cfg["model"] = init["config"]["model"]  # the weights fix the architecture
    return Start(cfg, Path(cfg["train"]["save_dir"]), False, init=init)


def claim_folder(save_dir: Path, resumed: bool, overwrite: bool) -> None:
    """A new run owns its folder: another run's checkpoints there are an error unless --overwrite.

    Left in place, an old last.pt or metrics.csv would be mixed with the new
    run's (and `evaluate DIR` could pick the old model).
    """
    if resumed:
        return
    held = [name for name in (LAST, BEST) if (save_dir / name).exists()]
    if held and not overwrite:
        raise UserError(f"{save_dir} holds a training run ({', '.join(held)}): add --resume {save_dir} to "
                        "continue it, --overwrite to replace it, or choose another --save_dir")
    for name in RUN_FILES:
        (save_dir / name).unlink(missing_ok=True)
    shutil.rmtree(save_dir / "tensorboard", ignore_errors=True)


def write_run_files(start: Start, report: dict, skipped: dict[str, str]) -> None:
    save_dir = start.save_dir
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / CONFIG_FILE).write_text(
        "# the resolved config of this run: `etspipe train --config " + f"{save_dir / CONFIG_FILE}` repeats it\n"
        + yaml.safe_dump(plain(start.cfg), sort_keys=False), encoding="utf-8")
    (save_dir / "annotations_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"{vid}\t{why}" for vid, why in sorted(skipped.items())]
    (save_dir / "skipped_videos.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
