"""Export to and import from the formats neuromorphic and edge toolchains read.

* NIR (``nir_export.export_nir``, ``nir_io.load_nir``): the continuous-time graph format shared by
  snnTorch, Norse, Sinabs, Lava, SpiNNaker2, Xylo and others. Reset semantics, dt and what NIR cannot
  express travel in the graph's metadata so our own round trip is exact.
* ONNX (``onnx_export.export_onnx``): one time step of a stepwise model with the neuron states as
  explicit inputs and outputs, for toolchains that run the recurrence themselves.
"""

from __future__ import annotations

__all__ = ["ExportResult", "export_nir", "export_onnx", "load_nir"]


def __getattr__(name: str):
    # Lazy: importing snncompress.export must not pull in nir/onnx until they are used.
    if name == "export_nir":
        from snncompress.export.nir_export import export_nir

        return export_nir
    if name == "load_nir":
        from snncompress.export.nir_io import load_nir

        return load_nir
    if name == "export_onnx":
        from snncompress.export.onnx_export import export_onnx

        return export_onnx
    if name == "ExportResult":
        from snncompress.export.layout import ExportResult

        return ExportResult
    raise AttributeError(f"module 'snncompress.export' has no attribute {name!r}")
