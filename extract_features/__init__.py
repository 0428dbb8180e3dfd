"""Stage 1: C3D features of videos into a feature store.

Modules: `video_reader` (decord, PyAV fallback), `clips` (which frames make a
clip; streaming), `c3d` (the network and its input transform), `weights`
(safe loading), `pca`, `options` (settings from the config), `runner` (the
batched decode/network pipeline, `extract_one`), `corpus` (`extract_corpus`:
store, resume, PCA passes), `like_store` (`extract_like_store`: new raw files
into an existing store with its recorded settings, for predict), `distributed` (dask), `inputs` (paths to videos).
"""

from extract_features.c3d import C3D, C3DInput, build_c3d, feature_dim
from extract_features.corpus import extract_corpus
from extract_features.like_store import Outcome, extract_like_store
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.runner import Extractor, extract_one, make_extractor
from extract_features.weights import load_c3d_weights

__all__ = [
    "C3D",
    "C3DInput",
    "ExtractOptions",
    "Extractor",
    "IncrementalPCA",
    "build_c3d",
    "extract_corpus",
    "extract_like_store",
    "extract_one",
    "feature_dim",
    "load_c3d_weights",
    "make_extractor",
    "Outcome",
]
