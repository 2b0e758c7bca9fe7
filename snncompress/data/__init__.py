"""Calibration and training data: the built-in digits set, tensor files, or a user function."""

from snncompress.data.loading import DataBundle, DataOptions, load_data

__all__ = ["DataBundle", "DataOptions", "load_data"]
