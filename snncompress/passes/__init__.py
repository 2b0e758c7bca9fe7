"""Compression passes: the interface, the registry, and one module per pass family."""

from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec

__all__ = ["PassConfig", "PassContext", "PassResult", "PassSpec"]
