"""The ActivityNet Captions result file: the one output format of evaluate and predict.

```json
{"version": "VERSION 1.0",
 "results": {"v_uqiMw7tQ1Cc": [{"timestamp": [1.23, 4.53], "sentence": "..."}]},
 "external_data": {"used": true, "details": "C3D fc7 features"}}
```

The official scorer refuses a file without all three top-level fields, so they
are always written; a file read back is validated entry by entry, and a bad one
is a `UserError` that names the file and the first bad place, never a traceback
deep inside the scorer.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from etspipe.errors import UserError
from etspipe.files import read_json

RESULT_VERSION = "VERSION 1.0"
REQUIRED_FIELDS = ("version", "results", "external_data")

Results = dict[str, list[dict[str, Any]]]


def make_result(results: Mapping[str, list[dict[str, Any]]], details: str, used: bool = True) -> dict[str, Any]:
    """The whole result document around a `{video_id: [entries]}` mapping."""
    return {
        "version": RESULT_VERSION,
        "results": {vid: list(entries) for vid, entries in results.items()},
        "external_data": {"used": bool(used), "details": details},
    }


def entry(start: float, end: float, sentence: str) -> dict[str, Any]:
    """One caption entry (times rounded to milliseconds, as published result files are)."""
    return {"timestamp": [round(float(start), 3), round(float(end), 3)], "sentence": sentence}


def is_seconds_pair(x: Any) -> bool:
    """``[start, end]``: two finite numbers (booleans are not numbers here)."""
    return (isinstance(x, (list, tuple)) and len(x) == 2
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in x))


def document_problem(doc: Any, what: str, item_problem: Callable[[dict, str], str | None]) -> str | None:
    """First reason `doc` is not an ActivityNet-style document (`{"version", "results": {video: [item]},
    "external_data"}`) whose items pass `item_problem(item, where)`, or None.

    The result format and the proposal-task format share this frame and differ only in their items.
    """
    if not isinstance(doc, dict):
        return "top level must be a JSON object"
    missing = [f for f in REQUIRED_FIELDS if f not in doc]
    if missing:
        return f"missing field(s) {', '.join(missing)} (need version, results, external_data)"
    if not isinstance(doc["results"], dict):
        return f"'results' must map video ids to lists of {what}"
    for vid, items in doc["results"].items():
        if not isinstance(items, list):
            return f"results[{vid!r}] must be a list"
        for i, item in enumerate(items):
            problem = item_problem(item, f"results[{vid!r}][{i}]")
            if problem:
                return problem
    return None


def _caption_problem(item: Any, where: str) -> str | None:
    if not isinstance(item, dict):
        return f"{where} must be an object with timestamp and sentence"
    if not is_seconds_pair(item.get("timestamp")):
        return f"{where}.timestamp must be [start, end] in seconds"
    if not isinstance(item.get("sentence"), str):
        return f"{where}.sentence must be a string"
    return None


def _problem(doc: Any) -> str | None:
    """First reason `doc` is not a valid result document, or None."""
    return document_problem(doc, "captions", _caption_problem)


def validate_result(doc: Any, source: str = "result") -> dict[str, Any]:
    """Return `doc` if it is a valid result document, else raise UserError naming `source`."""
    problem = _problem(doc)
    if problem:
        raise UserError(f"{source}: not a valid ActivityNet result file: {problem}")
    return doc


def read_result(path: str | Path) -> dict[str, Any]:
    """Read and validate a result file; any problem is a UserError naming the file."""
    return validate_result(read_json(path, "result file"), str(path))


def write_json_atomic(path: str | Path, data: Any, *, compact: bool = False) -> Path:
    """Write JSON next to its final name, then rename: a crash never leaves half a file.

    Indented for people to read; `compact` (no spaces, no final newline) for
    documents that are mostly numbers, such as the attention sidecar, where an
    indent doubles the size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 1}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, **layout)
            if not compact:
                fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_result(path: str | Path, doc: dict[str, Any]) -> Path:
    """Validate and write a result document atomically."""
    validate_result(doc, str(path))
    return write_json_atomic(path, doc)


def default_result_path(results_dir: str | Path, stem: str) -> Path:
    """`<results_dir>/<stem>_<YYYYmmdd-HHMMSS>.json`, so runs never overwrite each other."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(results_dir) / f"{stem}_{stamp}.json"
    n = 1
    while path.exists():
        path = Path(results_dir) / f"{stem}_{stamp}-{n}.json"
        n += 1
    return path
