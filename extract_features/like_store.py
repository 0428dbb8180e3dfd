"""New raw videos into an existing store, extracted exactly like the videos already in it.

`etspipe predict` captions raw video files with a model trained on a store's
features. The features of a new file must mean what the stored ones mean, so
they are made with the settings the store recorded when it was extracted
(layer, clip length, stride, frame rate, frame size, crop, width, pixel
normalisation, short-video padding), not with whatever the current config
says. The caption model never decodes video (docs/ARCHITECTURE.md's layering): the CLI calls
`extract_like_store` for the raw files, then captions store ids.

A store made with a PCA carries its projection (`pca.stored_projection`); new
files go through that same projection. A file is matched to a stored video by
its content (`inputs.file_fingerprint`, recorded at extraction), not only by
its name: a different file under a stored video's name is extracted anew under
``<id>-<hash>`` (said in one line), and the stored video is left as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etspipe.errors import UserError
from extract_features.c3d import feature_dim
from extract_features.corpus import EXTRACTOR_NAME
from extract_features.inputs import file_fingerprint
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA, stored_projection
from extract_features.runner import Extractor, extract_one, make_extractor

log = logging.getLogger(__name__)

_STORE_KEYS = ("layer", "clip_len", "stride", "fps", "frame_size", "crop", "width_mult")
_NORMALISATION_KEYS = ("channel_order", "mean", "scale")


@dataclass(frozen=True)
class Outcome:
    """What became of one file: its store id, or why it has none (one line for the user)."""

    video_id: str | None
    error: str | None = None
    extracted: bool = False  # False: the store already held it

    @property
    def ok(self) -> bool:
        return self.video_id is not None


def options_of_store(cfg: dict, store_meta: dict) -> ExtractOptions:
    """Extraction settings of a store's features: its record wins over `cfg["extract"]`.

    The config supplies only what does not change the features (batch size,
    decode workers, precision, device, video backend).
    """
    if store_meta.get("extractor") != EXTRACTOR_NAME:
        raise UserError(f"the store's features were not made by etspipe's C3D extractor "
                        f"({store_meta.get('extractor')}); extract or import this video into the store first")
    ext = dict(cfg["extract"])
    for key in _STORE_KEYS:
        if key in store_meta:
            ext[key] = store_meta[key]
    norm = store_meta.get("normalisation") or {}
    for key in _NORMALISATION_KEYS:
        if key in norm:
            ext[key] = norm[key]
    if isinstance(store_meta.get("pad_short"), dict) and "rule" in store_meta["pad_short"]:
        ext["pad_short"] = store_meta["pad_short"]["rule"]
    return ExtractOptions.from_config({**cfg, "extract": ext})


def _refusal(store_meta: dict, weights: str | None, pca: IncrementalPCA | None) -> str | None:
    """Why no new video can be extracted like this store's, or None."""
    recorded = store_meta.get("weights")
    if recorded not in (None, "untrained") and not weights:
        return (f"not in the store, and extracting it needs the C3D weights the store's features were made "
                f"with (weights {str(recorded)[:12]}...): pass --c3d-weights")
    if store_meta.get("pca") and pca is None:
        return ("not in the store, and the store's features went through a PCA it does not hold (made by an "
                "older etspipe); extract it with `etspipe extract` into the store")
    return None


def _stored_id(store, vid: str, path: Path, available: set[str]) -> tuple[str, bool]:
    """(the id this file has in the store, whether it is stored already): its name's id, unless the
    stored video of that name came from another file (then ``<id>-<hash of this file>``)."""
    if vid not in available:
        return vid, False
    recorded = store.video_meta(vid).get("source_fingerprint")
    if recorded is None:  # extracted before fingerprints were recorded (or imported): the name decides
        return vid, True
    fingerprint = file_fingerprint(path)
    if recorded == fingerprint:
        return vid, True
    other = f"{vid}-{fingerprint['sha256_ends'][:10]}"
    if other not in available:
        log.warning("%s is not the file the store's video %r was extracted from (size or content differ); "
                    "extracting it anew as %r", path, vid, other)
    return other, other in available


class _LazyExtractor:
    """C3D built once, on the first file that needs it (a list of stored ids never loads it)."""

    def __init__(self, opts: ExtractOptions, weights: str | None, trained: bool):
        self.opts, self.weights, self.trained = opts, weights, trained
        self._model: Extractor | None = None

    def __call__(self, path: Path):
        if self._model is None:
            self._model = make_extractor(self.opts, self.weights if self.trained else None,
                                         self.opts.torch_device(), warn=self.trained)
        return extract_one(path, self.opts, self._model)


def _extractor_for(cfg: dict, meta: dict, weights: str | None, device: str | None,
                   pca: IncrementalPCA | None) -> _LazyExtractor:
    opts = options_of_store(cfg, meta)
    opts = dataclasses.replace(opts, device=device) if device else opts
    if pca is not None and pca.dim != feature_dim(opts.layer, opts.width_mult):
        raise UserError(f"the store's PCA takes {pca.dim}-d features, its layer {opts.layer} gives "
                        f"{feature_dim(opts.layer, opts.width_mult)}")
    return _LazyExtractor(opts, weights, meta.get("weights") not in (None, "untrained"))


def extract_like_store(paths: Sequence[str | Path], store_path: str | Path, *, cfg: dict,
                       weights: str | None = None, device: str | None = None) -> dict[Path, Outcome]:
    """Extract raw video files into the existing store at `store_path` with the store's own settings.

    Returns, per path, an `Outcome`: the store id (the file's name without
    extension; already stored ids are reused, not extracted again) or a
    one-line reason. One bad file never stops the others; a store that cannot
    be opened is a UserError. `device` (auto | cpu | cuda) overrides
    ``extract.device``.
    """
    from features_store import open_store, video_id_from_path

    store = open_store(str(store_path), "a", durable=cfg["store"]["durable"])
    try:
        meta = dict(store.meta)
        available = set(store.complete_ids())
        pca = stored_projection(store) if meta.get("pca") else None
        refusal = _refusal(meta, weights, pca)
        extract = None
        out: dict[Path, Outcome] = {}
        for raw in paths:
            path = Path(raw)
            if path in out:
                continue
            try:
                vid, stored = _stored_id(store, video_id_from_path(path), path, available)
                if stored:
                    out[path] = Outcome(vid)
                    continue
                if refusal:
                    raise UserError(refusal)
                if extract is None:
                    extract = _extractor_for(cfg, meta, weights, device, pca)
                log.info("extracting %s (not in the store yet)", path)
                rows, vmeta = extract(path)
                if pca is not None:
                    rows, vmeta = pca.project(rows, vmeta)
                store.write_video(vid, rows, vmeta)
                available.add(vid)
                out[path] = Outcome(vid, extracted=True)
            except UserError as exc:
                msg = str(exc)
                out[path] = Outcome(None, msg if msg.startswith(str(path)) else f"{path}: {msg}")
        return out
    finally:
        store.close()
