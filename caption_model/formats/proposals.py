"""ActivityNet's proposal-task file, and the ground truth a proposal file is scored against.

```json
{"version": "VERSION 1.0",
 "results": {"v_uqiMw7tQ1Cc": [{"segment": [1.23, 4.53], "score": 0.91}, ...]},
 "external_data": {"used": true, "details": "C3D fc7 features; proposals from proposals_best.pt"}}
```

`evaluate --dense` writes its proposals in this layout (every proposal of every
video, up to ``proposals.max_proposals``, before the events threshold), and
`evaluate --proposals FILE` scores any such file, ours or someone else's.
ActivityNet's `Evaluation/eval_proposal.py` refuses a file without all three
top-level fields, so they are required here too; a bad file is one
`UserError` naming the file and the first bad place.

The ground truth of a proposal file is every timestamp of every video of the
annotation files, as written (no cleaning: the official script reads the
segments as they are). Two layouts are read: ActivityNet Captions
(``{video: {"timestamps": [[s, e], ...], ...}}``, one file per split, several
files merged) and the ``{"database": {video: {"subset", "annotations":
[{"segment": [s, e], ...}]}}}`` layout of ActivityNet v1.3 and YouCook2, where
only the videos of ``subset`` count (``validation`` by default, as in the
official script).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caption_model.formats.results import document_problem, is_seconds_pair
from etspipe.errors import UserError
from etspipe.files import read_json

PROPOSAL_VERSION = "VERSION 1.0"
DEFAULT_SUBSET = "validation"

Proposals = dict[str, list[dict[str, Any]]]


def proposals_path_for(results_path: str | Path) -> Path:
    """Where `evaluate --dense` puts the proposals of a result file: ``<stem>_proposals.json`` beside it."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.stem + "_proposals.json")


def make_proposals(proposals: Mapping[str, Sequence[Mapping[str, Any]]], details: str,
                   used: bool = True) -> dict[str, Any]:
    """The whole proposal document around ``{video: [{"segment": [s, e], "score": x}]}`` (scores kept exact)."""
    return {
        "version": PROPOSAL_VERSION,
        "results": {vid: [{"segment": [float(p["segment"][0]), float(p["segment"][1])], "score": float(p["score"])}
                          for p in items] for vid, items in proposals.items()},
        "external_data": {"used": bool(used), "details": details},
    }


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _proposal_problem(item: Any, where: str) -> str | None:
    if not isinstance(item, dict):
        return f"{where} must be an object with segment and score"
    if not is_seconds_pair(item.get("segment")):
        return f"{where}.segment must be [start, end] in seconds"
    if not _is_number(item.get("score")):
        return f"{where}.score must be a finite number"
    return None


def _problem(doc: Any) -> str | None:
    """First reason `doc` is not a valid proposal document, or None."""
    return document_problem(doc, "proposals", _proposal_problem)


def validate_proposals(doc: Any, source: str = "proposals") -> dict[str, Any]:
    """Return `doc` if it is a valid proposal document, else raise UserError naming `source`."""
    problem = _problem(doc)
    if problem:
        raise UserError(f"{source}: not a valid ActivityNet proposal file: {problem}")
    return doc


def read_proposals(path: str | Path) -> dict[str, Any]:
    """Read and validate a proposal file; any problem is a UserError naming the file."""
    return validate_proposals(read_json(path, "proposal file"), str(path))


def write_proposals(path: str | Path, doc: dict[str, Any]) -> Path:
    """Validate and write a proposal document atomically (temp file, then rename)."""
    from caption_model.formats.results import write_json_atomic

    validate_proposals(doc, str(path))
    return write_json_atomic(path, doc)


def _segments(path: Path, vid: str, stamps: Any) -> list[list[float]]:
    if not isinstance(stamps, list):
        raise UserError(f"{path}: video {vid} has no list of segments")
    out = []
    for t in stamps:
        if not is_seconds_pair(t):
            raise UserError(f"{path}: video {vid} has a segment that is not [start, end]: {t!r}")
        out.append([float(t[0]), float(t[1])])
    return out


def _file_ground_truth(path: Path, subset: str | None) -> dict[str, list[list[float]]]:
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of video ids to annotations, got {type(data).__name__}")
    db = data.get("database")
    if isinstance(db, dict) and all(isinstance(v, dict) for v in db.values()):
        gt = {}
        for vid, entry in db.items():
            if subset is not None and "subset" in entry and entry["subset"] != subset:
                continue
            anns = entry.get("annotations", [])
            if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
                raise UserError(f"{path}: video {vid} needs a list of annotations with a segment each")
            gt[str(vid)] = _segments(path, vid, [a.get("segment") for a in anns])
        if not gt:
            raise UserError(f"{path}: no video of subset {subset!r} (choose another with --subset)")
        return gt
    gt = {}
    for vid, entry in data.items():
        if not isinstance(entry, dict) or "timestamps" not in entry:
            raise UserError(f"{path}: video {vid} needs 'timestamps'")
        gt[str(vid)] = _segments(path, vid, entry["timestamps"])
    if not gt:
        raise UserError(f"{path}: the file has no videos")
    return gt


def read_ground_truth(paths: Sequence[str | Path], subset: str | None = DEFAULT_SUBSET) -> dict[str, list[list[float]]]:
    """Video id -> every ground-truth segment of all `paths` (a video in several files gets all of them)."""
    if not paths:
        raise UserError("no annotation file given")
    gt: dict[str, list[list[float]]] = {}
    for path in map(Path, paths):
        for vid, segments in _file_ground_truth(path, subset).items():
            gt.setdefault(vid, []).extend(segments)
    return gt
