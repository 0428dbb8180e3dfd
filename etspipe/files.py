"""Reading the user's JSON files, with every failure turned into one line that names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from etspipe.errors import UserError


def read_text(path: str | Path, kind: str) -> str:
    """The UTF-8 text of `path`; `kind` ("file list", "annotation file", ...) is how the message names it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{kind} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{kind} {path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {kind} {path}: {exc}") from None


def read_json(path: str | Path, kind: str) -> Any:
    """Parse `path` as JSON, with the same one-line errors as `read_text`."""
    text = read_text(path, kind)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
