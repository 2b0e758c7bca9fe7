"""Energy (SpQuant Eq. 31, Horowitz 2014) against hand computation.

45 nm SRAM 8 KB: 10 pJ per 64 bits = 0.15625 pJ per bit. Every tiny model here fits in 8 KB.
"""

from __future__ import annotations

import pytest
from hw_models import conv_fp32, leaky, linear, linear_fp32, linear_quant, model

from snncompress.hardware import CostModelConfig, NeuronLayer, build_report, load_energy_table
from snncompress.hardware.energy import memory_class

PJ_PER_BIT_8KB = 10 / 64


def _layers(report):
    return {r.name: r.energy for r in report.layers}


def test_fp32_linear_45nm():
    r = build_report(linear_fp32(), "45nm")
    fc, lif = _layers(r)["fc1"], _layers(r)["lif1"]
    assert fc.compute_add == pytest.approx(24.3)  # (15 synaptic + 12 bias adds) * 0.9
    assert fc.memory_weights == pytest.approx(75.0)  # 15 reads * 32 bits * 10/64
    assert fc.memory_other == pytest.approx(60.0)  # 12 bias reads * 32 bits * 10/64
    assert lif.compute_add == pytest.approx(21.6)  # (12 adds + 12 shifts) * 0.9
    assert lif.memory_membrane == pytest.approx(120.0)  # 2 (read+write) * 12 updates * 32 bits * 10/64
    assert lif.memory_spikes == pytest.approx(3.75)  # 2 * 3 neurons * 4 steps * 1 bit * 10/64
    assert r.totals.energy.total_pj == pytest.approx(304.65)  # 159.3 + 145.35


def test_fp32_linear_7nm():
    r = build_report(linear_fp32(), "7nm")
    fc, lif = _layers(r)["fc1"], _layers(r)["lif1"]
    assert fc.compute_add == pytest.approx(10.26)  # 27 * 0.38
    assert lif.compute_add == pytest.approx(9.12)  # 24 * 0.38
    # memory figures are the assumed 45 nm SRAM ones: 135 + 123.75
    assert r.totals.energy.total_pj == pytest.approx(278.13)
    assert any("assumptions" in w for w in r.warnings)


def test_conv_first_layer_macs_45nm():
    r = build_report(conv_fp32(), "45nm")
    conv, lif = _layers(r)["conv1"], _layers(r)["lif1"]
    assert conv.compute_add == pytest.approx(129.6)  # 144 * 0.9
    assert conv.compute_mult == pytest.approx(532.8)  # 144 * 3.7
    assert conv.memory_weights == pytest.approx(720.0)  # 144 * 32 bits * 10/64
    assert lif.compute_mult == pytest.approx(59.2)  # 16 leak mults (beta 0.9) * 3.7
    assert lif.total_pj == pytest.approx(238.6)  # 14.4 + 59.2 + 160 membrane + 5 spikes
    assert r.totals.energy.total_pj == pytest.approx(1621.0)  # 1382.4 + 238.6
    assert any("dense upper bound" in w and "conv1" in w for w in r.warnings)


def test_quantized_45nm_scaled_and_flagged():
    r = build_report(linear_quant(), "45nm")
    fc, lif = _layers(r)["fc1"], _layers(r)["lif1"]
    assert fc.compute_add == pytest.approx(0.405)  # (15 adds + 12 shifts) at int4: 0.03 * 4/8 = 0.015
    assert fc.memory_weights == pytest.approx(9.375)  # 15 * 4 bits * 10/64
    assert fc.memory_other == pytest.approx(15.0)  # 12 scale reads * 8 bits * 10/64
    assert lif.compute_add == pytest.approx(0.18)  # 24 * int2 add 0.0075
    assert lif.memory_membrane == pytest.approx(7.5)  # 2 * 12 * 2 bits * 10/64
    assert r.totals.energy.total_pj == pytest.approx(36.21)  # 24.78 + 11.43
    assert (
        "energy for int2 add scaled from int8 in table 45nm (energy ~ bits^1); not a measured figure"
        in r.warnings
    )
    assert any(w.startswith("energy for int4 add scaled from int8") for w in r.warnings)
    tally = next(t for t in r.layers[0].ops.tallies if t.category == "synaptic")
    assert tally.scaled_from_bits == 8 and tally.energy_pj_per_op == pytest.approx(0.015)


def test_user_table(tmp_path):
    from test_hw_energy_table import USER_YAML

    p = tmp_path / "chip.yaml"
    p.write_text(USER_YAML)
    r = build_report(linear_fp32(), load_energy_table(p))
    # 64 KB SRAM at 32 pJ / 64 bits = 0.5 pJ/bit; fp32 add 1.0
    # fc1: 27 adds * 1.0 + 480 weight bits * 0.5 + 384 bias bits * 0.5 = 459
    # lif1: 24 * 1.0 + 768 membrane bits * 0.5 + 24 spike bits * 0.5 = 420
    assert r.totals.energy.total_pj == pytest.approx(879.0)
    assert r.energy_table.name == "mychip"


def test_synaptic_neuron_energy():
    syn = NeuronLayer(
        name="syn1", neuron_type="Synaptic", neurons=3, time_steps=4, alpha=0.5, beta=0.75, param_count=3
    )
    r = build_report(model(syn), "45nm")
    e = r.layers[0].energy
    assert e.compute_add == pytest.approx(32.4)  # (24 adds + 12 shifts) * 0.9
    assert e.compute_mult == pytest.approx(44.4)  # 12 * 3.7
    assert e.memory_membrane == pytest.approx(240.0)  # 2 * 12 updates * 2 states * 32 bits * 10/64
    assert e.total_pj == pytest.approx(320.55)  # + 3.75 spikes


def test_rleaky_energy():
    r = build_report(model(leaky(neuron_type="RLeaky", recurrent_weights=9)), "45nm")
    e = r.layers[0].energy
    assert e.memory_weights == pytest.approx(30.0)  # 6 recurrent ACs * 32 bits * 10/64
    assert e.total_pj == pytest.approx(180.75)  # 27 compute + 30 + 120 + 3.75


def test_per_neuron_params_are_read():
    r = build_report(model(leaky(param_count=6, per_neuron_params=True)), "45nm")
    # 12 updates * 2 params per neuron * 32 bits * 10/64 = 120
    assert r.layers[0].energy.memory_other == pytest.approx(120.0)


def test_masks_and_gate_energy():
    layer = linear(
        input_spikes_per_sample=None,
        spatial_sparsity=0.5,
        channel_sparsity=0.25,
        gate_ops_per_step=6,
        gate_params=6,
        mask_bits=3,
    )
    e = build_report(model(layer), "45nm").layers[0].energy
    assert e.compute_add == pytest.approx(37.8)  # (18 ACs + 24 gate adds) * 0.9
    assert e.compute_mult == pytest.approx(88.8)  # 24 gate mults * 3.7
    assert e.memory_weights == pytest.approx(90.0)  # 18 * 32 * 10/64
    assert e.memory_other == pytest.approx(121.875)  # (24 gate reads * 32 + 4 steps * 3 mask bits) * 10/64
    assert e.total_pj == pytest.approx(338.475)


def test_pruned_bitmap_energy_with_irregular_access():
    r = build_report(model(linear(nonzero_weights=6, measured_synaptic_ops_per_sample=8), leaky()), "45nm")
    fc = r.layers[0]
    assert fc.sparse_format == "bitmap"
    assert fc.energy.compute_add == pytest.approx(7.2)  # 8 * 0.9
    assert fc.energy.memory_weights == pytest.approx(58.0)  # 8 * 32 bits * 1.45 * 10/64
    assert fc.energy.memory_index == pytest.approx(3.625)  # 8 * (12/6 = 2 index bits) * 1.45 * 10/64
    # dense twin: 8/0.5 = 16 ops: 16 * 0.9 + 16 * 32 * 10/64 = 14.4 + 80
    assert fc.dense_twin_energy_pj == pytest.approx(94.4)
    assert not any("raised energy" in w for w in r.warnings)


def test_pruning_raises_energy_warning():
    layer = linear(
        weight_bits=2, weight_scheme="ternary", nonzero_weights=6, measured_synaptic_ops_per_sample=8
    )
    r = build_report(model(layer), "45nm", config=CostModelConfig(sparse_format="bitmap"))
    fc = r.layers[0]
    # pruned: 8 int2 adds * 0.0075 = 0.06; (8*2 weight + 8*2 index bits) * 1.45 * 10/64 = 7.25 -> 7.31
    assert fc.energy.total_pj == pytest.approx(7.31)
    # twin: 16 * 0.0075 = 0.12; 16 * 2 bits * 10/64 = 5 -> 5.12
    assert fc.dense_twin_energy_pj == pytest.approx(5.12)
    assert (
        "layer fc1: pruning raised energy by 43% over the same layer dense (index reads and irregular-access "
        "factor 1.45 outweigh the skipped ops)"
    ) in r.warnings


def test_irregular_factor_one_is_ideal_sparse_hardware():
    layer = linear(
        weight_bits=2, weight_scheme="ternary", nonzero_weights=6, measured_synaptic_ops_per_sample=8
    )
    cfg = CostModelConfig(sparse_format="bitmap", irregular_access_factor=1.0)
    fc = build_report(model(layer), "45nm", config=cfg).layers[0]
    assert fc.energy.total_pj == pytest.approx(5.06)  # 0.06 + 32 bits * 10/64


def test_memory_classes():
    t = load_energy_table("45nm")
    cfg = CostModelConfig()
    assert memory_class(t, 8192 * 8, cfg).label == "SRAM 8 KB"
    assert memory_class(t, 8192 * 8 + 1, cfg).label == "SRAM 32 KB"
    assert memory_class(t, 1048576 * 8, cfg).label == "SRAM 1 MB"
    dram = memory_class(t, 1048576 * 8 + 8, cfg)
    assert dram.capacity_bytes is None and dram.pj_per_bit == pytest.approx(1300 / 64)
    assert memory_class(
        t, 1048576 * 8 + 8, CostModelConfig(dram_estimate="high")
    ).pj_per_bit == pytest.approx(2600 / 64)


def test_memory_scope_model_vs_layer():
    big = linear(
        weight_shape=(100, 100), dense_ops_per_step=10000, fan_out=100
    )  # 320,000 bits = 40,000 bytes
    lif = leaky(neurons=100)
    r_model = build_report(model(big, lif), "45nm")
    assert [r.memory_class for r in r_model.layers] == ["SRAM 1 MB", "SRAM 1 MB"]
    r_layer = build_report(model(big, lif), "45nm", config=CostModelConfig(memory_scope="layer"))
    assert [r.memory_class for r in r_layer.layers] == ["SRAM 1 MB", "SRAM 8 KB"]
    assert r_layer.layers[1].energy.memory_membrane < r_model.layers[1].energy.memory_membrane


def test_dram_warning():
    huge = linear(weight_shape=(1000, 1000), dense_ops_per_step=1_000_000, fan_out=1000)  # 4 MB of fp32
    r = build_report(model(huge), "45nm")
    assert r.layers[0].memory_class == "DRAM (low estimate)"
    assert any("DRAM" in w for w in r.warnings)
