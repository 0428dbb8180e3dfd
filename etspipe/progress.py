"""Progress bars that draw only on a terminal.

A bar redrawn ten times a second is useful to a person watching and noise in
a log: a redirected tiny training run once wrote 132 KB of tqdm frames to its
log file. Every stage makes its bars here, so the rule is one rule: draw when
the bar's stream is a terminal and the caller wants progress, else stay silent
(log lines still report what was done).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm


def on_terminal(stream: IO | None = None) -> bool:
    """Whether `stream` (default: stderr, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) that is disabled unless `enabled` and its stream is a terminal."""
    stream = kwargs.setdefault("file", sys.stderr)
    kwargs["disable"] = not (enabled and on_terminal(stream))
    return tqdm(iterable, **kwargs)
