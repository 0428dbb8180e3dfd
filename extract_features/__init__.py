"""Stage 1: features of videos into a feature store (C3D, or ActivityNet's ResNet-152 frame recipe).

Modules: `video_reader` (decord, PyAV fallback), `clips` (which frames make a
clip; streaming), `c3d` (the network and its input transform), `resnet152`
(torchvision's ResNet-152 and its input), `fps_filter` (the frames ffmpeg's
``fps`` filter keeps), `resnet_recipe` (the frame recipe's settings and store
record), `weights` (safe loading), `pca`, `options` (settings from the config),
`runner` (the batched decode/network pipeline, `extract_one`), `corpus`
(`extract_corpus`: store, resume, PCA passes, `recipe=`), `like_store`
(`extract_like_store`: new raw files into an existing store with its recorded
settings or recipe, for predict), `recipe` (an imported store's recipe),
`distributed` (dask), `inputs` (paths to videos).
"""

from extract_features.c3d import C3D, C3DInput, build_c3d, feature_dim
from extract_features.corpus import extract_corpus
from extract_features.like_store import Outcome, extract_like_store
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.resnet152 import ResNet152, ResNetInput, build_resnet152
from extract_features.runner import Extractor, extract_one, make_extractor
from extract_features.weights import load_c3d_weights, load_resnet_weights

__all__ = [
    "C3D",
    "C3DInput",
    "ExtractOptions",
    "Extractor",
    "IncrementalPCA",
    "ResNet152",
    "ResNetInput",
    "build_c3d",
    "build_resnet152",
    "extract_corpus",
    "extract_like_store",
    "extract_one",
    "feature_dim",
    "load_c3d_weights",
    "load_resnet_weights",
    "make_extractor",
    "Outcome",
]
