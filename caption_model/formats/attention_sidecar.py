"""The attention sidecar: where the model looked, saved beside a result file for pages to draw.

The HTML viewer (`etspipe_view`) must open without torch or the feature store,
so what `--plot` draws as PNGs is also written as plain JSON next to the result
file (`<result stem>_attention.json`):

```json
{"format": "etspipe-attention", "version": 1,
 "videos": {"v_x": {"duration": 120.5,
                    "entries": {"0": {"timestamp": [1.0, 9.5], "sentence": "a man ...",
                                      "words": ["a", "man", "...", "<e>"],
                                      "row_times": [1.2, 1.5, ...],
                                      "attention": [[0.01, ...], ...]}}}}}
```

`entries` is keyed by the index of the entry in the result file's list for that
video; `attention` has one list per word (words x rows) and `row_times` gives
the centre time in seconds of each feature row. `timestamp` and `sentence`
repeat the result entry so a reader can tell a stale sidecar from a matching
one. Only json and numpy here (stage 2 calls it; no click, no page code).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caption_model.formats.results import write_json_atomic

SIDECAR_FORMAT = "etspipe-attention"
SIDECAR_VERSION = 1
DECIMALS = 4  # attention weights kept to 1e-4: the page quantises to 8 bits anyway


def sidecar_path_for(results_path: str | Path) -> Path:
    """Where the sidecar of a result file lives (the viewer looks there by default)."""
    path = Path(results_path)
    return path.with_name(path.stem + "_attention.json")


class AttentionSidecar:
    """Collects attention per (video, result entry index), then writes the sidecar once."""

    def __init__(self) -> None:
        self.videos: dict[str, dict[str, Any]] = {}

    def add(self, video_id: str, index: int, words: Sequence[str], attention: np.ndarray,
            row_times: Sequence[float], timestamp: Sequence[float], sentence: str,
            duration: float | None = None) -> None:
        """Record the attention (len(words) x len(row_times)) of entry `index` of `video_id`."""
        attn = np.asarray(attention, dtype=np.float64)
        times = np.asarray(row_times, dtype=np.float64).reshape(-1)
        if attn.ndim != 2 or attn.shape != (len(words), len(times)):
            raise ValueError(f"attention {attn.shape} does not fit {len(words)} words x {len(times)} rows")
        video = self.videos.setdefault(video_id, {"entries": {}})
        if duration is not None:
            video["duration"] = round(float(duration), 3)
        video["entries"][str(int(index))] = {
            "timestamp": [round(float(t), 3) for t in timestamp],
            "sentence": sentence,
            "words": [str(w) for w in words],
            "row_times": [round(float(t), 3) for t in times],
            "attention": np.round(attn, DECIMALS).tolist(),
        }

    def __len__(self) -> int:
        return sum(len(v["entries"]) for v in self.videos.values())

    def document(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "videos": self.videos}

    def write(self, path: str | Path) -> Path:
        """Write atomically (a crash never leaves half a sidecar), compact: it is mostly numbers."""
        return write_json_atomic(path, self.document(), compact=True)

