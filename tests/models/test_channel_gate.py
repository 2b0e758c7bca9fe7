"""The channel gate (SpQuant Eq. 23, models/channel_gate.py) against its definition on hand-made tensors:
pool -> point-wise conv -> two-way softmax -> threshold; the straight-through gradient; the first step."""

from __future__ import annotations

import math

import torch

from snncompress.models.channel_gate import ChannelGate, gate_ops, install_channel_gate


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


def test_behind_a_pooling_the_gate_reads_the_pooled_membrane_and_drops_the_channel_before_it():
    import snntorch as snn
    from torch import nn

    from snncompress.costing.describe import Probe
    from snncompress.sim.runner import SNNRunner
    conv = nn.Conv2d(1, 2, 1, bias=False)  # channel c's outputs: (c + 1) * x
    model = nn.Sequential(conv, nn.MaxPool2d(2), snn.Leaky(beta=0.5, threshold=100.0, init_hidden=True),
                          nn.Flatten(), nn.Linear(8, 2), snn.Leaky(beta=0.5, init_hidden=True, output=True)).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))
    assert install_channel_gate(model, "2", 0.47, 1.0) == "0"
    x = torch.tensor([[1., 9., 2., 3.], [4., 5., 6., 7.], [8., 0.5, 7.5, 2.5], [3.5, 1.5, 4.5, 6.5]])
    pooled = x.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(2, 2, 4).max(dim=-1).values  # the pooling by hand
    current = torch.stack([pooled, 2 * pooled])
    mean0 = float(pooled.mean())  # channel 0's pooled membrane after the first step
    # z_0 = -a_0 + c: dropped at a_0 = mean0 (step 1), kept at a_0 = mean0 / 2 (step 2); channel 1 always kept
    logit = math.log(0.47 / 0.53)
    _set(model.get_submodule("2").channel_gate, [[-1.0, 0.0], [0.0, 0.0]], [0.75 * mean0 + logit, 5.0])
    mems = []
    model.get_submodule("2").register_forward_hook(lambda m, a, o: mems.append(m.mem[0].detach().clone()))
    with Probe(model) as probe, torch.no_grad():
        SNNRunner(model).run(x.reshape(1, 1, 4, 4), is_sequence=False, time_steps=3)
    keep = [[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    mem = torch.zeros(2, 2, 2)
    for t in range(3):
        mem = 0.5 * mem + current * torch.tensor(keep[t]).reshape(2, 1, 1)
        assert torch.allclose(mems[t], mem), (t, mems[t], mem)
    # the 1x1 conv on 16 non-zero inputs: 2 x 16 ops a step, channel 0's 16 skipped at step 1
    assert probe.layers["0"].synaptic_ops == 32 + 16 + 32
