"""snncompress: compress snnTorch spiking neural networks for neuromorphic and edge hardware."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "save_compressed", "load_data"]


def __getattr__(name: str):
    # Lazy: `snncompress --version` and `import snncompress` stay fast; torch loads on first use.
    if name == "load_model":
        from snncompress.fileformat.loading import load_model

        return load_model
    if name == "save_compressed":
        from snncompress.fileformat.compressed import save_compressed

        return save_compressed
    if name == "load_data":
        from snncompress.data import load_data

        return load_data
    raise AttributeError(f"module 'snncompress' has no attribute {name!r}")
