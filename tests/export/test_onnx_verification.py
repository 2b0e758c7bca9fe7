"""What "verified" means for a float ONNX export (issue 16, item 5): output spikes exact, every state within
1e-5 of its scale, and a difference that follows a neuron at its threshold reported as a near-threshold flip
rather than refused."""

from __future__ import annotations

import copy

import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import DomainError
from snncompress.export.onnx_export import export_onnx, verify_onnx
from tests.models import _init


def _net() -> nn.Sequential:
    return _init(nn.Sequential(
        nn.Linear(6, 5), snn.Leaky(beta=0.9, threshold=torch.ones(5), learn_beta=True, learn_threshold=True,
                                   init_hidden=True),
        nn.Linear(5, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    ), seed=21, gain=3.0)


def _x() -> torch.Tensor:
    return torch.rand(3, 6, generator=torch.Generator().manual_seed(4))


def _with_hidden_threshold(model: nn.Sequential, neuron: int, value: float) -> nn.Sequential:
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone[1].threshold[neuron] = value
    return clone


def test_a_membrane_that_grows_is_compared_relative_to_its_scale():
    """An IF membrane that has grown to ~1000 differs between two runtimes by float32 ulps (6e-5 there):
    above an absolute 1e-5, far below 1e-5 of its scale. A difference of 1e-4 of its scale is one."""
    from snncompress.export.onnx_export import _first_divergence, _Trace

    key = (0, "1", "mem")
    grown = torch.linspace(10.0, 1000.0, 4).reshape(4, 1, 1).expand(4, 2, 3).contiguous()
    spikes = torch.zeros(4, 2, 3)
    reference = _Trace(spikes, [key], {key: grown}, {"1": [1.0] * 4}, {"1": 1000.0})

    def trace(offset: float) -> _Trace:
        return _Trace(spikes, [key], {key: grown + offset * (grown == 1000.0)})

    assert _first_divergence(reference, trace(6.1e-5)) is None
    step, layer, what = _first_divergence(reference, trace(0.1))
    assert (step, layer) == (3, 0) and what.startswith("layer '1' mem differs by 0.1 (scale 1e+03) from step 3")


def test_an_if_layer_that_never_fires_exports_verified(tmp_path):
    model = _init(nn.Sequential(nn.Linear(6, 8), snn.Leaky(beta=1.0, threshold=1e4, init_hidden=True),
                                nn.Linear(8, 3), snn.Leaky(beta=1.0, threshold=1e4, init_hidden=True, output=True)),
                  seed=22, gain=30.0)
    result = export_onnx(model, tmp_path / "if.onnx", _x()[0], 40)
    assert any("every neuron state within" in n and "of its scale" in n for n in result.notes)


def test_a_flip_at_a_neuron_on_its_threshold_is_reported_not_refused(tmp_path):
    model = _net()
    u0 = model[0](_x()[0]).detach()  # the hidden membrane at step 0 is the current itself
    j = int((u0 - 1).abs().argmin())
    # the graph fires hidden neuron j at step 0 (threshold just below its membrane); the torch model, whose
    # threshold is exactly the membrane, does not: what one rounding step apart in two runtimes would do
    export_onnx(_with_hidden_threshold(model, j, float(u0[j]) * (1 - 1e-7)), tmp_path / "a.onnx", _x()[0], 4,
                verify=False)
    note = verify_onnx(_with_hidden_threshold(model, j, float(u0[j])), tmp_path / "a.onnx", _x(), 4)
    assert note.startswith("verified in onnxruntime with a near-threshold flip")
    assert "layer '1' has a neuron" in note and "from its threshold at step 0" in note
    assert "layer '3' mem differs by" in note and "output spike values differ" in note


def test_a_real_difference_is_still_refused(tmp_path):
    model = _net()
    u0 = model[0](_x()[0]).detach()
    j = int((u0 - 1).abs().argmin())
    export_onnx(_with_hidden_threshold(model, j, float(u0[j]) - 0.3), tmp_path / "b.onnx", _x()[0], 4,
                verify=False)
    with pytest.raises(DomainError, match="no neuron was near its threshold before"):
        verify_onnx(_with_hidden_threshold(model, j, float(u0[j]) + 0.3), tmp_path / "b.onnx", _x(), 4)


def test_learned_beta_and_threshold_export_verifies(tmp_path):
    result = export_onnx(_net(), tmp_path / "l.onnx", _x()[0], 8)
    assert any(n.startswith("verified in onnxruntime") for n in result.notes)
