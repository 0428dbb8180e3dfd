"""Reading the user's JSON files, with every failure turned into one line that names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from etspipe.errors import UserError


def read_json(path: str | Path, kind: str) -> Any:
    """Parse `path`; `kind` ("annotation file", "result file", ...) is how the message names it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{kind} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{kind} {path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {kind} {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
