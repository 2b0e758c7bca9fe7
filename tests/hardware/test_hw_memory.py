"""Memory (SpQuant Eq. 29; tinySNN Eq. 4) against hand computation."""

from __future__ import annotations

from hw_models import conv_fp32, leaky, linear, linear_fp32, linear_quant, model

from snncompress.hardware import CostModelConfig, NeuronLayer
from snncompress.hardware.memory import choose_format, layer_memory, model_memory, total_bits

AUTO = CostModelConfig()


def test_dense_fp32_linear():
    mems = model_memory(linear_fp32())
    fc, lif = (m.bits for m in mems)
    assert fc.weights == 384  # 12 weights * 32 bits
    assert fc.bias == 96  # 3 biases * 32
    assert fc.index == 0 and mems[0].sparse_format == "dense"
    assert lif.neuron_params == 64  # beta + threshold, 32 bits each
    assert lif.membrane == 96  # 3 neurons * 1 state * 32 bits
    assert lif.spikes == 3  # one step of spikes, 1 bit per neuron
    total = total_bits(mems)
    assert total.total == 643  # 384 + 96 + 64 + 96 + 3
    assert total.parameters == 544  # 643 - 96 membrane - 3 spikes


def test_dense_fp32_conv():
    total = total_bits(model_memory(conv_fp32()))
    assert total.weights == 576  # 2*1*3*3 = 18 weights * 32
    assert total.membrane == 256  # 8 neurons * 32
    assert total.total == 904  # 576 + 64 params + 256 + 8 spikes


def test_quantized_pot4_weights_ternary_membrane():
    fc, lif = (m.bits for m in model_memory(linear_quant()))
    assert fc.weights == 48  # 12 * 4 bits
    assert fc.scales == 24  # 3 per-channel exponents * 8 bits
    assert lif.neuron_params == 16  # 2 * 8 bits
    assert lif.membrane == 6  # 3 neurons * 2 bits (ternary stored in 2 bits)
    assert (fc + lif).total == 97  # 48 + 24 + 16 + 6 + 3


def test_synaptic_neuron_has_two_states():
    syn = NeuronLayer(
        name="syn1", neuron_type="Synaptic", neurons=3, time_steps=4, alpha=0.5, beta=0.75, param_count=3
    )
    bits = layer_memory(syn, AUTO).bits
    assert bits.membrane == 192  # 3 neurons * 2 states (syn, mem) * 32 bits
    assert bits.neuron_params == 96  # alpha, beta, threshold * 32
    assert bits.total == 291  # 192 + 96 + 3 spikes


def test_rleaky_recurrent_weights_counted():
    rl = leaky(name="rlif", neuron_type="RLeaky", recurrent_weights=9)
    bits = layer_memory(rl, AUTO).bits
    assert bits.weights == 288  # 3x3 all-to-all * 32
    assert bits.total == 451  # 288 + 64 + 96 + 3


def test_pruned_bitmap_wins():
    lm = layer_memory(linear(nonzero_weights=6), AUTO)
    # dense 12*32 = 384; bitmap 6*32 + 12 = 204; CSR 6*32 + 6*ceil(log2 4)=12 + (3+1)*ceil(log2 7)=12 -> 216
    assert lm.format_bits == {"dense": 384, "bitmap": 204, "csr": 216}
    assert lm.sparse_format == "bitmap"
    assert (lm.bits.weights, lm.bits.index) == (192, 12)
    assert not lm.pruning_raised_memory


def test_pruned_csr_wins():
    lm = layer_memory(linear(nonzero_weights=1), AUTO)
    # bitmap 32 + 12 = 44; CSR 32 + 1*2 + 4*ceil(log2 2)=4 -> 38
    assert lm.format_bits == {"dense": 384, "bitmap": 44, "csr": 38}
    assert lm.sparse_format == "csr"
    assert (lm.bits.weights, lm.bits.index) == (32, 6)


def test_pruned_csr_wins_larger_layer():
    layer = linear(weight_shape=(16, 64), dense_ops_per_step=16 * 64, nonzero_weights=10)
    lm = layer_memory(layer, AUTO)
    # bitmap 10*32 + 1024 = 1344; CSR 320 + 10*ceil(log2 64)=60 + 17*ceil(log2 11)=68 -> 448
    assert lm.format_bits["bitmap"] == 1344 and lm.format_bits["csr"] == 448
    assert lm.sparse_format == "csr"


def test_pruned_dense_wins_at_low_precision():
    layer = linear(weight_bits=2, weight_scheme="ternary", nonzero_weights=10)
    lm = layer_memory(layer, AUTO)
    # dense 12*2 = 24; bitmap 10*2 + 12 = 32; CSR 20 + 10*2 + 4*ceil(log2 11)=16 -> 56
    assert lm.format_bits == {"dense": 24, "bitmap": 32, "csr": 56}
    assert lm.sparse_format == "dense"
    assert not lm.pruning_raised_memory


def test_tie_goes_to_simpler_format():
    # 6 of 12 ternary weights: dense 24 = bitmap 6*2 + 12 = 24 -> dense
    assert choose_format(linear(weight_bits=2, weight_scheme="ternary", nonzero_weights=6), AUTO) == "dense"
    # 2 of 12 fp32 weights: bitmap 64 + 12 = 76 = CSR 64 + 2*2 + 4*ceil(log2 3)=8 -> bitmap
    assert choose_format(linear(nonzero_weights=2), AUTO) == "bitmap"


def test_forced_csr_raises_memory_and_is_flagged():
    layer = linear(weight_bits=2, weight_scheme="ternary", nonzero_weights=10)
    lm = layer_memory(layer, CostModelConfig(sparse_format="csr"))
    assert lm.sparse_format == "csr"
    assert lm.bits.weights + lm.bits.index == 56  # vs 24 dense
    assert lm.pruning_raised_memory


def test_unpruned_layer_stays_dense_under_forced_format():
    lm = layer_memory(linear(), CostModelConfig(sparse_format="csr"))
    assert lm.sparse_format == "dense" and lm.format_bits is None


def test_masks_and_gates_counted():
    layer = linear(
        mask_bits=3, gate_params=6, spatial_sparsity=0.5, channel_sparsity=0.25, gate_ops_per_step=6
    )
    bits = layer_memory(layer, AUTO).bits
    assert (bits.masks, bits.gates) == (3, 192)  # 6 gate params * 32
    assert total_bits(model_memory(model(layer))).total == 579  # 384 + 3 + 192
