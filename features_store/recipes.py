"""A store's recipe: how rows of the meaning of its rows can be made from a raw video.

A store etspipe extracted is its own recipe (its metadata holds extractor,
layer, clip, stride, frame size, crop, normalisation, weights checksum and the
projection, `extract_features.like_store`). An imported store is not: its rows
were made elsewhere. The ActivityNet challenge's C3D features were made by a
known recipe, so an import of them records it (``meta["recipe"]``):

* C3D Sports-1M (the Caffe model; the common PyTorch port's ``c3d.pickle`` holds
  its weights in the names etspipe's C3D uses), fc7 after ReLU (4096);
* clips of 16 frames every 8 frames at the video's own rate, frames resized to
  128x171 (H x W), the Sports-1M mean *cube* subtracted, centre crop 112, BGR;
* ActivityNet's projection ``PCA_activitynet_v1-3.hdf5``: rows
  ``(fc7 - x_mean) @ U[:, :500]`` (`features_store.anet_pca`).

The weights and the projection are files the user brings; the projection's
checksum is recorded in the recipe once it is known (given at import, or later
with `set_projection`: ``etspipe store set-projection``), so that later the
file given to `predict` can be checked against it. A store imported before
recipes were recorded is recognised by its extractor name.
"""

from __future__ import annotations

from etspipe.errors import UserError
from features_store.anet_pca import ANET_KIND
from features_store.projection import PCA_AUX, identity_of, projection_identity

OFFICIAL_RECIPE = "activitynet-c3d-official"
OFFICIAL_IMPORT_EXTRACTOR = "c3d-activitynet-official"  # the extractor name of an imported official store
OFFICIAL_PCA_FILE = "PCA_activitynet_v1-3.hdf5"
OFFICIAL_WEIGHTS = "c3d.pickle"


def official_recipe(dim: int, projection_sha256: str | None = None) -> dict:
    """The recipe of ActivityNet's published C3D features reduced to `dim` dimensions (module docstring)."""
    return {
        "name": OFFICIAL_RECIPE,
        "extractor": "c3d-sports1m",
        "weights": f"C3D Sports-1M ({OFFICIAL_WEIGHTS}, the PyTorch port of the Caffe model)",
        "width_mult": 1.0,
        "layer": "fc7",
        "source_dim": 4096,
        "clip_len": 16,
        "stride": 8,
        "fps": None,
        "frame_size": [128, 171],
        "crop": 112,
        # the Caffe model's input: BGR 0..255 minus the mean cube sport1m_train16_128_mean (16x128x171),
        # whose per-channel means are these (used when no cube file is given)
        "normalisation": {"channel_order": "bgr", "mean": [90.25, 97.66, 101.41], "scale": 1.0,
                          "mean_cube": "sport1m_train16_128_mean"},
        "projection": {"kind": ANET_KIND, "file": OFFICIAL_PCA_FILE, "dim": int(dim), "sha256": projection_sha256},
    }


RESNET_RECIPE = "activitynet-resnet152-5fps"
RESNET_EXTRACTOR = "resnet152-imagenet"


def resnet152_recipe() -> dict:
    """The recipe of ActivityNet's frame-level features, the seed's (PaddlePaddle ETS) input.

    ``resnet152_features_activitynet_5fps_320x240.pkl``: frames at 5 per second (ffmpeg ``fps=5``),
    resized to 320x240 without keeping the aspect ratio, the whole frame into torchvision's ResNet-152
    with its IMAGENET1K_V1 weights (RGB, ImageNet mean and std), layer4's output averaged over space:
    2048-d, row i at i / 5 s (the organisers' published extraction code; ../shared/SEED.md).
    """
    return {
        "name": RESNET_RECIPE,
        "extractor": RESNET_EXTRACTOR,
        "weights": "torchvision ResNet-152 IMAGENET1K_V1",
        "layer": "layer4-avg",
        "source_dim": 2048,
        "clip_len": 1,
        "stride": 1,
        "fps": 5.0,
        "frame_size": [240, 320],
        "crop": None,
        "normalisation": {"channel_order": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "scale": 1.0 / 255.0},
        "projection": None,
    }


def resnet152_store_meta(weights: str = "IMAGENET1K_V1", dim: int = 2048, width_mult: float | None = None) -> dict:
    """Store metadata of rows made by `resnet152_recipe` (one frame per row at 5 fps).

    The defaults describe the published rows; etspipe's own extraction
    (`extract --recipe activitynet-resnet152`) records the sha256 of the weights
    file it was given (or "untrained") and its network's width (1.0: the real one;
    below only in tests, with `dim` to match).
    """
    meta = {"extractor": RESNET_EXTRACTOR, "layer": "layer4-avg", "dim": int(dim), "clip_len": 1, "stride": 1,
            "fps": 5.0, "weights": weights, "recipe": resnet152_recipe()}
    if width_mult is not None:
        meta["width_mult"] = float(width_mult)
    return meta


def recipe_of(store_meta: dict) -> dict | None:
    """The recipe a store records (or implies, for an official import made before recipes were recorded)."""
    recipe = store_meta.get("recipe")
    if isinstance(recipe, dict):
        return recipe
    if store_meta.get("extractor") == OFFICIAL_IMPORT_EXTRACTOR:
        return official_recipe(int(store_meta["dim"]))
    return None


def recipe_key(store_meta: dict) -> tuple | None:
    """What gives a store's rows their meaning, whoever made them: compared instead of extractor names.

    An imported store's recorded recipe and a store etspipe extracted with the same settings (network,
    layer, clip, stride, rate, frame size, crop, width, channel order, the projection's kind and size)
    give the same key. The mean (cube or per-channel) is left out, as extraction by a recipe allows
    either (said with a warning). None for a store that records neither.
    """
    recipe = recipe_of(store_meta)
    if recipe is not None:
        proj = recipe.get("projection") or {}
        norm = recipe.get("normalisation") or {}
        return (recipe.get("extractor"), recipe.get("layer"), recipe.get("clip_len"), recipe.get("stride"),
                recipe.get("fps"), list(recipe.get("frame_size") or []), recipe.get("crop"),
                float(recipe.get("width_mult", 1.0)), norm.get("channel_order"), proj.get("kind"),
                proj.get("dim") or store_meta.get("dim"))
    if not store_meta.get("extractor") or not store_meta.get("frame_size"):
        return None
    pca = store_meta.get("pca") or {}
    norm = store_meta.get("normalisation") or {}
    return (store_meta.get("extractor"), store_meta.get("layer"), store_meta.get("clip_len"),
            store_meta.get("stride"), store_meta.get("fps"), list(store_meta.get("frame_size") or []),
            store_meta.get("crop"), float(store_meta.get("width_mult", 1.0)), norm.get("channel_order"),
            (pca.get("kind") or "etspipe") if pca else None, int(store_meta["dim"]) if store_meta.get("dim") else None)


def set_projection(store, arrays: dict, where: str) -> dict:
    """Keep the projection `arrays` in a store whose recipe names a projection it does not hold yet.

    Checked: the recipe's kind, its dimension and source dimension, and the
    checksum the recipe records, if any. The same projection again is a no-op;
    another one is refused. Returns the projection's identity.
    """
    recipe = recipe_of(store.meta)
    identity = identity_of(arrays, where)
    wanted = (recipe or {}).get("projection")
    if not wanted:
        raise UserError(f"{store.path} records no recipe with a projection (only imported official ActivityNet "
                        "C3D stores do; a store etspipe extracted keeps the projection `etspipe extract` gave it)")
    if identity["kind"] != wanted.get("kind"):
        raise UserError(f"{where} is a projection of kind {identity['kind']}; the rows of {store.path} went through "
                        f"{wanted.get('file') or wanted.get('kind')}")
    if identity["dim"] != store.dim or identity["source_dim"] != int(recipe.get("source_dim", identity["source_dim"])):
        raise UserError(f"{where} maps {identity['source_dim']}-d features to {identity['dim']}; the rows of "
                        f"{store.path} are {recipe.get('layer')} ({recipe.get('source_dim')}-d) reduced to {store.dim}")
    if wanted.get("sha256") and wanted["sha256"] != identity["sha256"]:
        raise UserError(f"{where} is not the projection {store.path} records (sha256 {wanted['sha256'][:12]}, "
                        f"this one {identity['sha256'][:12]})")
    current = projection_identity(store)
    if current is None and store.write_aux(PCA_AUX, arrays, exclusive=True):
        current = identity
    if current is None:  # another process stored one a moment ago
        current = projection_identity(store)
    if current["sha256"] != identity["sha256"]:
        raise UserError(f"{store.path} holds another projection already (sha256 {current['sha256'][:12]}, "
                        f"{where} has {identity['sha256'][:12]})")
    if wanted.get("sha256") != identity["sha256"]:
        store.update_meta({"recipe": {**recipe, "projection": {**wanted, "sha256": identity["sha256"]}}})
    return identity
