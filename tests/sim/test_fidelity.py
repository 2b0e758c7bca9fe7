"""Fidelity to a reference (``snncompress.sim.fidelity``): the earth mover's distance, agreement,
spike-count correlation and firing drift, and their agreement with a plain recording of both models."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snncompress.errors import DataError
from snncompress.models.membrane import copy_model
from snncompress.models.neurons import neuron_layers
from snncompress.sim.evaluate import evaluate, prepare
from snncompress.sim.fidelity import compare, firing_drift, wasserstein_1d
from snncompress.sim.observers import Recorder
from tests.models import TINY_MODELS, tiny_bundle

values = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(values, values)
def test_emd_is_scipys_wasserstein_distance(u, v):
    scipy_stats = pytest.importorskip("scipy.stats")
    assert wasserstein_1d(u, v) == pytest.approx(scipy_stats.wasserstein_distance(u, v), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(values, st.floats(-5, 5, allow_nan=False))
def test_emd_of_a_shift_is_the_shift_and_order_does_not_matter(u, shift):
    assert wasserstein_1d(u, [x + shift for x in u]) == pytest.approx(abs(shift), abs=1e-9)
    assert wasserstein_1d(u, list(reversed(u))) == pytest.approx(0.0, abs=1e-12)


def test_emd_by_hand():
    assert wasserstein_1d([0.0, 1.0], [0.0, 0.0]) == pytest.approx(0.5)  # half the mass moves by 1
    assert wasserstein_1d([0.0], [0.25, 0.75]) == pytest.approx(0.5)  # sizes may differ
    with pytest.raises(ValueError, match="at least one value"):
        wasserstein_1d([], [1.0])


def _perturbed(model, scale=0.3, seed=0):
    other = copy_model(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
    return other


def test_a_model_against_itself_is_faithful():
    model = TINY_MODELS["leaky_mlp"].build()
    data = tiny_bundle("leaky_mlp", n=12)
    fidelity = compare(model, copy_model(model), data)
    assert fidelity.agreement == 100.0 and fidelity.samples == 12
    assert set(fidelity.layers) == {n for n, _ in neuron_layers(model)}
    for layer in fidelity.layers.values():
        assert layer.emd == 0.0 and layer.firing_rate == layer.reference_firing_rate
        assert layer.correlation is None or layer.correlation == pytest.approx(1.0)
    assert fidelity.unmatched == [] and fidelity.reference_unmatched == [] and fidelity.notes() == []
    assert fidelity.evaluation.accuracy == fidelity.reference_evaluation.accuracy


@pytest.mark.parametrize("name", ["leaky_mlp", "conv2d_net", "tutorial_sequence_net", "one_step_conv_net"])
def test_figures_equal_a_recording_of_both_models(name):
    model = TINY_MODELS[name].build()
    other = _perturbed(model)
    data = tiny_bundle(name, n=10)
    fidelity = compare(other, model, data)
    # the same figures from a plain recording of every spike of both models
    counts, preds = {}, {}
    for key, net in (("model", other), ("reference", model)):
        runner = prepare(net, data)
        recorder = Recorder()
        with torch.no_grad(), runner.observe(recorder):
            out = runner.run(data.dataset.tensors[0], is_sequence=data.is_sequence, time_steps=data.time_steps)
        spikes, _ = recorder.stacked()
        counts[key] = {k: v.ne(0).flatten(2).sum(0).double() for k, v in spikes.items()}  # [B, neurons]
        preds[key] = out.predictions()
    agree = 100.0 * float((preds["model"] == preds["reference"]).double().mean())
    assert fidelity.agreement == pytest.approx(agree)
    for layer, figures in fidelity.layers.items():
        a, b = counts["model"][layer], counts["reference"][layer]
        steps = fidelity.evaluation.time_steps
        assert figures.emd == pytest.approx(wasserstein_1d(a.mean(0) / steps, b.mean(0) / steps), abs=1e-12)
        if a.std() > 0 and b.std() > 0:
            expected = np.corrcoef(a.reshape(-1).numpy(), b.reshape(-1).numpy())[0, 1]
            assert figures.correlation == pytest.approx(expected, abs=1e-9)
    # from two separate evaluations: the same agreement and drift, no correlation
    drift = firing_drift(evaluate(other, data), evaluate(model, data))
    assert drift.agreement == pytest.approx(fidelity.agreement)
    assert {k: v.emd for k, v in drift.layers.items()} == pytest.approx({k: v.emd for k, v in fidelity.layers.items()})
    assert all(v.correlation is None for v in drift.layers.values())


def test_on_unlabelled_data_accuracy_is_none_and_fidelity_is_measured():
    model = TINY_MODELS["leaky_mlp"].build()
    data = tiny_bundle("leaky_mlp", n=8, labelled=False)
    result = evaluate(model, data)
    assert result.accuracy is None and result.loss != result.loss and result.samples == 8
    assert result.predictions.shape == (8,) and set(result.neuron_rates) == set(result.firing_rates)
    for name, rates in result.neuron_rates.items():
        assert float(rates.mean()) == pytest.approx(result.firing_rates[name])
    fidelity = compare(_perturbed(model), model, data)
    assert fidelity.evaluation.accuracy is None and 0.0 <= fidelity.agreement <= 100.0
    assert "reference_accuracy" in fidelity.to_dict() and fidelity.to_dict()["reference_accuracy"] is None


def test_layers_are_matched_by_name_and_the_unmatched_named():
    torch.manual_seed(0)
    import snntorch as snn

    def net(hidden: int, name: str) -> nn.Sequential:
        return nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(8, hidden)), (name, snn.Leaky(beta=0.5, init_hidden=True)),
            ("fc2", nn.Linear(hidden, 4)), ("out", snn.Leaky(beta=0.5, init_hidden=True, output=True))]))

    data = tiny_bundle("leaky_mlp", n=8)
    fidelity = compare(net(12, "lif_a"), net(12, "lif_b"), data)
    assert set(fidelity.layers) == {"out"}
    assert fidelity.unmatched == ["lif_a"] and fidelity.reference_unmatched == ["lif_b"]
    assert any("lif_a" in n for n in fidelity.notes()) and any("lif_b" in n for n in fidelity.notes())
    shrunk = compare(net(6, "lif"), net(12, "lif"), data)  # same name, fewer neurons (as after shrink)
    layer = shrunk.layers["lif"]
    assert (layer.neurons, layer.reference_neurons) == (6, 12)
    assert layer.correlation is None and layer.emd is not None
    assert any("another size" in n and "lif" in n for n in shrunk.notes())


def test_outputs_of_another_shape_cannot_be_compared():
    import snntorch as snn

    model = TINY_MODELS["leaky_mlp"].build()
    wide = nn.Sequential(nn.Linear(8, 5), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    with pytest.raises(DataError, match="output spike counts have shape"):
        compare(model, wide, tiny_bundle("leaky_mlp", n=4))


def test_evaluations_of_other_data_are_refused():
    model = TINY_MODELS["leaky_mlp"].build()
    with pytest.raises(DataError, match="saw 8 and 4 samples"):
        firing_drift(evaluate(model, tiny_bundle("leaky_mlp", n=8)), evaluate(model, tiny_bundle("leaky_mlp", n=4)))


def test_compare_leaves_both_models_as_they_were():
    model = TINY_MODELS["leaky_mlp"].build()
    reference = copy_model(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compare(model, reference, tiny_bundle("leaky_mlp", n=4))
    assert model.training and not reference.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "mem" not in k)
