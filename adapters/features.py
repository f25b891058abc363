"""Features of values (re-exported from ``adaptd.streams.features``, shared with the daemon)."""

from adaptd.streams.features import MAX_KEYS, MAX_SKETCH_ITEMS, describe_args, features, sketch, text_sketch

__all__ = ["MAX_KEYS", "MAX_SKETCH_ITEMS", "describe_args", "features", "sketch", "text_sketch"]
