"""Warnings and conventions text of the hardware report: what a reader must know to trust the figures."""

from __future__ import annotations

from snncompress.hardware.config import CostModelConfig
from snncompress.hardware.description import SynapticLayer
from snncompress.hardware.energy import Scaled
from snncompress.hardware.energy_table import EnergyTable
from snncompress.hardware.memory import LayerMemory


def scaled_warnings(scaled: set[Scaled], table: EnergyTable) -> list[str]:
    """One line per op energy the table lacked and that was scaled from another width."""
    rule = table.scaling
    out = []
    for op, family, bits, anchor in sorted(scaled, key=lambda s: (s[0], s[1], s[2])):
        exponent = rule.add_exponent if op == "add" else rule.mult_exponent
        out.append(
            f"energy for {family}{bits} {op} scaled from {family}{anchor} in table {table.name} "
            f"(energy ~ bits^{exponent:g}); not a measured figure"
        )
    return out


def pruning_memory_warning(layer: SynapticLayer, lm: LayerMemory) -> str | None:
    """Schaefer et al.: a sparse format can cost more memory than the dense layer it replaces."""
    if lm.dense_weight_bits is None or layer.nonzero == layer.weight_count:
        return None
    stored = lm.bits.weights + lm.bits.index
    if lm.pruning_raised_memory:
        pct = (stored / lm.dense_weight_bits - 1) * 100
        return (
            f"layer {layer.name}: pruning raised weight memory by {pct:.0f}% "
            f"({lm.sparse_format} index overhead: {stored} bits vs {lm.dense_weight_bits} dense)"
        )
    if lm.sparse_format == "dense":
        return (
            f"layer {layer.name}: pruned to {layer.density:.0%} nonzero weights, but dense storage is "
            f"smallest at {layer.weight_bits} bits per weight; pruning saved no memory"
        )
    return None


def pruning_energy_warning(
    layer: SynapticLayer, pruned_pj: float, dense_pj: float, config: CostModelConfig
) -> str | None:
    """Schaefer et al.: index reads and irregular access can cost more than the skipped ops save."""
    if dense_pj <= 0 or pruned_pj <= dense_pj:
        return None
    pct = (pruned_pj / dense_pj - 1) * 100
    return (
        f"layer {layer.name}: pruning raised energy by {pct:.0f}% over the same layer dense "
        f"(index reads and irregular-access factor {config.irregular_access_factor:g} "
        "outweigh the skipped ops)"
    )


def conventions(config: CostModelConfig) -> list[str]:
    """How the figures are counted, and how that differs from NeuroBench."""
    if config.sparse_format == "auto":
        storage = (
            "the smallest of dense, bitmap (1 bit per weight) and CSR (a column index per nonzero plus "
            "row pointers)"
        )
    else:
        storage = f"the {config.sparse_format} format (fixed by the config)"
    factor = f"{config.irregular_access_factor:g}"
    return [
        "All figures are per sample (batch 1), summed over the T time steps of that sample.",
        "Memory (SpQuant Eq. 29, tinySNN Eq. 4) counts stored bit widths: weights at their quantized "
        "width plus sparse index, bias, scales, masks, gate parameters, neuron parameters, every "
        "membrane state variable at the membrane width (Synaptic: syn + mem), and one time step of "
        "spikes at 1 bit per neuron. NeuroBench Footprint instead counts bytes of every parameter and "
        "buffer at its torch dtype (a 4-bit weight held in fp32 is 4 bytes) including snnTorch "
        "bookkeeping buffers (graded_spikes_factor fp32 and reset_mechanism_val int64: 12 bytes per "
        "neuron layer), and no membrane state or spikes (measure it on a freshly built model: after a "
        "run snnTorch keeps the last batch's membrane in a buffer); for an fp32 model it equals "
        "totals.memory.parameter_bytes + 12 bytes per neuron layer.",
        f"Pruned weights are stored in {storage}; the choice is in layers[].sparse_format.",
        "Synaptic ops follow NeuroBench SynapticOperations: effective MACs for real-valued inputs, "
        "effective ACs for spike inputs, bias additions excluded (we list them as 'bias' adds); "
        "dense_ops is NeuroBench 'Dense' (every connection at every step; products with a conv's zero "
        "padding are not counted). synaptic_ops_dense_bound is SpQuant Eq. 30 over the same "
        "connections with channel/spatial masks and pruning applied.",
        "Membrane updates count every active neuron at every step (an upper bound); NeuroBench "
        "MembraneUpdates counts only updates that change the membrane. Threshold compares and resets "
        "are not counted.",
        "A multiply by a power-of-two, ternary or binary weight, and a leak by 2^-k, is counted as a "
        "shift and costed as an add of the same width. The synaptic accumulate is counted at the "
        "weight width unless accumulator_bits is given, so low-bit compute energy is a lower bound.",
        "Energy (SpQuant Eq. 31; Horowitz 2014): every synaptic op reads its weight (no reuse or "
        "caching modelled), sparse layers also read their index share; each active neuron's state is "
        "read and written every step; spike maps are written and read every step; bias and "
        "per-channel scales are read once per computed output (per-layer neuron parameters and a "
        "per-tensor scale sit in registers); writes cost as "
        "reads; energy per bit is the per-access energy / access width of the "
        f"{config.memory_scope}'s SRAM size class (DRAM, {config.dram_estimate} estimate, above the "
        "largest class).",
        f"Weight and index accesses of sparse-stored layers are multiplied by {factor} (irregular "
        "access; from Schaefer et al. 2023, who report their 80%-sparse SNN costing 45% more energy "
        "than the best quantized one; a placeholder, not a per-access measurement).",
    ]
