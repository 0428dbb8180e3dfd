"""New raw videos into an existing store, extracted exactly like the videos already in it.

`etspipe predict` captions raw video files with a model trained on a store's
features. The features of a new file must mean what the stored ones mean, so
they are made with the settings the store recorded when it was extracted
(layer, clip length, stride, frame rate, frame size, crop, width, pixel
normalisation, short-video padding), not with whatever the current config
says. The caption model never decodes video (docs/ARCHITECTURE.md's layering): the CLI calls
`extract_like_store` for the raw files, then captions store ids.

A store made with a PCA carries its projection (`pca.stored_projection`); new
files go through that same projection. A store made with a mean cube
(`extract.mean_cube`) needs the same cube file again (checked by its sha256).
An imported store has no extraction settings of its own; one that records the
recipe of its rows (the official ActivityNet C3D import) is extracted by that
recipe (`extract_features.recipe`), given the weights and projection files.
A store of ActivityNet's ResNet-152 frame recipe (imported, extracted with
`extract --recipe activitynet-resnet152`, or the working store of a model
trained on such rows) is extracted by that recipe (`resnet_recipe`), given the
ResNet-152 weights unless its rows are untrained. A file is matched to a stored
video by its content (`inputs.file_fingerprint`, recorded at extraction), not only by
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
from extract_features import resnet_recipe
from extract_features.c3d import feature_dim
from extract_features.corpus import EXTRACTOR_NAME
from extract_features.inputs import file_fingerprint
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA, load_projection, stored_projection
from extract_features.recipe import note_mean, recipe_options, recipe_projection, recipe_refusal
from extract_features.runner import Extractor, extract_one, make_extractor
from extract_features.weights import file_sha256
from features_store.recipes import RESNET_RECIPE, recipe_of

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


def options_of_store(cfg: dict, store_meta: dict, mean_cube: str | None = None) -> ExtractOptions:
    """Extraction settings of a store's features: its record wins over `cfg["extract"]`.

    The config supplies only what does not change the features (batch size,
    decode workers, precision, device, video backend). A store whose rows
    were made with a mean cube needs that cube's file as `mean_cube`.
    """
    if resnet_recipe.is_resnet_store(store_meta):
        return resnet_recipe.options_of_store(cfg, store_meta, mean_cube)
    if store_meta.get("extractor") != EXTRACTOR_NAME:
        recipe = recipe_of(store_meta)
        if recipe is None:
            raise UserError(f"the store's features were not made by etspipe's C3D extractor "
                            f"({store_meta.get('extractor')}) and it records no recipe to make them by; "
                            "extract or import this video into the store first")
        return recipe_options(cfg, recipe, mean_cube)
    ext = dict(cfg["extract"])
    ext["mean_cube"] = _stored_cube(store_meta, mean_cube)
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


def _stored_cube(store_meta: dict, mean_cube: str | None) -> str | None:
    """The cube file for a store made with (or without) one; one line when it is missing or another."""
    recorded = (store_meta.get("normalisation") or {}).get("mean_cube")
    if not recorded:
        if mean_cube:
            raise UserError(f"the store's rows were made with a per-channel mean, not a mean cube: "
                            f"leave out --mean-cube {mean_cube}")
        return None
    if not mean_cube:
        raise UserError(f"the store's rows were made with a mean cube (sha256 {recorded['sha256'][:12]}): "
                        "pass --mean-cube FILE")
    if not Path(mean_cube).is_file():
        raise UserError(f"mean cube file not found: {mean_cube}")
    if file_sha256(mean_cube) != recorded["sha256"]:
        raise UserError(f"{mean_cube} is not the mean cube the store's rows were made with "
                        f"(sha256 {recorded['sha256'][:12]})")
    return str(mean_cube)


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
    """The network built once, on the first file that needs it (a list of stored ids never loads it)."""

    def __init__(self, opts: ExtractOptions, weights: str | None, trained: bool, recipe: dict | None = None):
        self.opts, self.weights, self.trained, self.recipe = opts, weights, trained, recipe
        self._model: Extractor | None = None
        self._extra: dict = {}

    def __call__(self, path: Path):
        if self._model is None:
            self._model = make_extractor(self.opts, self.weights if self.trained else None,
                                         self.opts.torch_device(), warn=self.trained)
            if self.opts.network == "resnet152":
                self._extra = {"recipe": (self.recipe or {}).get("name", RESNET_RECIPE),
                               "weights": self._model.weights_id}
            elif self.recipe is not None:  # what a store that did not make its rows itself keeps per video
                self._extra = {"recipe": self.recipe.get("name"), "weights": self._model.weights_id,
                               "mean": note_mean(self.opts, self.recipe)}
        rows, vmeta = extract_one(path, self.opts, self._model)
        return rows, {**vmeta, **self._extra}


def _extractor_for(cfg: dict, meta: dict, weights: str | None, device: str | None,
                   pca: IncrementalPCA | None, mean_cube: str | None) -> _LazyExtractor:
    opts = options_of_store(cfg, meta, mean_cube)
    opts = dataclasses.replace(opts, device=device) if device else opts
    if opts.network == "resnet152":
        return _LazyExtractor(opts, weights, resnet_recipe.trained(meta), recipe_of(meta))
    if pca is not None and pca.dim != feature_dim(opts.layer, opts.width_mult):
        raise UserError(f"the store's PCA takes {pca.dim}-d features, its layer {opts.layer} gives "
                        f"{feature_dim(opts.layer, opts.width_mult)}")
    recipe = recipe_of(meta) if meta.get("extractor") != EXTRACTOR_NAME else None
    trained = recipe is not None or meta.get("weights") not in (None, "untrained")
    return _LazyExtractor(opts, weights, trained, recipe)


def _projection(store, meta: dict, weights: str | None, pca_file: str | None,
                u_layout: str) -> tuple[IncrementalPCA | None, str | None]:
    """(the projection new rows go through, why no file can be extracted into this store, or None)."""
    if resnet_recipe.is_resnet_store(meta):
        return None, resnet_recipe.refusal(meta, weights, store.dim, pca_file)
    recipe = recipe_of(meta) if meta.get("extractor") != EXTRACTOR_NAME else None
    if recipe is not None:
        pca, refusal = recipe_projection(store, recipe, pca_file, u_layout)
        return pca, refusal or recipe_refusal(recipe, weights, pca, store.dim)
    pca = stored_projection(store) if meta.get("pca") else None
    if pca_file and pca is None:
        return None, f"the store's rows went through no PCA projection it holds: leave out --pca-file {pca_file}"
    if pca_file:
        try:
            given = load_projection(pca_file, pca.n_components, u_layout)
        except UserError as exc:
            return pca, str(exc)
        if given.checksum() != pca.checksum():
            return pca, (f"{pca_file} is not the projection the store's rows went through "
                         f"(sha256 {pca.checksum()[:12]}); leave out --pca-file")
    return pca, _refusal(meta, weights, pca)


def extract_like_store(paths: Sequence[str | Path], store_path: str | Path, *, cfg: dict,
                       weights: str | None = None, device: str | None = None, pca_file: str | None = None,
                       mean_cube: str | None = None) -> dict[Path, Outcome]:
    """Extract raw video files into the existing store at `store_path` with the store's own settings.

    Returns, per path, an `Outcome`: the store id (the file's name without
    extension; already stored ids are reused, not extracted again) or a
    one-line reason. One bad file never stops the others; a store that cannot
    be opened is a UserError. `weights` is the file of the network the store's
    rows came from: C3D's (``--c3d-weights``) or, for a store of ActivityNet's
    ResNet-152 frame recipe, torchvision's ResNet-152 (``--resnet-weights``).
    `device` (auto | cpu | cuda) overrides ``extract.device``. `pca_file` is
    the projection of a store whose recipe names one it does not hold yet (ActivityNet's ``PCA_activitynet_v1-3.hdf5``;
    kept in the store), or must be the store's own; `mean_cube` the cube file
    of a store made with one (optional for a recipe's cube).
    """
    from features_store import open_store, video_id_from_path

    store = open_store(str(store_path), "a", durable=cfg["store"]["durable"])
    try:
        meta = dict(store.meta)
        available = set(store.complete_ids())
        pca, refusal = None, None
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
                if extract is None and refusal is None:  # the first file to extract: can any be?
                    pca, refusal = _projection(store, meta, weights, pca_file, cfg["extract"]["pca_file_u"])
                    refusal = refusal or ""
                if refusal:
                    raise UserError(refusal)
                if extract is None:
                    extract = _extractor_for(cfg, store.meta, weights, device, pca, mean_cube)
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
