"""The supported layer set, the JSON architecture spec, neuron introspection and ``summarize``."""

from __future__ import annotations

import json

import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import ModelLoadError, UnsupportedLayerError
from snncompress.models.layers import build_module, check_supported, module_spec
from snncompress.models.neurons import neuron_layers, neuron_params, surrogate_name
from snncompress.sim.runner import SNNRunner
from snncompress.sim.summary import summarize
from tests.models import SEQUENTIAL_MODELS, TINY_MODELS, T, conv2d_net, subtract_reset_mlp, tutorial_net


@pytest.mark.parametrize("name", SEQUENTIAL_MODELS)
def test_architecture_spec_rebuilds_the_same_model(name):
    tm = TINY_MODELS[name]
    original = tm.build()
    spec = json.loads(json.dumps(module_spec(original)))  # it must survive JSON
    rebuilt = build_module(spec)
    assert [type(m) for m in rebuilt.modules()] == [type(m) for m in original.modules()]
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    rebuilt.eval()
    for (_, a), (_, b) in zip(neuron_layers(original), neuron_layers(rebuilt), strict=True):
        assert neuron_params(a) == neuron_params(b)
        assert surrogate_name(a) == surrogate_name(b)
        assert a.reset_mechanism_val == b.reset_mechanism_val
    x = tm.example_inputs()
    with torch.no_grad():
        expected = SNNRunner(original).run(x, is_sequence=False, time_steps=T)
        got = SNNRunner(rebuilt).run(x, is_sequence=False, time_steps=T)
    assert torch.equal(got.spikes, expected.spikes) and torch.equal(got.membrane, expected.membrane)


def test_spec_records_neuron_settings():
    spec = module_spec(subtract_reset_mlp())
    neuron = dict(spec["children"])["1"]
    assert neuron["type"] == "Leaky"
    args = neuron["args"]
    assert args["beta_shape"] == [12] and args["threshold_shape"] == [12]
    assert args["learn_beta"] is True and args["learn_threshold"] is True
    assert args["reset_mechanism"] == "subtract" and args["init_hidden"] is True
    assert dict(spec["children"])["3"]["args"]["output"] is True
    zero = dict(module_spec(TINY_MODELS["zero_reset_mlp"].build())["children"])["1"]["args"]
    assert zero["reset_mechanism"] == "zero" and zero["spike_grad"] == "fast_sigmoid"
    rleaky = dict(module_spec(TINY_MODELS["rleaky_mlp"].build())["children"])
    assert rleaky["1"]["args"]["all_to_all"] is True and rleaky["1"]["args"]["linear_features"] == 12
    assert rleaky["3"]["args"]["all_to_all"] is False


def test_neuron_params_read_beta_threshold_reset_and_alpha():
    params = neuron_params(subtract_reset_mlp()[1])
    assert params.neuron_type == "Leaky" and params.reset_mechanism == "subtract"
    assert params.beta == pytest.approx(torch.linspace(0.3, 0.9, 12).tolist())
    assert params.threshold == pytest.approx([0.8] * 12)
    syn = neuron_params(TINY_MODELS["synaptic_mlp"].build()[1]).to_dict()
    assert syn["alpha"] == pytest.approx(0.6) and syn["beta"] == pytest.approx(0.5)
    assert "alpha" not in neuron_params(tutorial_net().lif1).to_dict()


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_every_tiny_model_is_supported(name):
    check_supported(TINY_MODELS[name].build())


@pytest.mark.parametrize("layer,kind", [(nn.LSTM(4, 4), "LSTM"), (nn.GELU(), "GELU"),
                                        (nn.Conv3d(1, 1, 1), "Conv3d")])
def test_unsupported_leaf_is_named(layer, kind):
    model = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.5, init_hidden=True), layer)
    with pytest.raises(UnsupportedLayerError, match=rf"layer '2' \({kind}\) is not supported; supported"):
        check_supported(model)
    with pytest.raises(UnsupportedLayerError, match=kind):
        module_spec(model)


@pytest.mark.parametrize("neuron", [snn.LeakyParallel(input_size=4, hidden_size=4),
                                    snn.SLSTM(input_size=4, hidden_size=4)])
def test_unsupported_neuron_is_named(neuron):
    model = nn.Sequential(nn.Linear(4, 4), neuron)
    with pytest.raises(UnsupportedLayerError, match=rf"layer '1' is a {type(neuron).__name__} neuron"):
        check_supported(model)


@pytest.mark.parametrize("spec,match", [
    ({"type": "Transformer", "args": {}}, "unknown layer type"),
    ({"type": "Linear", "args": {"in_features": 2}}, "bad arguments"),
    ({"type": "Leaky", "args": {}}, "lacks a field"),
])
def test_bad_architecture_spec(spec, match):
    with pytest.raises(ModelLoadError, match=match):
        build_module(spec)


def test_summarize_a_stepwise_conv_model_with_a_sample():
    model = conv2d_net()
    summary = summarize(model, torch.rand(1, 8, 8))
    layers = {layer.name: layer for layer in summary.layers}
    assert summary.style == "stepwise" and summary.neuron_layers == 3
    assert summary.total_parameters == (36 + 4) + 8 + (144 + 4) + (64 + 4)
    assert layers["0"].type == "Conv2d" and layers["0"].weight_shape == [4, 1, 3, 3]
    assert layers["0"].output_shape == [4, 8, 8]
    assert layers["3"].output_shape == [4, 4, 4]
    assert layers["8"].output_shape == [16] and layers["9"].output_shape == [4]
    assert layers["2"].neuron["neuron_type"] == "Leaky" and layers["2"].neuron["beta"] == 0.5
    json.dumps(summary.to_dict())


def test_summarize_a_user_module_without_a_sample():
    summary = summarize(tutorial_net())
    assert summary.style == "sequence"
    assert [layer.name for layer in summary.layers] == ["fc1", "lif1", "fc2", "lif2"]
    assert all(layer.output_shape is None for layer in summary.layers)
    assert summary.total_parameters == 8 * 12 + 12 + 12 * 4 + 4


@pytest.mark.parametrize("grad, var, value", [
    (lambda: snn.surrogate.fast_sigmoid(slope=2), "slope", 2.0),
    (lambda: snn.surrogate.atan(alpha=3.5), "alpha", 3.5),
    (lambda: snn.surrogate.sigmoid(slope=7), "slope", 7.0),
])
def test_a_surrogate_keeps_its_arguments_through_the_spec(grad, var, value):
    """A later fine-tuning of a saved model trains with the surrogate the user chose, not its defaults."""
    model = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, spike_grad=grad(), output=True))
    spec = json.loads(json.dumps(module_spec(model)))
    rebuilt = build_module(spec)
    fn = rebuilt[1].spike_grad
    cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__), strict=False))
    assert cells[var] == value
    x = torch.linspace(-1, 1, 7, requires_grad=True)
    a, b = model[1].spike_grad(x), fn(x)
    ga, = torch.autograd.grad(a.sum(), x)
    x2 = x.detach().clone().requires_grad_()
    gb, = torch.autograd.grad(rebuilt[1].spike_grad(x2).sum(), x2)
    assert torch.equal(a, b) and torch.allclose(ga, gb)


def test_a_default_surrogate_records_no_arguments():
    model = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    assert not any(k.startswith("spike_grad_") for k in json.dumps(module_spec(model)).split('"'))
