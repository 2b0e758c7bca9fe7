"""Exporting a user module with its own time loop (snnTorch tutorials 5 and 6) as the chain of its layers,
and a module that runs one step per call (tutorial 6's ``Net``) reported as such (issue 16, item 3)."""

from __future__ import annotations

import json

import pytest
import torch

from snncompress.errors import NoTimeLoopError, UnsupportedLayerError
from snncompress.export.chain import exportable
from snncompress.export.nir_export import export_nir
from snncompress.export.nir_io import load_nir
from snncompress.export.onnx_export import export_onnx
from snncompress.sim.runner import SNNRunner
from tests.cli.support import assert_input_error, cli
from tests.models import (
    T,
    functional_pool_net,
    one_step_net,
    scaled_spikes_net,
    tutorial_conv_net,
    tutorial_net,
    tutorial_sequence_net,
)

CHAINS = [  # factory, one input step, whether the model reads event frames, the chain's layer names
    (tutorial_net, (8,), False, ["fc1", "lif1", "fc2", "lif2"]),
    (tutorial_sequence_net, (8,), True, ["fc1", "syn1", "fc2", "lif2"]),
    (tutorial_conv_net, (1, 8, 8), False, ["conv1", "lif1", "pool1", "flatten_3", "fc1", "lif2"]),
]


def _inputs(shape, is_sequence, batch=3):
    gen = torch.Generator().manual_seed(4)
    if is_sequence:
        return (torch.rand((batch, T, *shape), generator=gen) < 0.5).float()
    return torch.rand((batch, *shape), generator=gen)


@pytest.mark.parametrize("factory, shape, is_sequence, names", CHAINS)
def test_a_time_loop_module_becomes_the_chain_of_its_layers(factory, shape, is_sequence, names):
    model = factory()
    chain, notes = exportable(model, torch.rand(shape), "NIR export")
    assert [n for n, _ in chain.named_children()] == names
    assert "has its own time loop; exported as the chain of its layers" in notes[0]
    x = _inputs(shape, is_sequence)
    with torch.no_grad():
        expected = SNNRunner(model).run(x, is_sequence=is_sequence, time_steps=T).spikes
        got = SNNRunner(chain).run(x, is_sequence=is_sequence, time_steps=T).spikes
    assert torch.equal(got, expected) and expected.sum() > 0
    assert all(not m.init_hidden for n, m in model.named_children() if n.startswith(("lif", "syn")))  # untouched


@pytest.mark.parametrize("factory, shape, is_sequence, names", CHAINS)
def test_nir_of_a_time_loop_module_loads_back_with_the_same_spikes(factory, shape, is_sequence, names, tmp_path):
    model = factory()
    export_nir(model, tmp_path / "m.nir", torch.rand(shape))
    back = load_nir(tmp_path / "m.nir")
    x = _inputs(shape, is_sequence)
    with torch.no_grad():
        expected = SNNRunner(model).run(x, is_sequence=is_sequence, time_steps=T).spikes
        got = SNNRunner(back).run(x, is_sequence=is_sequence, time_steps=T).spikes
    assert torch.equal(got, expected)


@pytest.mark.parametrize("factory, shape, is_sequence, names", CHAINS)
def test_onnx_of_a_time_loop_module_is_verified(factory, shape, is_sequence, names, tmp_path):
    result = export_onnx(factory(), tmp_path / "m.onnx", (torch.rand(shape) < 0.5).float(), T)
    assert any("verified in onnxruntime" in n for n in result.notes)


@pytest.mark.parametrize("factory, match", [
    (functional_pool_net, "the call of 'fc1' (Linear) does not take the output of 'lif1' (Leaky) "
                          "(shape [2, 64] from [2, 4, 8, 8]: computed from it in forward, e.g. by indexing a time "
                          "step, a reshape or a functional pooling)"),
    (scaled_spikes_net, "the call of 'fc1' (Linear) does not take the output of 'pool1' (MaxPool2d) "
                        "(shape [2, 64] from [2, 4, 4, 4], other values: reshaped and computed from it"),
])
def test_the_call_that_breaks_the_chain_is_named(factory, match):
    with pytest.raises(UnsupportedLayerError) as info:
        exportable(factory(), torch.rand(1, 8, 8), "ONNX export")
    assert match in str(info.value) and "\n" not in str(info.value)


def test_one_step_per_call_is_reported_as_no_time_loop():
    with pytest.raises(NoTimeLoopError,
                       match="this model has no time loop: its forward.x. runs each neuron layer once"):
        exportable(one_step_net(), torch.rand(1, 8, 8), "NIR export")


def test_one_step_module_on_evaluate_is_no_time_loop_not_a_shape_error(capsys):
    line = assert_input_error(capsys, "evaluate", "tests.models:one_step_net", "--data", "digits", "--limit", "4",
                              match="this model has no time loop")
    assert "channels" not in line


def test_export_cli_of_a_tutorial_module(capsys, tmp_path):
    out = tmp_path / "t.nir"
    code, stdout, err = cli(capsys, "export", "tests.models:tutorial_conv_net", "-o", out, "--input-shape", "1,8,8",
                            "--json", "-")
    assert code == 0, err
    assert json.loads(stdout)["nodes"] >= 7 and out.exists()
    assert_input_error(capsys, "export", "tests.models:functional_pool_net", "-o", tmp_path / "f.onnx",
                       "--input-shape", "1,8,8", match="does not take the output of 'lif1' (Leaky)")
    assert not (tmp_path / "f.onnx").exists()


def test_a_compressed_tutorial_module_exports_with_its_membrane_quantizers(capsys, tmp_path):
    q = tmp_path / "q.safetensors"
    code, _, err = cli(capsys, "quantize", "tests.models:tutorial_net", "--data", "tests.models:static_dataset",
                       "-T", T, "-o", q, "--weight-quant", "int4", "--membrane-quant", "int4", "--calibration", "none")
    assert code == 0, err
    code, stdout, err = cli(capsys, "export", q, "--trust-code", "-o", tmp_path / "q.onnx", "--input-shape", "8",
                            "--json", "-")
    assert code == 0, err
    notes = json.loads(stdout)["notes"]
    assert any("chain of its layers" in n for n in notes) and any("stored-membrane quantization" in n for n in notes)
