"""Extraction by a store's recorded recipe: raw videos to rows of the meaning of an imported store's rows.

An imported official ActivityNet C3D store records the recipe its rows were made
by (`features_store.recipes`): C3D Sports-1M fc7, clips of 16 every 8 frames,
128x171 frames, crop 112, the Sports-1M mean cube, ActivityNet's projection.
etspipe's extractor can follow it given the two files the recipe names but no
store can hold for the user: the weights (``--c3d-weights c3d.pickle``) and the
projection (``--pca-file PCA_activitynet_v1-3.hdf5``, kept in the store once
given). When they are missing, or the projection does not fit the store's rows,
the refusal is one line that says which file to pass.

The mean cube file is optional: without it the cube's per-channel means are
subtracted (the difference is measured in docs/PERFORMANCE.md), which is said
once and recorded with each video (``mean``).

ActivityNet's ResNet-152 frame recipe (``activitynet-resnet152-5fps``) names no
projection and its own network: its settings, refusals and weights live in
`resnet_recipe`, which `recipe_options` hands it to.
"""

from __future__ import annotations

import logging

from etspipe.errors import UserError
from extract_features import resnet_recipe
from extract_features.c3d import feature_dim
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA, load_projection, stored_projection
from extract_features.weights import file_sha256
from features_store.recipes import OFFICIAL_PCA_FILE, OFFICIAL_WEIGHTS, RESNET_EXTRACTOR, set_projection

log = logging.getLogger(__name__)

ETSPIPE_EXTRACTOR = "c3d-sports1m"  # C3D, as a recipe names it (corpus.EXTRACTOR_NAME); or RESNET_EXTRACTOR
_RECIPE_KEYS = ("layer", "clip_len", "stride", "fps", "frame_size", "crop", "width_mult")


def recipe_options(cfg: dict, recipe: dict, mean_cube: str | None = None) -> ExtractOptions:
    """Extraction settings of the recipe; the config supplies only what does not change the rows."""
    if recipe.get("extractor") == RESNET_EXTRACTOR:
        return resnet_recipe.options_of_store(cfg, {"recipe": recipe}, mean_cube)
    if recipe.get("extractor") != ETSPIPE_EXTRACTOR:
        raise UserError(f"the store's recipe ({recipe.get('name')}) uses the extractor {recipe.get('extractor')!r}, "
                        "which etspipe does not have")
    ext = {**cfg["extract"], **{key: recipe[key] for key in _RECIPE_KEYS}, "pca_dim": None, "mean_cube": mean_cube}
    norm = recipe.get("normalisation") or {}
    ext.update({key: norm[key] for key in ("channel_order", "mean", "scale") if key in norm})
    return ExtractOptions.from_config({**cfg, "extract": ext})


def recipe_projection(store, recipe: dict, pca_file: str | None,
                      u_layout: str) -> tuple[IncrementalPCA | None, str | None]:
    """(the projection new rows go through, or None; why none can be extracted, or None).

    A `pca_file` the store does not hold yet is checked against the recipe and kept
    in the store (`features_store.recipes.set_projection`); one line when it does not fit.
    """
    wanted = recipe.get("projection")
    if not wanted:
        return None, None
    if pca_file:
        try:
            given = load_projection(pca_file, store.dim, u_layout)
            set_projection(store, given.arrays(), str(pca_file))
        except UserError as exc:
            return None, str(exc)
    stored = stored_projection(store)
    if stored is None:
        return None, (f"not in the store, and extracting it by the store's recipe ({recipe.get('name')}) needs the "
                      f"projection its rows went through: pass --pca-file {wanted.get('file') or OFFICIAL_PCA_FILE} "
                      "(or keep it in the store once: etspipe store set-projection STORE FILE)")
    return stored, None


def recipe_refusal(recipe: dict, weights: str | None, pca: IncrementalPCA | None, store_dim: int) -> str | None:
    """Why the recipe cannot be met with these files, or None (the projection's own refusal comes first)."""
    if not weights:
        return (f"not in the store, and extracting it by the store's recipe ({recipe.get('name')}) needs the C3D "
                f"Sports-1M weights its rows were made with: pass --c3d-weights {OFFICIAL_WEIGHTS}")
    source_dim = feature_dim(recipe["layer"], float(recipe.get("width_mult", 1.0)))
    if pca is not None and (pca.dim != source_dim or pca.n_components != store_dim):
        return (f"the store's projection maps {pca.dim}-d features to {pca.n_components}, its recipe gives "
                f"{recipe['layer']} ({source_dim}-d) and its rows have {store_dim}")
    if pca is None and source_dim != store_dim:
        return f"the store's rows have {store_dim} dimensions, its recipe's {recipe['layer']} gives {source_dim}"
    return None


def note_mean(opts: ExtractOptions, recipe: dict) -> str:
    """What a video records about its input mean; says once when the recipe's cube is replaced by its averages."""
    if opts.mean_cube:
        return f"cube sha256:{file_sha256(opts.mean_cube)}"
    cube = (recipe.get("normalisation") or {}).get("mean_cube")
    if cube:
        log.warning("the store's recipe subtracts the mean cube %s; without --mean-cube its per-channel means "
                    "are subtracted instead (how far that moves the rows: docs/PERFORMANCE.md)", cube)
    return "per-channel"
