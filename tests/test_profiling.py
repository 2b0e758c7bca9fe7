"""A real tiny snnTorch model through ``describe_model`` + ``build_report``, checked against hand computation.

The model: Linear 4->3 (no bias) - Leaky(beta 0.5, threshold 1, reset by subtraction, output), run for
T = 2 steps on two static 0/1 inputs, so every figure can be worked out on paper:

    W = [[0.1, 0.6, 0.6, 0.6],      x1 = [1, 0, 1, 0]  ->  I = W x1 = [0.7, 1.6, 0.4]
         [1.5, 0.1, 0.1, 0.1],      x2 = [0, 1, 1, 1]  ->  I = W x2 = [1.8, 0.3, 0.6]
         [0.2, 0.2, 0.2, 0.2]]

    x1: t0 u = [0.7, 1.6, 0.4] -> s = [0, 1, 0];  t1 u = 0.5 u + I - s = [1.05, 1.4, 0.6] -> s = [1, 1, 0]
    x2: t0 u = [1.8, 0.3, 0.6] -> s = [1, 0, 0];  t1 u = [1.7, 0.45, 0.9]                -> s = [1, 0, 0]

    spikes per sample: (3 + 2) / 2 = 2.5; predictions (argmax of counts) 1 and 0; labels [1, 0]: 100 %
    input spikes per sample: (2 + 3) * T / 2 = 5
    synaptic ops (ACs, inputs are spikes): every active input drives 3 weights:
        x1: 2 * 3 = 6 per step, x2: 3 * 3 = 9 per step -> (6 + 9) * T / 2 = 15 per sample
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import snntorch as snn
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset

from snncompress.costing.describe import (
    describe_model,
    description_from_dict,
    description_to_dict,
    membrane_label,
    scheme_label,
)
from snncompress.costing.report import ReportInputs, make_report, print_report, record_baseline
from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import DataError, FileFormatError
from snncompress.hardware import NeuronLayer, SynapticLayer, build_report
from snncompress.hardware.report import SCHEMA_PATH
from snncompress.state import get_state

T = 2
W = [[0.1, 0.6, 0.6, 0.6], [1.5, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]]
X = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
Y = torch.tensor([1, 0])
PJ_PER_BIT = 10.0 / 64  # 45 nm, 64-bit read from an 8 KB SRAM: every model below is < 8 KB

try:  # the quantizers are another engineer's module; the quantized cases need them
    from snncompress.models.membrane import install_membrane_quantizer
    from snncompress.quant import parse_membrane_quant, parse_weight_scheme

    HAVE_QUANT = True
except ImportError:  # pragma: no cover - only while snncompress.quant is being written
    HAVE_QUANT = False
needs_quant = pytest.mark.skipif(not HAVE_QUANT, reason="snncompress.quant is not importable yet")


def tiny_model() -> nn.Sequential:
    model = nn.Sequential(
        nn.Linear(4, 3, bias=False),
        snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True, output=True, reset_mechanism="subtract"),
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W))
    return model.eval()


def tiny_data(x: torch.Tensor = X, y: torch.Tensor = Y, steps: int = T) -> DataBundle:
    return DataBundle(
        "tiny", TensorDataset(x, y), False, steps, 3, DataOptions(time_steps=steps, batch_size=2)
    )


def pruned_model() -> nn.Sequential:
    """W[0, 0] pruned: x1 now drives 5 connections per step, x2 still 9 -> (5 + 9) * 2 / 2 = 14 ops."""
    model = tiny_model()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    with torch.no_grad():
        model[0].weight.mul_(mask)
    get_state(model).masks["0.weight"] = mask
    return model


def quantized_model() -> nn.Sequential:
    """pot4 weights (per-tensor PoT scale, stored as an int32 exponent) and a ternary membrane."""
    model = tiny_model()
    scheme = parse_weight_scheme("pot4")
    enc = scheme.encode(model[0].weight)
    with torch.no_grad():
        model[0].weight.copy_(scheme.decode(enc))
    get_state(model).tensors["0.weight"] = enc
    install_membrane_quantizer(model, "1", parse_membrane_quant("ternary"))
    return model


# -- the description -------------------------------------------------------------------------------


def test_measured_activity_by_hand():
    desc = describe_model(tiny_model(), tiny_data(), name="tiny")
    fc, lif = desc.layers
    assert isinstance(fc, SynapticLayer) and isinstance(lif, NeuronLayer)
    assert (fc.name, fc.kind, fc.weight_shape, fc.time_steps) == ("0", "linear", (3, 4), T)
    assert fc.input_is_spikes and not fc.has_bias
    assert fc.dense_ops_per_step == fc.connections_per_step == 12
    assert fc.input_spikes_per_sample == 5
    assert fc.measured_synaptic_ops_per_sample == 15
    assert (lif.neurons, lif.beta, lif.param_count, lif.per_neuron_params) == (3, (0.5,), 2, False)
    assert lif.spikes_per_sample == 2.5
    assert desc.accuracy == 1.0
    assert desc.source == {"data": "tiny", "samples": "2"}


def test_measured_ops_with_a_pruned_weight_by_hand():
    desc = describe_model(pruned_model(), tiny_data())
    fc, lif = desc.layers
    assert fc.nonzero_weights == 11
    assert fc.measured_synaptic_ops_per_sample == 14  # (5 + 9) * 2 steps / 2 samples
    # x1: neuron 0 now gets 0.6 per step: 0.6, 0.9, no spike; neuron 1 as before (2 spikes)
    assert lif.spikes_per_sample == 2.0


def test_a_mask_alone_removes_ops_even_if_the_weight_is_not_zeroed():
    model = tiny_model()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    get_state(model).masks["0.weight"] = mask
    assert describe_model(model, tiny_data()).layers[0].measured_synaptic_ops_per_sample == 14


def test_accuracy_given_in_percent_is_recorded_as_a_fraction():
    assert describe_model(tiny_model(), tiny_data(), accuracy=42.0).accuracy == pytest.approx(0.42)


def test_shapes_only_without_measuring():
    desc = describe_model(tiny_model(), tiny_data(), measure=False)
    fc, lif = desc.layers
    assert fc.measured_synaptic_ops_per_sample is None and fc.input_spikes_per_sample is None
    assert lif.spikes_per_sample is None and desc.accuracy is None
    assert fc.connections_per_step == 12 and desc.time_steps == T


def test_empty_data_is_an_input_error():
    with pytest.raises(DataError, match="empty"):
        describe_model(tiny_model(), tiny_data(X[:0], Y[:0]))


@needs_quant
def test_quantized_state_read_from_the_model():
    desc = describe_model(quantized_model(), tiny_data())
    fc, lif = desc.layers
    assert (fc.weight_scheme, fc.weight_bits) == ("pot4", 4)
    assert (fc.scale_count, fc.scale_bits, fc.scale_is_power_of_two) == (1, 32, True)
    assert (lif.membrane_scheme, lif.membrane_bits) == ("ternary", 2)
    assert fc.measured_synaptic_ops_per_sample == 15  # pot4 keeps every weight non-zero here


def test_real_valued_input_gives_macs_and_padding_is_not_counted():
    from tests.models import conv2d_net, example_inputs

    x = example_inputs("conv2d_net")
    desc = describe_model(conv2d_net(), tiny_data(x, torch.zeros(len(x), dtype=torch.long), 3))
    conv1, _, conv2, _, fc, _ = desc.layers
    assert not conv1.input_is_spikes  # pixels
    assert conv2.input_is_spikes  # max-pooled spikes are still 0/1
    assert not fc.input_is_spikes  # average-pooled spikes are not
    # Conv2d(1->4, k3, pad 1) on 8x8: 4 * 64 outputs * 9 taps, less the taps on the padding:
    # per output row 3 kernel rows are in bounds, 2 on the first and last row -> 22 * 22 taps per channel
    assert conv1.dense_ops_per_step == 4 * 64 * 9
    assert conv1.connections_per_step == 4 * 22 * 22


def test_rleaky_recurrence_described():
    from tests.models import example_inputs, rleaky_mlp

    x = example_inputs("rleaky_mlp")
    desc = describe_model(rleaky_mlp(), tiny_data(x, torch.zeros(len(x), dtype=torch.long), 3))
    all_to_all, one_to_one = desc.layers[1], desc.layers[3]
    assert (all_to_all.recurrent_weights, all_to_all.recurrent_fan_out) == (144, 12)
    assert all_to_all.param_count == 1 + 1 + 12  # beta, threshold, the recurrent Linear's bias
    assert (one_to_one.recurrent_weights, one_to_one.recurrent_fan_out) == (1, 1)  # one shared V
    report = build_report(desc, "45nm")
    rec = report.layers[3].ops
    assert rec.synaptic_ops_measured == pytest.approx(one_to_one.spikes_per_sample)  # spike * V: one add


@pytest.mark.parametrize(
    "name",
    [
        "leaky_mlp",
        "synaptic_mlp",
        "subtract_reset_mlp",
        "conv1d_net",
        "tutorial_net",
        "tutorial_sequence_net",
    ],
)
def test_every_tiny_model_describes_and_reports(name):
    from tests.models import TINY_MODELS

    spec = TINY_MODELS[name]
    x = spec.example_inputs()
    data = DataBundle(
        name,
        TensorDataset(x, torch.zeros(len(x), dtype=torch.long)),
        spec.is_sequence,
        3,
        4,
        DataOptions(time_steps=3),
    )
    desc = describe_model(spec.build(), data, name=name)
    assert [
        type(layer).__name__ for layer in desc.layers if isinstance(layer, NeuronLayer)
    ] and desc.time_steps == 3
    assert [layer.neuron_type for layer in desc.layers if isinstance(layer, NeuronLayer)] == list(
        spec.neuron_types
    )
    report = build_report(desc, "45nm")
    assert report.totals.ops.measured_layers and not report.totals.ops.dense_bound_layers


def test_description_round_trip_through_json():
    desc = describe_model(pruned_model(), tiny_data(), name="tiny")
    data = json.loads(json.dumps(description_to_dict(desc)))
    assert data["format"] == "snncompress.hardware.ModelDescription" and data["version"] == 1
    assert description_from_dict(data) == desc


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("layers"), "no 'layers'"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d["layers"][0].update(colour="red"), r"layers\[0\] \(0\): unknown fields colour"),
        (lambda d: d["layers"][1].pop("neurons"), r"layers\[1\] \(1\)"),
        (lambda d: d["layers"][0].update(layer_type="pool"), "layer_type must be"),
    ],
)
def test_bad_stored_description_is_a_file_format_error(edit, match):
    data = description_to_dict(describe_model(tiny_model(), tiny_data()))
    edit(data)
    with pytest.raises(FileFormatError, match=match):
        description_from_dict(data)


@pytest.mark.parametrize(
    ("scheme", "label"),
    [
        ({"kind": "pot", "bits": 4, "log_rounding": True}, "pot4"),
        ({"kind": "apot", "bits": 5}, "apot5"),
        ({"kind": "int", "bits": 8, "per_channel": False, "rounding": "stochastic"}, "int8"),
        ({"kind": "ternary", "rule": "twn", "delta_factor": 0.5}, "ternary"),
        ({"kind": "fixed", "integer_bits": 3, "fractional_bits": 5}, "fixed3.5"),
        ({"kind": "plugin-magic"}, "int6"),
    ],
)
def test_scheme_labels(scheme, label):
    assert scheme_label(scheme, 6) == label


def test_membrane_labels():
    assert membrane_label({"levels_low": -1, "levels_high": 1}) == (2, "ternary")
    assert membrane_label({"levels_low": -3, "levels_high": 1}) == (3, "int3")
    assert membrane_label({"levels_low": -8, "levels_high": 7}) == (4, "int4")


# -- the report, by hand ---------------------------------------------------------------------------


def test_fp32_report_by_hand():
    r = build_report(describe_model(tiny_model(), tiny_data()), "45nm")
    fc, lif = r.layers
    # memory: 12 weights * 32; beta + threshold per layer * 32; 3 membranes * 32; 3 spike bits
    assert (fc.memory.weights, fc.memory.total_bits) == (384, 384)
    assert (lif.memory.neuron_params, lif.memory.membrane, lif.memory.spikes) == (64, 96, 3)
    assert r.totals.memory.total_bits == 547 and r.totals.memory.parameter_bits == 448
    # ops: dense 12 * T; measured 15 ACs; 3 neurons * T membrane updates, each an add and a leak shift
    assert (fc.ops.dense_ops, fc.ops.synaptic_ops_dense_bound, fc.ops.synaptic_ops) == (24, 24, 15)
    assert (fc.ops.synaptic_op_kind, fc.ops.basis, fc.ops.adds) == ("ac", "measured", 15)
    assert (lif.ops.membrane_updates, lif.ops.adds, lif.ops.shifts, lif.ops.mults) == (6, 6, 6, 0)
    # energy: fp32 add 0.9 pJ; 15 weight reads of 32 bits; 6 membrane reads + writes; 3 spikes * T * 2
    assert fc.energy.compute_add == pytest.approx(15 * 0.9)
    assert fc.energy.memory_weights == pytest.approx(15 * 32 * PJ_PER_BIT)  # 75
    assert lif.energy.compute_add == pytest.approx(12 * 0.9)
    assert lif.energy.memory_membrane == pytest.approx(2 * 6 * 32 * PJ_PER_BIT)  # 60
    assert lif.energy.memory_spikes == pytest.approx(2 * 3 * T * PJ_PER_BIT)  # 1.875
    assert r.totals.energy.total_pj == pytest.approx(161.175)
    assert r.accuracy == 1.0 and r.warnings == []


@needs_quant
def test_quantized_report_by_hand():
    base = describe_model(tiny_model(), tiny_data(), name="fp32")
    r = build_report(describe_model(quantized_model(), tiny_data(), name="quant"), "45nm", base)
    fc, lif = r.layers
    # 12 pot4 weights + one int32 exponent; 3 ternary membranes at 2 bits
    assert (fc.memory.weights, fc.memory.scales) == (48, 32)
    assert (lif.memory.neuron_params, lif.memory.membrane, lif.memory.spikes) == (64, 6, 3)
    assert r.totals.memory.total_bits == 153
    # 15 int4 accumulates + 6 rescales by the PoT scale (shifts, 3 outputs * T); int2 membrane add + leak
    assert (fc.ops.adds, fc.ops.shifts, fc.ops.mults) == (15, 6, 0)
    assert (lif.ops.adds, lif.ops.shifts) == (6, 6)
    int4_add, int2_add = 0.03 * 4 / 8, 0.03 * 2 / 8  # scaled from the INT8 add, linear in bits
    assert fc.energy.compute_add == pytest.approx(21 * int4_add)
    assert fc.energy.memory_weights == pytest.approx(15 * 4 * PJ_PER_BIT)
    assert fc.energy.memory_other == 0  # a single per-tensor exponent sits in a register
    assert lif.energy.compute_add == pytest.approx(12 * int2_add)
    assert lif.energy.memory_membrane == pytest.approx(2 * 6 * 2 * PJ_PER_BIT)
    assert r.totals.energy.total_pj == pytest.approx(15.405)
    b = r.baseline
    assert b.memory_reduction == pytest.approx(547 / 153)
    assert b.synaptic_ops_reduction == pytest.approx(1.0)
    assert b.energy_reduction == pytest.approx(161.175 / 15.405)
    assert b.accuracy_change == pytest.approx(r.accuracy - 1.0)
    assert any("int4 add scaled from int8" in w for w in r.warnings)


def test_pruned_report_by_hand_says_pruning_raised_energy():
    base = describe_model(tiny_model(), tiny_data(), name="fp32")
    r = build_report(describe_model(pruned_model(), tiny_data(), name="pruned"), "45nm", base)
    fc = r.layers[0]
    # bitmap (11 * 32 + 12 = 364 bits) beats dense (384) and CSR (352 + 11 * 2 + 4 * 4 = 390)
    assert fc.sparse_format == "bitmap" and fc.format_bits == {"dense": 384, "bitmap": 364, "csr": 390}
    assert (fc.memory.weights, fc.memory.index) == (352, 12)
    assert (fc.ops.synaptic_ops_dense_bound, fc.ops.synaptic_ops) == (22, 14)  # 24 * 11/12; measured
    # 14 reads of a 32-bit weight and 12/11 index bits, irregular access x1.45
    assert fc.energy.memory_weights == pytest.approx(14 * 32 * 1.45 * PJ_PER_BIT)
    assert fc.energy.memory_index == pytest.approx(14 * 12 / 11 * 1.45 * PJ_PER_BIT)
    pruned_pj = 14 * 0.9 + (14 * 32 + 14 * 12 / 11) * 1.45 * PJ_PER_BIT
    dense_pj = (14 / (11 / 12)) * (0.9 + 32 * PJ_PER_BIT)  # the same layer unpruned, ops scaled back up
    assert fc.energy.total_pj == pytest.approx(pruned_pj)
    assert fc.dense_twin_energy_pj == pytest.approx(dense_pj)
    pct = (pruned_pj / dense_pj - 1) * 100
    assert f"layer 0: pruning raised energy by {pct:.0f}% over the same layer dense" in " ".join(r.warnings)
    assert r.baseline.energy_reduction < 1


def test_make_report_warns_when_the_compressed_model_costs_more():
    model = pruned_model()
    get_state(model).baseline = {
        "data": "tiny",
        "description": description_to_dict(describe_model(tiny_model(), tiny_data(), name="fp32")),
    }
    r = make_report(ReportInputs(model, "pruned", tiny_data()))
    assert r.baseline.name == "fp32"
    assert any(w.startswith("energy is") and "higher than the baseline fp32's" in w for w in r.warnings)


def test_report_json_validates_against_the_schema():
    base = describe_model(tiny_model(), tiny_data(), name="fp32")
    r = build_report(describe_model(pruned_model(), tiny_data(), name="pruned"), "7nm", base)
    jsonschema.validate(json.loads(r.model_dump_json()), json.loads(SCHEMA_PATH.read_text()))


# -- the baseline and the demo's entry point --------------------------------------------------------


def test_record_baseline_then_report_against_it():
    model = tiny_model()
    desc = record_baseline(model, tiny_data(), spec="tiny-fp32")
    stored = get_state(model).baseline
    assert stored["model"] == "tiny-fp32" and stored["data"] == "tiny" and stored["accuracy"] == 100.0
    assert description_from_dict(stored["description"]) == desc
    with torch.no_grad():  # "compress": prune W[0, 0]
        model[0].weight[0, 0] = 0
    get_state(model).masks["0.weight"] = torch.tensor([[False, True, True, True]] + [[True] * 4] * 2)
    r = make_report(ReportInputs(model, "tiny", tiny_data()))
    assert r.baseline.name == "tiny-fp32"
    assert r.baseline.synaptic_ops_reduction == pytest.approx(15 / 14)


def test_stored_baseline_measured_on_other_data_is_flagged():
    model = tiny_model()
    record_baseline(model, tiny_data(), spec="fp32")
    other = DataBundle("other", TensorDataset(X, Y), False, T, 3, DataOptions(time_steps=T))
    r = make_report(ReportInputs(model, "m", other))
    assert any("the baseline was measured on tiny and this model on other" in w for w in r.warnings)


def test_no_data_and_no_recorded_data_set_is_a_data_error():
    with pytest.raises(DataError, match="pass --data"):
        make_report(ReportInputs(tiny_model(), "tiny"))


def test_print_report_for_the_demo():
    console = Console(record=True, width=100, color_system=None)
    report = print_report(tiny_model(), tiny_data(), console, name="tiny")
    text = console.export_text()
    assert report.totals.memory.total_bits == 547
    assert "Hardware report: tiny" in text and "Memory (bits)" in text and "…" not in text


# -- NeuroBench agrees on the fp32 demo model -------------------------------------------------------


def test_same_figures_as_neurobench_on_the_demo_model():
    pytest.importorskip("neurobench", reason="NeuroBench is not installed (pip install neurobench)")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import Footprint
    from neurobench.metrics.workload import MembraneUpdates, SynapticOperations
    from neurobench.models import SNNTorchModel
    from torch.utils.data import DataLoader

    from snncompress.data import load_data
    from snncompress.fileformat.loading import load_model

    data = load_data("digits", DataOptions(time_steps=8, batch_size=32, limit=64))
    footprint = Footprint()(SNNTorchModel(load_model("demo")))  # before a run fills the membrane buffers
    ours = build_report(describe_model(load_model("demo"), data, name="demo"), "45nm")
    x = torch.stack([data.dataset[i][0] for i in range(len(data))])
    y = torch.stack([data.dataset[i][1] for i in range(len(data))])
    loader = DataLoader(TensorDataset(x.unsqueeze(1).repeat(1, 8, 1, 1, 1), y), batch_size=32)
    theirs = Benchmark(
        SNNTorchModel(load_model("demo")),
        loader,
        [],
        [lambda s: s.sum(1).argmax(-1)],
        [[], [SynapticOperations, MembraneUpdates]],
    ).run(quiet=True)
    ops = theirs["SynapticOperations"]
    assert ours.totals.ops.effective_macs == pytest.approx(ops["Effective_MACs"])
    assert ours.totals.ops.effective_acs == pytest.approx(ops["Effective_ACs"])
    assert ours.totals.ops.dense_ops == pytest.approx(ops["Dense"])
    assert ours.totals.ops.membrane_updates == pytest.approx(theirs["MembraneUpdates"])
    neuron_layers = sum(1 for layer in ours.layers if layer.role == "neuron")
    # NeuroBench also counts snnTorch's graded_spikes_factor (fp32) and reset_mechanism_val (int64)
    assert footprint == ours.totals.memory.parameter_bytes + 12 * neuron_layers
