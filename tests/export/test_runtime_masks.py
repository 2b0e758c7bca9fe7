"""A model with runtime masks (spatial pruning, channel gates) is refused by every export and by the
integer reference: none of them reproduces a mask chosen from the membrane each step, so writing the
model without it would silently give another model."""

from __future__ import annotations

import pytest

from snncompress.errors import UnsupportedLayerError
from snncompress.export.nir_export import export_nir
from snncompress.export.onnx_export import export_onnx
from snncompress.integer.program import compile_program
from snncompress.models.channel_gate import install_channel_gate
from snncompress.models.spatial import install_spatial_pruning
from tests.models import TINY_MODELS


def _masked(kind: str):
    model = TINY_MODELS["leaky_mlp"].build()
    if kind == "spatial":
        install_spatial_pruning(model, "1", 0.35)
    else:
        install_channel_gate(model, "1", 0.47, 0.5)
    return model


@pytest.mark.parametrize("kind, name", [("spatial", "spatial pruning"), ("gate", "a channel gate")])
def test_exports_and_the_integer_reference_refuse_runtime_masks(tmp_path, kind, name):
    sample = TINY_MODELS["leaky_mlp"].example_inputs(1, 0)[0]
    for what, call in [("ONNX export", lambda m: export_onnx(m, tmp_path / "m.onnx", sample, 3)),
                       ("NIR export", lambda m: export_nir(m, tmp_path / "m.nir", sample)),
                       ("the integer-only reference", lambda m: compile_program(m, 0, 1, 3))]:
        with pytest.raises(UnsupportedLayerError, match=f"^{what} cannot express the {name} on neuron layer '1'"):
            call(_masked(kind))
    assert list(tmp_path.iterdir()) == []


def test_a_plain_model_still_exports(tmp_path):
    sample = TINY_MODELS["leaky_mlp"].example_inputs(1, 0)[0]
    export_nir(TINY_MODELS["leaky_mlp"].build(), tmp_path / "m.nir", sample)
    assert (tmp_path / "m.nir").exists()
