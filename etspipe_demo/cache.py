"""The files of a demo data set on disk, and when a set already there can be reused.

Layout of a set folder: `videos/v_demoNNNN.mp4`, `{train,val,test}.json`
(ActivityNet format), `{train,val,test}_meta.json` (events and order flags, see
`etspipe_demo.dataset`) and `manifest.json`, written last: it records the
parameters and the video ids, so a set is reused only when it was finished and
made with the same parameters by the same generator version.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from etspipe_demo.params import DemoParams

FORMAT_VERSION = 1
# Bump when the same parameters would give different files, so old sets are not reused.
GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


def write_json(path: Path, data: Any) -> None:
    """Write through a side file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def set_paths(out_dir: Path) -> dict[str, Path]:
    """Every file of a set: `videos_dir`, `manifest`, `<split>` and `<split>_meta`."""
    paths = {"out_dir": out_dir, "videos_dir": out_dir / "videos", "manifest": out_dir / MANIFEST_NAME}
    for split in SPLITS:
        paths[split] = out_dir / f"{split}.json"
        paths[f"{split}_meta"] = out_dir / f"{split}_meta.json"
    return paths


def reusable(paths: dict[str, Path], params: DemoParams) -> dict | None:
    """The old manifest when it was written for the same parameters and all its files are there."""
    try:
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (manifest.get("format_version"), manifest.get("generator_version")) != (FORMAT_VERSION, GENERATOR_VERSION) \
            or manifest.get("params") != params.to_json():
        return None
    videos = [paths["videos_dir"] / f"{vid}.mp4" for vid in manifest.get("video_ids", [])]
    needed = [paths[k] for k in SPLITS] + [paths[f"{k}_meta"] for k in SPLITS] + videos
    if not videos or not all(f.is_file() for f in needed):
        return None
    return manifest


def manifest_for(params: DemoParams, video_ids: list[str], counts: dict, seconds: float) -> dict:
    return {"generator": "etspipe_demo", "format_version": FORMAT_VERSION, "generator_version": GENERATOR_VERSION,
            "params": params.to_json(), "video_ids": video_ids, "counts": counts, "seconds": seconds}


def describe(paths: dict[str, Path], manifest: dict, reused: bool) -> dict:
    """What `generate_demo_dataset` returns: the paths as strings, counts, params and a summary line."""
    out: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    counts = manifest["counts"]
    out["counts"] = counts
    out["params"] = manifest["params"]
    out["reused"] = reused
    out["seconds"] = manifest.get("seconds")
    out["summary"] = (
        f"{counts['videos']} videos ({counts['seconds_of_video']:.0f} s, ~{counts['c3d_rows']} C3D rows), "
        + ", ".join(f"{s} {counts[s]['videos']} videos / {counts[s]['segments']} segments "
                    f"({counts[s]['order_dependent']} order-dependent)" for s in SPLITS)
        + (" [reused]" if reused else ""))
    return out


def remove_old_videos(paths: dict[str, Path]) -> None:
    """Delete the videos an earlier manifest lists (only those: the folder may hold the user's files)."""
    try:
        old = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for vid in old.get("video_ids", []):
        f = paths["videos_dir"] / f"{vid}.mp4"
        if f.is_file() and re.fullmatch(r"v_demo\d+", vid):
            f.unlink()
