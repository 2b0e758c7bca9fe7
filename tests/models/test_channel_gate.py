"""The channel gate (SpQuant Eq. 23, models/channel_gate.py) against its definition on hand-made tensors:
pool -> point-wise conv -> two-way softmax -> threshold; the straight-through gradient; the first step."""

from __future__ import annotations

import math

import torch

from snncompress.models.channel_gate import ChannelGate, gate_ops


def _set(gate: ChannelGate, weight, bias) -> ChannelGate:
    with torch.no_grad():
        gate.weight.copy_(torch.tensor(weight))
        gate.bias.copy_(torch.tensor(bias))
    return gate


def test_a_conv_gate_pools_mixes_softmaxes_and_thresholds():
    # 1 sample, 2 channels of 2x2: channel means 1.0 and -0.5
    mem = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]]])
    gate = _set(ChannelGate(2, depthwise=False, threshold=0.47), [[1.0, 0.0], [2.0, 1.0]], [0.0, -0.3])
    z = [1.0 * 1.0 + 0.0 * -0.5 + 0.0, 2.0 * 1.0 + 1.0 * -0.5 - 0.3]  # 1.0, 1.2
    p = [math.exp(v) / (math.exp(0.0) + math.exp(v)) for v in z]  # softmax over (drop = 0, keep = z)
    assert torch.allclose(gate.keep_probability(mem), torch.tensor([p]))
    with torch.no_grad():
        assert gate(mem).tolist() == [[1.0, 1.0]]
    # a bias that puts channel 1 below the threshold: sigmoid(1.2 - 1.5) = 0.43 < 0.47
    _set(gate, [[1.0, 0.0], [2.0, 1.0]], [0.0, -1.8])
    with torch.no_grad():
        assert gate(mem).tolist() == [[1.0, 0.0]]


def test_a_linear_gate_is_depthwise_on_each_neurons_own_membrane():
    mem = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.1]])
    gate = _set(ChannelGate(3, depthwise=True, threshold=0.5), [1.0, 1.0, -1.0], [0.0, 0.0, 0.0])
    # z = u * w: 0.5, -1, -2 | 0, 0, -0.1 -> keep where sigmoid(z) >= 0.5, i.e. z >= 0
    with torch.no_grad():
        assert gate(mem).tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert gate.weight.shape == (3,) and gate_ops(3, 1, True) == 3 + 3  # MACs + compares, no pooling


def test_a_sample_with_no_prior_keeps_every_channel():
    gate = _set(ChannelGate(2, depthwise=True, threshold=0.47), [1.0, 1.0], [-5.0, -5.0])  # drops anything
    mem = torch.tensor([[0.0, 0.0], [1.0, 0.5]])
    with torch.no_grad():
        assert gate(mem).tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_the_straight_through_estimator_passes_the_probabilitys_gradient():
    gate = _set(ChannelGate(2, depthwise=False, threshold=0.47), [[0.5, 0.0], [0.0, 0.5]], [0.0, -3.0])
    mem = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]]]).reshape(2, 2, 1)  # [B=2, C=2, 1 position]
    mask = gate(mem)
    assert set(mask.detach().reshape(-1).tolist()) <= {0.0, 1.0}  # binary in value
    current = torch.tensor([[2.0, 3.0], [1.0, 4.0]])
    (mask * current).sum().backward()
    p = gate.keep_probability(mem).detach()
    # d/d bias_c of sum_b mask_bc * I_bc through p: sum_b I_bc * p(1 - p)
    expected = (current * p * (1 - p)).sum(dim=0)
    assert torch.allclose(gate.bias.grad, expected)
    assert gate.weight.grad.abs().sum() > 0


def test_gate_ops_count_pooling_macs_and_compares():
    assert gate_ops(16, 64, False) == 16 * 64 + 16 * 16 + 16
