"""Energy per sample: compute plus memory access (SpQuant Eq. 31, after BitNet; Horowitz 2014).

    E = N_add * E_add(bits) + N_mul * E_mul(bits) + memory access energy          (SpQuant Eq. 31)

Our access model (no data reuse or caching is modelled, so conv layers are an upper bound):
- every synaptic op reads its weight at the stored width; a sparse-stored layer also reads its share
  of the index (index bits / nonzero per op: bitmap = weights/nonzero bits, CSR = column index + its
  share of the row pointers), and both are multiplied by ``irregular_access_factor`` (Schaefer et al.);
- each bias add reads its bias, each rescale its scale (a single per-tensor scale sits in a register,
  like per-layer neuron parameters, and is not read), each gate MAC its gate parameter, and the masks
  are read once per step;
- each state variable of each active neuron is read and written once per step at the membrane width;
  per-neuron parameters are read on every update (per-layer ones sit in registers);
- the spike map of each neuron layer is written and read once per step, 1 bit per neuron;
- energy per bit = table energy per access / access width (reads are packed); writes cost as reads;
- the memory size class comes from the storage of the whole model (``memory_scope="model"``) or of
  the layer (``"layer"``): the smallest SRAM class that holds it, else DRAM.
Shifts cost an add of the same width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from snncompress.hardware.config import CostModelConfig
from snncompress.hardware.description import NeuronLayer, SynapticLayer
from snncompress.hardware.energy_table import EnergyTable, op_energy
from snncompress.hardware.memory import LayerMemory, csr_index_bits, layer_memory
from snncompress.hardware.ops import LayerOps, layer_ops

# (op, family, bits, anchor bits): a figure scaled from the table's ``anchor`` width.
Scaled = tuple[str, str, int, int]


@dataclass(frozen=True)
class EnergyBreakdown:
    """Energy per sample by category, in pJ. ``compute_add`` includes shifts."""

    compute_add: float = 0.0
    compute_mult: float = 0.0
    memory_weights: float = 0.0
    memory_index: float = 0.0
    memory_membrane: float = 0.0
    memory_spikes: float = 0.0
    memory_other: float = 0.0

    @property
    def compute(self) -> float:
        """Arithmetic energy."""
        return self.compute_add + self.compute_mult

    @property
    def memory(self) -> float:
        """Memory access energy."""
        return self.total - self.compute

    @property
    def total(self) -> float:
        """All categories."""
        return sum(getattr(self, f.name) for f in fields(self))

    def __add__(self, other: EnergyBreakdown) -> EnergyBreakdown:
        return EnergyBreakdown(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True)
class MemoryClass:
    """The memory an access goes to and what it costs."""

    label: str
    capacity_bytes: int | None
    energy_per_access: float
    access_bits: int

    @property
    def pj_per_bit(self) -> float:
        """Energy per bit accessed."""
        return self.energy_per_access / self.access_bits


def memory_class(table: EnergyTable, storage_bits: int, config: CostModelConfig) -> MemoryClass:
    """The smallest SRAM class of the table that holds ``storage_bits``, else DRAM (a chip table: its
    synaptic-op figure, which includes the accesses)."""
    if table.memory is None:
        return MemoryClass(f"on chip (in {table.name}'s synaptic-op energy)", None, 0.0, 64)
    need = math.ceil(storage_bits / 8)
    mem = table.memory
    for sram in mem.sram:
        if need <= sram.capacity_bytes:
            return MemoryClass(
                f"SRAM {_kb(sram.capacity_bytes)}", sram.capacity_bytes, sram.energy, mem.access_bits
            )
    energy = mem.dram.low if config.dram_estimate == "low" else mem.dram.high
    return MemoryClass(f"DRAM ({config.dram_estimate} estimate)", None, energy, mem.access_bits)


def _kb(n: int) -> str:
    return f"{n // 1048576} MB" if n >= 1048576 and n % 1048576 == 0 else f"{n / 1024:g} KB"


def compute_energy(lops: LayerOps, table: EnergyTable) -> tuple[float, float, set[Scaled]]:
    """(add+shift pJ, mult pJ, scaled lookups) of a layer's ops (SpQuant Eq. 31 compute terms)."""
    add = mult = 0.0
    scaled: set[Scaled] = set()
    for t in lops.tallies:
        op = "mult" if t.op == "mult" else "add"
        e, anchor = op_energy(table, op, t.family, t.bits)
        if anchor is not None:
            scaled.add((op, t.family, t.bits, anchor))
        if op == "mult":
            mult += t.count * e
        else:
            add += t.count * e
    return add, mult, scaled


def index_bits_per_op(layer: SynapticLayer, lmem: LayerMemory) -> float:
    """Index bits read per synaptic op: the layer's index storage shared over its nonzero weights."""
    if lmem.sparse_format == "dense" or layer.nonzero == 0:
        return 0.0
    index = layer.weight_count if lmem.sparse_format == "bitmap" else csr_index_bits(layer)
    return index / layer.nonzero


def access_energy(
    layer: SynapticLayer | NeuronLayer,
    lops: LayerOps,
    lmem: LayerMemory,
    cls: MemoryClass,
    config: CostModelConfig,
) -> dict[str, float]:
    """Memory access energy by category (pJ) under the module's access model."""
    t = layer.time_steps
    if isinstance(layer, SynapticLayer):
        weights = lops.synaptic_ops * layer.weight_bits
        index = lops.synaptic_ops * index_bits_per_op(layer, lmem)
        if lmem.sparse_format in ("bitmap", "csr"):
            weights *= config.irregular_access_factor
            index *= config.irregular_access_factor
        other = (
            (lops.output_ops * layer.bias_bits if layer.has_bias else 0.0)
            + (lops.output_ops * layer.scale_bits if layer.scale_count > 1 else 0.0)
            + lops.gate_macs * layer.gate_param_bits
            + t * layer.mask_bits
        )
        bits = {"weights": weights, "index": index, "membrane": 0.0, "spikes": 0.0, "other": other}
    else:
        params = 0.0
        if layer.per_neuron_params:
            params = lops.membrane_updates * layer.param_count / layer.neurons * layer.param_bits
        bits = {
            "weights": lops.synaptic_ops * layer.recurrent_weight_bits,
            "index": 0.0,
            "membrane": 2 * lops.membrane_updates * layer.state_variables * layer.membrane_bits,
            "spikes": 2 * layer.neurons * t,
            "other": params,
        }
    return {k: v * cls.pj_per_bit for k, v in bits.items()}


def layer_energy(
    layer: SynapticLayer | NeuronLayer,
    lops: LayerOps,
    lmem: LayerMemory,
    table: EnergyTable,
    cls: MemoryClass,
    config: CostModelConfig,
) -> tuple[EnergyBreakdown, set[Scaled]]:
    """Energy of one layer per sample (SpQuant Eq. 31) and the op figures that had to be scaled.

    A chip table charges its energy per synaptic operation for every synaptic op (a MAC on a
    real-valued input counts as one), under ``compute_add``, and nothing else: its figure includes the
    weight access and the accumulate, and what it leaves out (the table's ``synaptic_op.leaves_out``)
    the model leaves out too."""
    if table.synaptic_op is not None:
        return EnergyBreakdown(compute_add=lops.synaptic_ops * table.synaptic_op.energy), set()
    add, mult, scaled = compute_energy(lops, table)
    mem = access_energy(layer, lops, lmem, cls, config)
    return EnergyBreakdown(
        compute_add=add,
        compute_mult=mult,
        memory_weights=mem["weights"],
        memory_index=mem["index"],
        memory_membrane=mem["membrane"],
        memory_spikes=mem["spikes"],
        memory_other=mem["other"],
    ), scaled


def dense_twin(layer: SynapticLayer) -> SynapticLayer:
    """The same layer unpruned and dense at the same precision, for the "did pruning pay?" check.

    A measured op count is scaled up by 1/density (pruning is assumed to have removed ops in
    proportion); a count derived from spikes * fan_out is simply recomputed at density 1.
    """
    measured = layer.measured_synaptic_ops_per_sample
    if measured is not None:
        measured = measured / layer.density if layer.density > 0 else None
    return replace(layer, nonzero_weights=None, measured_synaptic_ops_per_sample=measured)


def dense_twin_energy(
    layer: SynapticLayer, table: EnergyTable, cls: MemoryClass, config: CostModelConfig
) -> EnergyBreakdown:
    """Energy of :func:`dense_twin` in the same memory class."""
    twin = dense_twin(layer)
    energy, _ = layer_energy(twin, layer_ops(twin), layer_memory(twin, config), table, cls, config)
    return energy
