"""etspipe: videos to sentences. The Python API, and the shared ground of the stages.

For notebooks and other programs (README, "From Python"):

    from etspipe import Captioner, open_store, score

`Captioner` (a trained or imported run: `.caption(video, segments)`, `.dense(video)`), `open_store`
(the feature-store reader) and `score` (the official ActivityNet Captions averages) live in
`etspipe_flows.api`, over the same code paths as the CLI; they are loaded on first use, so that
importing `etspipe` (which every stage does for its errors and config) loads no stage and no torch.

The three stage packages (`extract_features`, `features_store`, `caption_model`)
depend on this small package and never on each other's internals, except that
both stages use `features_store`, which is their contract.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Caption", "Captioner", "UserError", "open_store", "score", "__version__"]
_API = {"Caption", "Captioner", "open_store", "score"}


def __getattr__(name: str) -> Any:
    """The public API, imported when first asked for (see the module docstring)."""
    if name in _API:
        return getattr(importlib.import_module("etspipe_flows.api"), name)
    if name == "UserError":
        return importlib.import_module("etspipe.errors").UserError
    raise AttributeError(f"module 'etspipe' has no attribute {name!r}")
