"""Operation counts (SpQuant Eq. 30) against hand computation."""

from __future__ import annotations

import pytest
from hw_models import conv_fp32, leaky, linear, linear_fp32, linear_quant

from snncompress.errors import InputError
from snncompress.hardware import NeuronLayer, SynapticLayer
from snncompress.hardware.ops import is_power_of_two_fraction, layer_ops, model_ops


def _tally(lops, category, op):
    return [(t.family, t.bits, t.count) for t in lops.tallies if t.category == category and t.op == op]


def test_spiking_linear_measured_and_bound():
    fc, lif = model_ops(linear_fp32())
    assert fc.synaptic_op_kind == "ac"
    assert fc.dense_ops == 48  # 12 per step * T 4
    assert fc.synaptic_ops_dense_bound == 48
    assert fc.synaptic_ops_measured == 15  # 5 input spikes * fan_out 3
    assert fc.synaptic_ops == 15 and fc.basis == "measured"
    assert _tally(fc, "synaptic", "add") == [("fp", 32, 15)]
    assert _tally(fc, "bias", "add") == [("fp", 32, 12)]  # 3 outputs * 4 steps
    assert lif.membrane_updates == 12  # 3 neurons * 4 steps
    assert _tally(lif, "membrane", "add") == [("fp", 32, 12)]
    assert _tally(lif, "leak", "shift") == [("fp", 32, 12)]  # beta 0.5 = 2^-1
    assert lif.count("mult") == 0


def test_exact_measured_count_preferred():
    fc = layer_ops(linear(measured_synaptic_ops_per_sample=11))
    assert fc.synaptic_ops == 11 and fc.synaptic_ops_measured == 11


def test_no_activity_uses_bound():
    fc = layer_ops(linear(input_spikes_per_sample=None))
    assert fc.basis == "dense_bound" and fc.synaptic_ops == 48 and fc.synaptic_ops_measured is None


def test_real_valued_conv_gives_macs_and_non_pot_leak_multiplies():
    conv, lif = model_ops(conv_fp32())
    assert conv.synaptic_op_kind == "mac" and conv.basis == "dense_bound"
    assert conv.synaptic_ops == 144  # 8 outputs * 9 fan_in * T 2
    assert _tally(conv, "synaptic", "mult") == [("fp", 32, 144)]
    assert _tally(conv, "synaptic", "add") == [("fp", 32, 144)]
    assert _tally(lif, "leak", "mult") == [("fp", 32, 16)]  # beta 0.9: 8 neurons * 2 steps


def test_pot_weights_make_mac_multiplies_shifts():
    layer = SynapticLayer(
        name="conv1",
        kind="conv2d",
        weight_shape=(2, 1, 3, 3),
        dense_ops_per_step=72,
        time_steps=2,
        input_is_spikes=False,
        input_scheme="int8",
        weight_bits=4,
        weight_scheme="pot4",
    )
    lops = layer_ops(layer)
    assert lops.count("mult") == 0
    assert _tally(lops, "synaptic", "shift") == [("int", 8, 144)]  # operands meet at int8
    assert _tally(lops, "synaptic", "add") == [("int", 8, 144)]


def test_apot_is_two_shifts_and_an_add():
    layer = SynapticLayer(
        name="c",
        kind="conv2d",
        weight_shape=(2, 1, 3, 3),
        dense_ops_per_step=72,
        time_steps=2,
        input_is_spikes=False,
        input_scheme="int8",
        weight_bits=4,
        weight_scheme="apot4",
    )
    lops = layer_ops(layer)
    assert lops.count("shift") == 288  # 2 * 144
    assert lops.count("add") == 288  # 144 combining adds + 144 accumulates


def test_ternary_weights_real_input_fp32():
    layer = SynapticLayer(
        name="c",
        kind="conv1d",
        weight_shape=(2, 1, 3),
        dense_ops_per_step=2 * 3 * 3,
        time_steps=1,
        input_is_spikes=False,
        weight_bits=2,
        weight_scheme="ternary",
    )
    lops = layer_ops(layer)
    assert lops.count("mult") == 0 and _tally(lops, "synaptic", "shift") == [("fp", 32, 18)]


def test_quantized_ops_precision():
    fc, lif = model_ops(linear_quant())
    assert _tally(fc, "synaptic", "add") == [("int", 4, 15)]  # accumulate at the weight width
    assert _tally(fc, "rescale", "shift") == [("int", 4, 12)]  # PoT exponent per output per step
    assert _tally(lif, "membrane", "add") == [("int", 2, 12)]
    assert _tally(lif, "leak", "shift") == [("int", 2, 12)]


def test_accumulator_bits_override():
    fc = layer_ops(linear(weight_bits=4, weight_scheme="int4", accumulator_bits=16))
    assert _tally(fc, "synaptic", "add") == [("int", 16, 15)]


def test_masks_pruning_and_gate():
    layer = linear(
        input_spikes_per_sample=None,
        spatial_sparsity=0.5,
        channel_sparsity=0.25,
        gate_ops_per_step=6,
        gate_params=6,
        nonzero_weights=6,
    )
    lops = layer_ops(layer)
    # 48 dense * (1-0.25)*(1-0.5) = 18, * density 0.5 = 9
    assert lops.synaptic_ops_dense_bound == pytest.approx(9.0)
    assert lops.gate_macs == 24  # 6 per step * 4
    assert _tally(lops, "gate", "mult") == [("fp", 32, 24)]


def test_measured_from_spikes_scaled_by_density_and_masks():
    lops = layer_ops(linear(nonzero_weights=6, spatial_sparsity=0.5))
    assert lops.synaptic_ops_measured == pytest.approx(3.75)  # 5 * 3 * 0.5 density * 0.5 active


def test_synaptic_neuron_ops():
    syn = NeuronLayer(name="syn1", neuron_type="Synaptic", neurons=3, time_steps=4, alpha=0.5, beta=0.75)
    lops = layer_ops(syn)
    assert lops.membrane_updates == 12
    assert lops.count("add") == 24  # syn += I and mem += syn, per update
    assert lops.count("shift") == 12  # alpha 0.5
    assert lops.count("mult") == 12  # beta 0.75


def test_rleaky_recurrent_ops():
    lops = layer_ops(leaky(neuron_type="RLeaky", recurrent_weights=9))
    assert lops.synaptic_ops_dense_bound == 36  # 9 * 4
    assert lops.synaptic_ops_measured == 6  # 2 spikes * 9 / 3 neurons
    assert lops.count("add") == 18  # 12 membrane + 6 recurrent


def test_rleaky_one_to_one_shared_weight():
    # one V shared by 3 neurons: 1 weight stored, but each spike still drives one connection
    lops = layer_ops(leaky(neuron_type="RLeaky", recurrent_weights=1, recurrent_fan_out=1))
    assert lops.synaptic_ops_dense_bound == 12  # 3 neurons * 1 * 4 steps
    assert lops.synaptic_ops_measured == 2  # 2 spikes * 1


def test_recurrent_fan_out_checked():
    with pytest.raises(InputError, match="recurrent_fan_out must be <= neurons"):
        leaky(neuron_type="RLeaky", recurrent_weights=9, recurrent_fan_out=4)


def test_per_neuron_beta_mix_and_if_neuron():
    lops = layer_ops(leaky(beta=(0.5, 0.9, 1.0)))
    assert lops.count("shift") == 4 and lops.count("mult") == 4  # 12 updates split 1/3, 1/3, none for beta 1
    assert lops.count("add") == 12


@pytest.mark.parametrize(
    ("x", "pot"),
    [(0.5, True), (0.25, True), (0.125, True), (0.75, False), (1.0, False), (0.0, False), (0.9, False)],
)
def test_power_of_two_fraction(x, pot):
    assert is_power_of_two_fraction(x) is pot
