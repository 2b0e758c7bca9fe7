"""GPW thresholds (SpQuant §4.4, Eq. 24-27): the threshold's own gradient path, as a training constraint."""

from __future__ import annotations

import math

import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.sim.thresholds import GPWThresholds, gpw
from snncompress.sim.training import TrainConfig, train
from tests.models import TINY_MODELS
from tests.sim.test_constraints import bundle

# Hand-made case: one layer, threshold 1.0, four neurons. Neurons 0 and 1 fire (u = 1.25, 2.0);
# neurons 2 and 3 do not (u = 0.9, -0.5) and must add nothing to dL/dVth, although 0.9 lies inside
# every window. dL/ds is set by the loss sum(c * s) with c below.
U = [1.25, 2.0, 0.9, -0.5]
C = [0.5, -2.0, 3.0, 7.0]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _window(kind: str, x: float, w: float) -> float:
    """Eq. 27's window written out by hand (peak 1, area w)."""
    if kind == "sigmoid":
        s = _sigmoid(4 * x / w)
        return 4 * s * (1 - s)
    if kind == "triangle":
        return max(0.0, 1 - abs(x) / w)
    return 1.0 if abs(x) < w / 2 else 0.0


def _one_step(window: str, width: float, reset: str = "subtract"):
    lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism=reset)
    model = nn.Sequential(lif)
    constraint = GPWThresholds(["0"], window=window, width=width)
    constraint.attach(model)
    u = torch.tensor(U, requires_grad=True)
    spk, mem = lif(u, torch.zeros(4))
    # a second step sends the reset (u - s * Vth) into the loss: its threshold gradient must be cut
    spk2, mem2 = lif(torch.zeros(4), mem)
    loss = (torch.tensor(C) * spk).sum() + mem2.sum()
    loss.backward()
    grad_vth = float(lif.parametrizations.threshold.original.grad)
    constraint.detach(model)
    return spk.detach(), u.grad.detach(), grad_vth, lif


@pytest.mark.parametrize(("window", "width"), [("sigmoid", 1.0), ("triangle", 2.0), ("rectangle", 1.0),
                                               ("triangle", 0.5)])
def test_threshold_gradient_is_eq27_on_a_hand_made_case(window, width):
    spk, grad_u, grad_vth, _ = _one_step(window, width)
    assert spk.tolist() == [1.0, 1.0, 0.0, 0.0]
    # Eq. 27: only fired neurons, dL/ds * -GPW(u - Vth), summed to the layer's scalar; the reset's
    # "- s * Vth" of the next step is not in it
    expected = sum(c * -_window(window, u - 1.0, width) for u, c in zip(U, C, strict=True) if u > 1.0)
    assert grad_vth == pytest.approx(expected, rel=1e-6, abs=1e-7)
    # the membrane keeps the neuron's surrogate (snnTorch's atan: 1 / (1 + (pi * x)^2)) times
    # dL/ds plus the membrane path of the loss (beta * u into mem2; the reset is detached)
    sg = torch.tensor([1 / (1 + (math.pi * (u - 1.0)) ** 2) for u in U])
    assert torch.allclose(grad_u, torch.tensor(C) * sg + 0.5, atol=1e-6)


def test_windows_differ_and_unfired_neurons_add_nothing():
    grads = {w: _one_step(w, 1.0)[2] for w in ("sigmoid", "triangle", "rectangle")}
    # rectangle of width 1: only |u - Vth| < 0.5 counts: neuron 0 (x = 0.25) alone
    assert grads["rectangle"] == pytest.approx(-0.5)
    # triangle of width 1: neuron 0 at 0.75, neuron 1 at x = 1.0 is on the edge (0)
    assert grads["triangle"] == pytest.approx(-0.5 * 0.75)
    assert len(set(grads.values())) == 3


@pytest.mark.parametrize("learnable", [False, True])
def test_detach_restores_the_neuron_exactly(learnable):
    lif = snn.Leaky(beta=0.5, threshold=1.0, learn_threshold=learnable)
    model = nn.Sequential(lif)
    lif(torch.zeros(4), torch.zeros(4))  # a forward pass sets snnTorch's own attributes (reset)
    attrs, params, buffers = set(lif.__dict__), set(lif._parameters), set(lif._buffers)
    state = {k: v.clone() for k, v in lif.state_dict().items()}
    constraint = GPWThresholds(["0"])
    constraint.attach(model)
    assert "fire" in lif.__dict__ and type(lif) is not snn.Leaky  # parametrized while attached
    spk, _ = lif(torch.tensor(U, requires_grad=True), torch.zeros(4))
    spk.sum().backward()
    constraint.detach(model)
    assert type(lif) is snn.Leaky and "fire" not in lif.__dict__
    assert (set(lif.__dict__), set(lif._parameters), set(lif._buffers)) == (attrs, params, buffers)
    assert isinstance(lif.threshold, nn.Parameter) is learnable
    assert lif.state_dict().keys() == state.keys() and all(torch.equal(lif.state_dict()[k], v)
                                                           for k, v in state.items() if k != "mem")


def test_forward_is_unchanged_while_attached():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    x = TINY_MODELS["leaky_mlp"].example_inputs(8, 0)
    from snncompress.sim.runner import SNNRunner

    plain = SNNRunner(model).run(x, is_sequence=False, time_steps=3).spike_counts
    constraint = GPWThresholds(["1", "3"])
    constraint.attach(model)
    with_path = SNNRunner(model).run(x, is_sequence=False, time_steps=3).spike_counts
    constraint.detach(model)
    assert torch.equal(plain, with_path)


def test_bad_window_and_width_are_config_errors():
    with pytest.raises(ConfigError, match="unknown threshold window"):
        GPWThresholds(["1"], window="gauss")
    with pytest.raises(ConfigError, match="width must be > 0"):
        gpw(torch.zeros(1), "sigmoid", 0.0)


@pytest.mark.parametrize("name", ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "subtract_reset_mlp"])
def test_thresholds_move_in_training_and_survive_save_load(name, tmp_path):
    model = load_model(TINY_MODELS[name].ref)
    layers = [n for n, m in model.named_modules() if isinstance(m, snn.SpikingNeuron)]
    kinds = {n: type(model.get_submodule(n).threshold) for n in layers}
    data = bundle(name)
    constraint = GPWThresholds(layers, lr_scale=50.0)
    train(model, data, data, TrainConfig(epochs=2, lr=0.01, keep_best=False), constraints=[constraint])
    assert any(constraint.before[n] != constraint.after[n] for n in layers)
    assert {n: type(model.get_submodule(n).threshold) for n in layers} == kinds  # buffer / parameter as before
    assert all("fire" not in model.get_submodule(n).__dict__ for n in layers)
    path = tmp_path / "m.safetensors"
    save_compressed(model, path)
    loaded = load_model(str(path))
    for n in layers:
        assert torch.equal(loaded.get_submodule(n).threshold, model.get_submodule(n).threshold)
