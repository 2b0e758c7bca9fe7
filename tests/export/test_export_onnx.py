"""ONNX step export: onnxruntime stepping the graph T times reproduces the torch model."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from snncompress.errors import DomainError, UnsupportedLayerError
from snncompress.export.onnx_export import export_onnx, run_onnx, verify_onnx
from snncompress.fileformat.loading import load_model
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.models.neurons import neuron_layers
from tests.export.export_nets import ROUND_TRIP, T, TernaryMembrane, inputs, leaky_linear, onnx_only_net, run

MEMBRANE_ATOL = 1e-5


def _check(model: nn.Module, shape: tuple[int, ...], path, steps: int = T) -> None:
    """Export without the built-in check, then compare onnxruntime with the torch model ourselves."""
    x = inputs(shape, batch=4, seed=1)
    export_onnx(model, path, x[0], steps, verify=False)
    reference = run(model, x, steps)
    final_states = {name: m.mem.clone() for name, m in neuron_layers(model)}
    got = run_onnx(path, x, steps)
    assert 0 < reference.spikes.mean() < 1, "the test model must fire, but not always"
    assert torch.equal(reference.spikes, got.spikes)  # spikes exactly equal
    torch.testing.assert_close(got.membrane, reference.membrane, atol=MEMBRANE_ATOL, rtol=0)
    for name, mem in final_states.items():  # every layer's stored membrane after the last step
        torch.testing.assert_close(torch.from_numpy(got.states[f"mem_{name.replace('.', '_')}"]), mem,
                                   atol=MEMBRANE_ATOL, rtol=0)


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_onnx_step_matches_torch(name, tmp_path):
    build, shape = ROUND_TRIP[name]
    _check(build(), shape, tmp_path / f"{name}.onnx")


def test_layers_without_a_nir_form_export_to_onnx(tmp_path):
    _check(onnx_only_net(), (2, 12), tmp_path / "bn.onnx")


def test_demo_onnx_matches_torch(tmp_path):
    _check(load_model("demo"), (1, 8, 8), tmp_path / "demo.onnx", steps=4)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_quantized_membrane_is_in_the_graph(reset, tmp_path):
    model = leaky_linear(reset)
    install_membrane_quantizer(model, "1", TernaryMembrane())
    install_membrane_quantizer(model, "3", TernaryMembrane())
    _check(model, (6,), tmp_path / "q.onnx")
    result = export_onnx(model, tmp_path / "q2.onnx", inputs((6,))[0], T)
    assert any("quantization is in the graph" in n for n in result.notes)


def test_real_membrane_quantizer_matches(tmp_path):
    membrane = pytest.importorskip("snncompress.quant.membrane")
    model = leaky_linear("subtract")
    install_membrane_quantizer(model, "1", membrane.MembraneQuantizer(levels_low=-2, levels_high=1))
    _check(model, (6,), tmp_path / "real.onnx")


def test_states_and_metadata_describe_the_recurrence(tmp_path):
    build, shape = ROUND_TRIP["conv_synaptic_subtract"]
    result = export_onnx(build(), tmp_path / "s.onnx", inputs(shape)[0], 3)
    assert result.details["inputs"] == ["input", "syn_1", "mem_1", "syn_5", "mem_5"]
    assert result.details["outputs"] == ["output", "syn_1_next", "mem_1_next", "syn_5_next", "mem_5_next"]
    assert result.details["states"][0]["shape"] == [4, 6, 6]
    assert any("verified in onnxruntime" in n for n in result.notes)
    proto = onnx.load(str(tmp_path / "s.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["snncompress.format"] == "snncompress-onnx-step"
    assert json.loads(props["snncompress.neurons"])["1"]["reset_mechanism"] == "subtract"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    one = run_onnx(tmp_path / "s.onnx", inputs(shape, batch=1), 3)  # dynamic batch
    assert one.spikes.shape[:2] == (3, 1)


def test_verification_catches_a_different_model(tmp_path):
    path = tmp_path / "a.onnx"
    export_onnx(leaky_linear("subtract"), path, inputs((6,))[0], T)
    with pytest.raises(DomainError, match="differ"):
        verify_onnx(leaky_linear("zero"), path, inputs((6,)), T)


def test_sequence_style_model_is_refused(tmp_path):
    class Loop(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match="nn.Sequential"):
        export_onnx(Loop(), tmp_path / "x.onnx", torch.rand(6), T)
    assert not list(tmp_path.iterdir())


def test_export_leaves_a_training_model_as_it_was(tmp_path):
    model = onnx_only_net().train()
    stats = model[1].running_mean.clone()
    export_onnx(model, tmp_path / "t.onnx", inputs((2, 12))[0], T)  # verified against the eval-mode model
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, stats)


def test_threshold_moved_off_the_membrane_grid_matches(tmp_path):
    """A threshold learned after the quantizer was installed: the levels stay at the installed unit."""
    membrane = pytest.importorskip("snncompress.quant.membrane")
    model = leaky_linear("subtract")
    install_membrane_quantizer(model, "1", membrane.MembraneQuantizer(levels_low=-2, levels_high=1), grid=2)
    layer = model.get_submodule("1")
    with torch.no_grad():
        layer.threshold.mul_(0.8)
    _check(model, (6,), tmp_path / "moved.onnx")


@pytest.mark.parametrize("name", ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "conv2d_net"])
def test_unrolled_graph_gives_the_quantized_models_spikes(tmp_path, name):
    """Issue 17: T steps unrolled into one graph, spikes [T, B, ...] = graph(input), checked in onnxruntime."""
    import numpy as np
    import onnxruntime as ort
    from torch.utils.data import TensorDataset

    from snncompress.data.loading import DataBundle, DataOptions
    from snncompress.export.onnx_unrolled import export_onnx_unrolled
    from snncompress.passes.base import PassContext
    from snncompress.passes.quantize import QuantizeConfig
    from snncompress.passes.quantize import apply as quantize
    from snncompress.sim.runner import SNNRunner
    from tests.models import TINY_MODELS

    tiny = TINY_MODELS[name]
    model, x = tiny.build(), tiny.example_inputs()
    data = DataBundle("tiny", TensorDataset(x, torch.arange(x.shape[0]) % 4), False, 3, 4, DataOptions(time_steps=3))
    quantize(model, QuantizeConfig(weight_quant="pot4", membrane_quant="int4", calibration="none"),
             PassContext(data=data))
    result = export_onnx_unrolled(model, tmp_path / "u.onnx", x[0], time_steps=4)
    assert result.details["unrolled"] and "exactly" in result.notes[0]
    got = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(
        ["spikes"], {"input": x.numpy()})[0]
    with torch.no_grad():
        want = SNNRunner(model).run(x, is_sequence=False, time_steps=4).spikes.numpy()
    assert got.shape == (4, x.shape[0], 4) and np.array_equal(got, want)
