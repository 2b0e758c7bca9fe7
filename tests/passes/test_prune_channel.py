"""Channel masking with membrane prior in the prune pass (issue 11, SpQuant Eq. 23): the gate masks the
neuron's input current by channel, the probe's skipped ops match the masks, the gate trains (with its cost)
in the fine-tuning, the file round-trips bit-exactly with the gate, bad inputs are refused."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from pydantic import ValidationError
from torch import nn

from snncompress.costing.describe import Probe
from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.channel_gate import gate_ops, install_channel_gate
from snncompress.passes.base import PassContext
from snncompress.passes.prune import PruneConfig
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.sim.constraints import ChannelGateCost, state_constraints
from snncompress.sim.evaluate import evaluate
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.models import TINY_MODELS
from tests.passes.test_prune import OPTIONS, ctx, images, tiny
from tests.sim.test_constraints import bundle


def _drop_first(model, layer, dropped):
    """A gate on ``layer`` that drops its first ``dropped`` channels whenever there is a prior."""
    install_channel_gate(model, layer, 0.47, 1.0)
    gate = model.get_submodule(layer).channel_gate
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.fill_(5.0)
        gate.bias[:dropped] = -5.0
    return gate


def test_dropped_channels_get_no_current_and_their_ops_are_counted_skipped():
    model = tiny()  # Linear(8->12) - Leaky - Linear(12->4) - Leaky: each hidden neuron is a channel
    _drop_first(model, "1", 4)
    seen = []
    handle = model.get_submodule("1").register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    SNNRunner(model).run(TINY_MODELS["leaky_mlp"].example_inputs(4), is_sequence=False, time_steps=3)
    handle.remove()
    assert bool((seen[0] != 0).all())  # no prior at the first step: every channel
    assert all(bool((s[:, :4] == 0).all()) and bool((s[:, 4:] != 0).all()) for s in seen[1:])
    # layer 0 sees real input on every output: 12 outputs x 8 inputs at step 0, then 8 of 12 outputs
    data = bundle("leaky_mlp")
    probe = Probe(model)
    evaluate(model, data, instruments=[probe])
    assert probe.layers["0"].synaptic_ops == pytest.approx(len(data) * 8 * (12 + 8 * 2))


def test_a_conv_gate_drops_whole_channels():
    model = tiny("conv2d_net")  # Conv2d(1->4)-BN-Leaky ...: the gate is a 4x4 point-wise conv
    gate = _drop_first(model, "2", 1)
    assert gate.weight.shape == (4, 4)
    seen = []
    handle = model.get_submodule("2").register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    SNNRunner(model).run(TINY_MODELS["conv2d_net"].example_inputs(2), is_sequence=False, time_steps=3)
    handle.remove()
    assert all(bool((s[:, 0] == 0).all()) and bool((s[:, 1:] != 0).any()) for s in seen[1:])


def test_the_pass_trains_the_gate_stores_it_and_round_trips_bit_exactly(tmp_path):
    model = tiny()
    report = run_single_pass("prune", model, {"channel_threshold": 0.47, "channel_cost": 5.0, "epochs": 2,
                                              "lr": 0.01}, ctx(), RunOptions())
    metrics = report.steps[0]["metrics"]
    layer = metrics["channel"]["layers"]["1"]
    assert layer["source"] == "0" and layer["channels"] == 12 and layer["gate"] == "depthwise"
    assert 0.0 <= layer["channels_dropped"] <= 1.0 and metrics["gate_ops"] == (12 + 12) * 3
    assert "2" not in metrics["channel"]["layers"]  # not the output layer by default
    gate = model.get_submodule("1").channel_gate
    assert not torch.equal(gate.bias.detach(), torch.full((12,), gate.bias.detach()[0].item()))  # it trained
    # the hardware report counts the gate's ops and parameters on the feeding layer
    (layer0,) = [la for la in report.measurements[-1].description.layers if la.name == "0"]
    assert layer0.gate_ops_per_step == 24 and layer0.gate_params == 24
    path = save_compressed(model, tmp_path / "c.safetensors")
    header = read_metadata(path)
    assert header["neurons"]["1"]["channel_gate"]["threshold"] == 0.47
    assert header["tensors"]["1.channel_gate.weight"]["shape"] == [12]
    loaded = load_model(str(path))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    x = TINY_MODELS["leaky_mlp"].example_inputs(4)
    a = SNNRunner(model).run(x, is_sequence=False, time_steps=3).spikes
    b = SNNRunner(loaded).run(x, is_sequence=False, time_steps=3).spikes
    assert torch.equal(a, b)
    assert save_compressed(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    data = bundle("leaky_mlp")
    probes = [Probe(m) for m in (model, loaded)]
    for m, probe in zip((model, loaded), probes, strict=True):
        evaluate(m, data, instruments=[probe])
    assert probes[0].layers["0"].synaptic_ops == probes[1].layers["0"].synaptic_ops


def test_behind_a_pooling_the_gate_drops_the_channels_before_it_and_round_trips(tmp_path):
    from snncompress.costing.describe import _connectivity
    from tests.models import T, overlapping_pool_net, pool_first_net
    # the pass: channels of the convolution, the gates' pooling over the neurons' (pooled) positions
    model = pool_first_net()  # Conv2d(1->4) - MaxPool2d(2) - Leaky - Conv2d(4->4) - AvgPool2d(2) - Leaky - ...
    report = run_single_pass("prune", model, {"channel_threshold": 0.47, "epochs": 0},
                             PassContext(data=images(), train_data=images(1)), RunOptions())
    metrics = report.steps[0]["metrics"]
    assert {n: (c["source"], c["channels"], c["gate"]) for n, c in metrics["channel"]["layers"].items()} == {
        "2": ("0", 4, "point-wise conv"), "5": ("3", 4, "point-wise conv")}
    assert metrics["gate_ops"] == (gate_ops(4, 16, False) + gate_ops(4, 4, False)) * T
    layers = {la.name: la for la in report.measurements[-1].description.layers}
    assert layers["0"].gate_ops_per_step == gate_ops(4, 16, False)
    assert layers["3"].gate_ops_per_step == gate_ops(4, 4, False)
    # a gate that drops channel 0 of layer '2' from the second step: its inputs zero, its outputs' ops skipped
    _drop_first(model, "2", 1)
    seen = []
    model.get_submodule("2").register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    x = images().dataset.tensors[0]
    with Probe(model) as probe, torch.no_grad():  # as an evaluation runs: the mask is exactly 0 / 1
        spikes = SNNRunner(model).run(x, is_sequence=False, time_steps=T).spikes
    assert all(bool((s[:, 0] == 0).all()) and bool((s[:, 1:] != 0).any()) for s in seen[1:])
    conv = model.get_submodule("0")
    used = _connectivity(conv, x.ne(0).float(), conv.weight.detach().ne(0).float())
    assert probe.layers["0"].synaptic_ops == float(used.sum() + (T - 1) * used[:, 1:].sum())
    path = save_compressed(model, tmp_path / "pool.safetensors")
    loaded = load_model(str(path))
    with Probe(loaded) as probe2, torch.no_grad():
        assert torch.equal(SNNRunner(loaded).run(x, is_sequence=False, time_steps=T).spikes, spikes)
    assert {n: a.synaptic_ops for n, a in probe2.layers.items()} == {n: a.synaptic_ops for n, a in probe.layers.items()}
    assert save_compressed(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    # an overlapping pooling keeps the channels too: a gate behind one is exact
    model = overlapping_pool_net()
    _drop_first(model, "2", 1)
    seen.clear()
    model.get_submodule("2").register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    SNNRunner(model).run(x, is_sequence=False, time_steps=T)
    assert seen[1].shape == (8, 4, 4, 4) and bool((seen[1][:, 0] == 0).all()) and bool((seen[1][:, 1:] != 0).any())


def test_a_later_fine_tuning_keeps_training_the_gate_against_its_cost():
    model = tiny()
    install_channel_gate(model, "1", 0.47, 2.0)
    (cost,) = [c for c in state_constraints(model) if isinstance(c, ChannelGateCost)]
    assert cost.costs == {"1": 2.0} and cost.lr_scale() == {"1.channel_gate.weight": 30.0,
                                                           "1.channel_gate.bias": 30.0}
    cost.attach(model)
    SNNRunner(model).run(TINY_MODELS["leaky_mlp"].example_inputs(4), is_sequence=False, time_steps=3)
    term = cost.loss_term()
    term.backward()
    assert float(term.detach()) > 0 and float(model.get_submodule("1").channel_gate.bias.grad.sum()) > 0
    cost.detach(model)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.2])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ValidationError, match="channel_threshold"):
        PruneConfig(channel_threshold=threshold)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        install_channel_gate(tiny(), "1", threshold, 1.0)


def test_a_layer_without_channels_of_its_own_is_refused():
    from snncompress.recipes import RecipeError
    lif = dict(beta=0.9, init_hidden=True)
    model = nn.Sequential(nn.Linear(8, 12), snn.Leaky(**lif), snn.Leaky(**lif), nn.Linear(12, 4),
                          snn.Leaky(**lif, output=True))
    with pytest.raises((ConfigError, RecipeError), match="channel masking of '2': no synaptic layer directly"):
        run_single_pass("prune", model, {"channel_threshold": 0.47, "epochs": 0, "targets": ["2"]}, ctx(), OPTIONS)
    assert "2" not in get_state(model).neurons
    with pytest.raises((ConfigError, RecipeError), match="nn.Sequential"):
        run_single_pass("prune", tiny("tutorial_net"), {"channel_threshold": 0.47, "epochs": 0},
                        ctx("tutorial_net"), OPTIONS)



def test_the_report_counts_the_masks_own_work_against_what_they_save():
    """Synaptic ops alone flatter a gated model: the report and the run also give the reduction with the
    gates' and the ranking's MACs added, and say which stored extras make the model larger."""
    from snncompress.costing.report import ReportInputs, make_report

    model = tiny()
    run = run_single_pass("prune", model, {"channel_threshold": 0.47, "spatial": 0.35, "epochs": 0}, ctx(),
                          RunOptions())
    report = make_report(ReportInputs(model=model, name="gated", energy="45nm"),
                         description=run.measurements[-1].description, data_name="tiny")
    totals, base = report.totals, report.baseline
    assert totals.ops.mask_ops > 0
    assert base.ops_reduction_with_masks == pytest.approx(
        base.synaptic_ops / (totals.ops.synaptic_ops + totals.ops.mask_ops))
    assert base.ops_reduction_with_masks < base.synaptic_ops_reduction
    assert run.hardware["ops_reduction_with_masks"] == pytest.approx(base.ops_reduction_with_masks)
    if base.memory_reduction < 1:
        assert any("channel gates' parameters" in w for w in report.warnings)


def test_spatial_zero_is_asked_for_and_a_channel_cost_needs_a_threshold():
    model = tiny()
    report = run_single_pass("prune", model, {"spatial": 0.0, "epochs": 0}, ctx(), OPTIONS)
    metrics = report.steps[0]["metrics"]
    assert "method" not in metrics or metrics.get("weight_sparsity") is None  # no default 50 % pruning
    assert not get_state(model).masks and metrics["importance_ops"] == 0
    with pytest.raises(ValidationError, match="needs channel_threshold"):
        PruneConfig(channel_cost=2.0)
