"""Operation counts per sample, each tagged with its arithmetic precision (SpQuant Eq. 30).

    OPs_l = (1 - S_c) * (1 - S_p) * C_l * H_l * W_l * k^2 * C_{l-1} * T           (SpQuant Eq. 30)

Our reading:
- synaptic ops: the Eq. 30 upper bound is ``connections * T * (1-S_c)(1-S_p) * density``
  (density = nonzero / weights after pruning; ``connections`` = output elements * fan_in less the
  products with a conv's zero padding, which no hardware computes). The measured figure is the
  layer's exact measured count when given, else ``input spikes * fan_out * density * (1-S_c)(1-S_p)``.
  Energy uses the measured figure when there is one, else the bound; the report says which.
- spike inputs give accumulates (AC: one add); a real-valued input gives MACs (one multiply + one add).
  A multiply by a PoT/ternary/binary weight is one shift, by an APoT weight two shifts and one add.
- the synaptic accumulate is at ``accumulator_bits`` when given, else at the operand width (the weight
  width for ACs): a lower bound, as real accumulators are usually wider.
- bias: one add per computed output element per step (not a synaptic op, as in NeuroBench);
  per-channel scales: one rescale per computed output element per step (a shift for PoT scales).
- membrane: per active neuron per step, one add per state variable, and one leak per state variable
  (a shift when the decay is 2^-k, nothing when it is 0 or 1, else a multiply). Threshold compares
  and resets are not counted.
- recurrent (RLeaky/RSynaptic): bound ``neurons * fan_out * T`` ACs (every neuron spiking at every
  step); measured ``spikes * fan_out``, fan_out = connections one spike drives (all-to-all: neurons,
  one-to-one: 1). A spike times a weight is the weight itself, so these are adds.
- channel gate: ``gate_ops_per_step * T`` MACs at the gate's precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from snncompress.hardware.description import ModelDescription, NeuronLayer, SynapticLayer
from snncompress.hardware.formats import Family, NumberFormat, wider

OpKind = Literal["add", "mult", "shift"]
Basis = Literal["measured", "dense_bound"]


@dataclass(frozen=True)
class OpTally:
    """``count`` operations of one kind at one precision.

    Attributes:
        category: "synaptic", "bias", "rescale", "membrane", "leak", "recurrent" or "gate".
        op: "add", "mult" or "shift".
        family: "fp" or "int".
        bits: Operand width.
        count: Operations per sample, summed over time.
    """

    category: str
    op: OpKind
    family: Family
    bits: int
    count: float


@dataclass(frozen=True)
class LayerOps:
    """Operation counts of one layer, per sample over T steps.

    Attributes:
        name: Layer name.
        tallies: Every op with its precision (what energy.py prices).
        synaptic_op_kind: "mac", "ac" or None (a neuron layer without recurrence).
        dense_ops: Every connection at every step, no masks, no pruning (NeuroBench "Dense").
        synaptic_ops_dense_bound: SpQuant Eq. 30 upper bound (masks and pruning applied).
        synaptic_ops_measured: From recorded activity, or None.
        synaptic_ops: The figure used for energy (measured if any, else the bound).
        basis: Which one ``synaptic_ops`` is.
        output_ops: Bias adds / rescales per sample: computed output elements summed over time.
        gate_macs: Channel-gate MACs per sample.
        membrane_updates: Active neurons * T.
    """

    name: str
    tallies: tuple[OpTally, ...]
    synaptic_op_kind: Literal["mac", "ac"] | None = None
    dense_ops: float = 0.0
    synaptic_ops_dense_bound: float = 0.0
    synaptic_ops_measured: float | None = None
    synaptic_ops: float = 0.0
    basis: Basis | None = None
    output_ops: float = 0.0
    gate_macs: float = 0.0
    membrane_updates: float = 0.0

    def count(self, op: OpKind) -> float:
        """Total count of one op kind."""
        return sum(t.count for t in self.tallies if t.op == op)


def _mac(
    category: str, n: float, operand: tuple[Family, int], weight: NumberFormat, acc: tuple[Family, int]
) -> list[OpTally]:
    """Tallies of ``n`` multiply-accumulates: the multiply (or its shifts), then the accumulate add."""
    fam, bits = operand
    out = []
    if weight.multiply_free:
        out.append(OpTally(category, "shift", fam, bits, n * weight.shifts_per_mult))
        if weight.adds_per_mult:
            out.append(OpTally(category, "add", fam, bits, n * weight.adds_per_mult))
    else:
        out.append(OpTally(category, "mult", fam, bits, n))
    out.append(OpTally(category, "add", *acc, n))
    return out


def synaptic_ops(layer: SynapticLayer) -> LayerOps:
    """Ops of a synaptic layer (SpQuant Eq. 30)."""
    t, act, wf = layer.time_steps, layer.active_fraction, layer.weight_format
    dense = float(layer.connections * t)
    bound = dense * act * layer.density
    measured = layer.measured_synaptic_ops_per_sample
    if (
        measured is None
        and layer.input_is_spikes
        and None not in (layer.input_spikes_per_sample, layer.fan_out)
    ):
        measured = layer.input_spikes_per_sample * layer.fan_out * layer.density * act
    used = bound if measured is None else float(measured)
    if layer.input_is_spikes:
        operand: tuple[Family, int] = (wf.family, wf.bits)
    else:
        operand = wider(layer.input_format, wf)
    acc = (operand[0], layer.accumulator_bits or operand[1])
    if layer.input_is_spikes:
        tallies = [OpTally("synaptic", "add", *acc, used)]
    else:
        tallies = _mac("synaptic", used, operand, wf, acc)
    outputs = layer.output_elements * t * act
    if layer.has_bias:
        tallies.append(OpTally("bias", "add", *acc, outputs))
    if layer.scale_count:
        tallies.append(OpTally("rescale", "shift" if layer.scale_is_power_of_two else "mult", *acc, outputs))
    gate_macs = float(layer.gate_ops_per_step * t)
    if gate_macs:
        gf = layer.gate_format
        tallies += _mac("gate", gate_macs, (gf.family, gf.bits), gf, (gf.family, gf.bits))
    return LayerOps(
        name=layer.name,
        tallies=tuple(t_ for t_ in tallies if t_.count),
        synaptic_op_kind="ac" if layer.input_is_spikes else "mac",
        dense_ops=dense,
        synaptic_ops_dense_bound=bound,
        synaptic_ops_measured=None if measured is None else float(measured),
        synaptic_ops=used,
        basis="dense_bound" if measured is None else "measured",
        output_ops=outputs if (layer.has_bias or layer.scale_count) else 0.0,
        gate_macs=gate_macs,
    )


def is_power_of_two_fraction(x: float) -> bool:
    """True for 2^-k, k >= 1 (a leak by such a factor is a right shift)."""
    return 0.0 < x < 1.0 and math.frexp(x)[0] == 0.5


def _leak_split(decays: tuple[float, ...]) -> tuple[float, float]:
    """Fractions of neurons whose leak is a shift and a multiply (decay 0 or 1 needs neither)."""
    n = len(decays)
    shifts = sum(1 for d in decays if is_power_of_two_fraction(d))
    mults = sum(1 for d in decays if 0.0 < d < 1.0 and not is_power_of_two_fraction(d))
    return shifts / n, mults / n


def neuron_ops(layer: NeuronLayer) -> LayerOps:
    """Ops of a neuron layer: membrane updates, leaks, recurrent ACs (SpQuant Eq. 30 membrane term)."""
    t, mf = layer.time_steps, layer.membrane_format
    updates = layer.neurons * t * layer.active_fraction
    mem = (mf.family, mf.bits)
    tallies = [OpTally("membrane", "add", *mem, updates * layer.state_variables)]
    shift_frac = mult_frac = 0.0
    for decays in layer.decays:
        s, m = _leak_split(decays)
        shift_frac += s
        mult_frac += m
    tallies.append(OpTally("leak", "shift", *mem, updates * shift_frac))
    tallies.append(OpTally("leak", "mult", *mem, updates * mult_frac))
    kind = None
    bound = dense = 0.0
    measured = None
    used = 0.0
    basis: Basis | None = None
    if layer.recurrent_weights:
        rf = layer.recurrent_format
        kind = "ac"
        fan_out = layer.recurrent_connections_per_spike
        dense = layer.neurons * fan_out * t
        bound = dense * layer.active_fraction
        if layer.spikes_per_sample is not None:
            measured = layer.spikes_per_sample * fan_out
        used = bound if measured is None else measured
        basis = "dense_bound" if measured is None else "measured"
        tallies.append(OpTally("recurrent", "add", rf.family, rf.bits, used))
    return LayerOps(
        name=layer.name,
        tallies=tuple(t_ for t_ in tallies if t_.count),
        synaptic_op_kind=kind,
        dense_ops=dense,
        synaptic_ops_dense_bound=bound,
        synaptic_ops_measured=measured,
        synaptic_ops=used,
        basis=basis,
        membrane_updates=updates,
    )


def layer_ops(layer: SynapticLayer | NeuronLayer) -> LayerOps:
    """Ops of any layer."""
    return synaptic_ops(layer) if isinstance(layer, SynapticLayer) else neuron_ops(layer)


def model_ops(desc: ModelDescription) -> list[LayerOps]:
    """Ops of every layer, in order."""
    return [layer_ops(layer) for layer in desc.layers]
