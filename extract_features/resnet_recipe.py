"""ActivityNet's ResNet-152 frame recipe as extraction settings: what `extract --recipe` and predict follow.

The recipe (`features_store.recipes.resnet152_recipe`, ../shared/SEED.md): frames
at 5 per second as ffmpeg's ``fps=5`` filter picks them (`fps_filter`), resized to
320x240 (W x H) without keeping the aspect ratio, the whole frame into
torchvision's ResNet-152 (`resnet152`), RGB, ImageNet mean and std, layer4
averaged over space: 2048-d, row i at i / 5 s. The settings it fixes are fixed
here; the config supplies only what does not change the rows (batch size, decode
workers, precision, device, video backend, store dtype and chunking) and, for
tests, the network's width.

Resizing. The organisers ran ``ffmpeg -vf fps=5,scale=320:240`` to JPEG files;
the ffmpeg command line scales bicubic (it gives its scale filters
``flags=bicubic``) and the JPEGs (``-qscale:v 2``) add their own small error.
etspipe scales with the video reader (decord's scale filter, PyAV's swscale),
bilinear, the scaler the C3D path uses: it runs in the decoder's own thread on
the kept frames only, and scaling again by hand would mean converting whole
source frames to RGB first. On a 640x360 test pattern bilinear and bicubic
differ by 0.3 grey levels on average (tests/test_resnet_extract.py measures it),
less than the JPEG round trip the published rows went through.

A store made this way records `resnet152_store_meta` with the sha256 of the
weights file (or "untrained") and the network's width, so new videos can be
extracted into it later with the same weights (`like_store`).
"""

from __future__ import annotations

import re

from etspipe.errors import UserError
from extract_features.fps_filter import RULE as FRAME_RULE
from extract_features.options import ExtractOptions
from extract_features.resnet152 import LAYER, ResNetInput, feature_dim
from extract_features.weights import RESNET152_V1_FILE, RESNET152_V1_SHA256_PREFIXES, UNTRAINED, file_sha256
from features_store.recipes import RESNET_EXTRACTOR, RESNET_RECIPE, recipe_of, resnet152_store_meta

RECIPE_CHOICE = "activitynet-resnet152"  # `etspipe extract --recipe`
FPS = 5.0
FRAME_SIZE = (240, 320)  # H, W
RESIZE = ("320x240 (W x H), aspect ratio not kept, bilinear (the video reader's scaler); the published rows "
          "were scaled bicubic by ffmpeg's command line, then stored as JPEG")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def resnet_options(cfg: dict, **changes) -> ExtractOptions:
    """Extraction settings of the recipe: its geometry fixed, run-time settings (and width) from `cfg`."""
    fixed = {"network": "resnet152", "clip_len": 1, "stride": 1, "fps": FPS, "frame_size": FRAME_SIZE,
             "crop": None, "layer": LAYER, "pca_dim": None, "mean_cube": None}
    return ExtractOptions.from_config(cfg, **{**fixed, **changes})


def store_meta(opts: ExtractOptions, weights_id: str) -> dict:
    """What a store extracted by the recipe records: the recipe's meta, the weights and how frames were made."""
    meta = resnet152_store_meta(weights_id, feature_dim(opts.width_mult), opts.width_mult)
    if weights_id.startswith(RESNET152_V1_SHA256_PREFIXES):
        meta["weights_name"] = "IMAGENET1K_V1"  # the sha256 says which file; this says it is the recipe's
    return {**meta, "frame_size": list(FRAME_SIZE), "crop": None, "normalisation": ResNetInput().describe(),
            "frames": FRAME_RULE, "resize": RESIZE, "pca": None, "dtype": opts.store_dtype,
            "chunk_rows": opts.chunk_rows}


def is_resnet_store(meta: dict) -> bool:
    """Whether a store's rows are the recipe's (extracted by etspipe, or imported with the recipe recorded)."""
    recipe = recipe_of(meta) or {}
    return meta.get("extractor") == RESNET_EXTRACTOR or recipe.get("extractor") == RESNET_EXTRACTOR


def store_width(meta: dict) -> float:
    return float(meta.get("width_mult") or 1.0)


def options_of_store(cfg: dict, meta: dict, mean_cube: str | None = None) -> ExtractOptions:
    """Settings to extract new videos into a recipe store: the recipe's, at the width the store records."""
    if mean_cube:
        raise UserError(f"the store's rows ({RESNET_RECIPE}) take ImageNet's mean and std: leave out "
                        f"--mean-cube {mean_cube}")
    return resnet_options(cfg, width_mult=store_width(meta))


def trained(meta: dict) -> bool:
    return meta.get("weights") != UNTRAINED


def refusal(meta: dict, weights: str | None, store_dim: int, pca_file: str | None) -> str | None:
    """Why no new video can be extracted into a recipe store with these files, or None (one line each)."""
    if pca_file:
        return f"the store's rows ({RESNET_RECIPE}) went through no projection: leave out --pca-file {pca_file}"
    dim = feature_dim(store_width(meta))
    if dim != store_dim:
        return f"the store's rows have {store_dim} dimensions, ResNet-152's layer4 gives {dim}"
    if not trained(meta):
        return ("the store's rows come from an untrained ResNet-152: leave out --resnet-weights" if weights
                else None)
    if not weights:
        return (f"not in the store, and extracting it by the store's recipe ({RESNET_RECIPE}) needs the "
                f"ResNet-152 weights its rows were made with: pass --resnet-weights {RESNET152_V1_FILE} "
                "(torchvision's IMAGENET1K_V1)")
    recorded = str(meta.get("weights"))
    if _SHA256.fullmatch(recorded) and file_sha256(weights) != recorded:
        return (f"{weights} is not the ResNet-152 weights file the store's rows were made with "
                f"(sha256 {recorded[:12]}...)")
    return None
