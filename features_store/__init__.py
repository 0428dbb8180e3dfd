"""The feature store: the contract between stage 1 (extract) and stage 2 (caption model).

One store holds the features of one extractor configuration: per video a
``(n_rows, dim)`` array plus its metadata, committed atomically, in Zarr
(default; many writers, local or any fsspec URL) or HDF5 (one writer,
exchange). See docs/INTERFACES.md and docs/ARCHITECTURE.md.
"""

from features_store.alignment import SegmentError, row_times, select_rows
from features_store.api import backend_for, format_info, open_store
from features_store.base import FAILURE_REASONS, FeatureStore
from features_store.ids import validate_video_id, video_id_from_path

__all__ = [
    "FAILURE_REASONS",
    "FeatureStore",
    "SegmentError",
    "backend_for",
    "format_info",
    "open_store",
    "row_times",
    "select_rows",
    "validate_video_id",
    "video_id_from_path",
]
