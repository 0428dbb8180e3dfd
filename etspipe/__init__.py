"""Shared ground of the etspipe stages: version, the user-error type and configuration.

The three stage packages (`extract_features`, `features_store`, `caption_model`)
depend on this small package and never on each other's internals, except that
both stages use `features_store`, which is their contract.
"""

__version__ = "0.1.0"
