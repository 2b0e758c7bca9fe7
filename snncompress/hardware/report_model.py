"""The hardware report as a versioned, validated document (``schema_version`` "1").

``report_schema.json`` beside this file is generated from :class:`HardwareReport`
(``python -m snncompress.hardware.write_schema``); a test keeps the two equal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from snncompress.hardware.config import CostModelConfig


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryRow(_Row):
    """Storage in bits by category (SpQuant Eq. 29; tinySNN Eq. 4)."""

    weights: int
    index: int
    bias: int
    scales: int
    neuron_params: int
    membrane: int
    spikes: int
    masks: int
    gates: int
    total_bits: int
    total_bytes: float
    parameter_bits: int = Field(description="Everything but membrane state and spikes (static storage).")
    parameter_bytes: float


class OpTallyRow(_Row):
    """``count`` ops of one kind at one precision, and what one costs."""

    category: str
    op: Literal["add", "mult", "shift"]
    family: Literal["fp", "int"]
    bits: int
    count: float
    energy_pj_per_op: float
    scaled_from_bits: int | None = Field(description="Table width the per-op energy was scaled from, if any.")


class OpsRow(_Row):
    """Operation counts per sample over T steps (SpQuant Eq. 30)."""

    synaptic_op_kind: Literal["mac", "ac"] | None
    dense_ops: float = Field(
        description="Every connection at every step, zero padding excluded (NeuroBench 'Dense')."
    )
    synaptic_ops_dense_bound: float = Field(
        description="SpQuant Eq. 30 upper bound, masks and pruning applied."
    )
    synaptic_ops_measured: float | None
    synaptic_ops: float = Field(description="The figure energy uses: measured if available, else the bound.")
    basis: Literal["measured", "dense_bound"] | None
    membrane_updates: float
    adds: float
    mults: float
    shifts: float
    tallies: list[OpTallyRow]


class EnergyRow(_Row):
    """Energy per sample in pJ (SpQuant Eq. 31). ``compute_add`` includes shifts."""

    compute_add: float
    compute_mult: float
    memory_weights: float
    memory_index: float
    memory_membrane: float
    memory_spikes: float
    memory_other: float
    compute: float
    memory: float
    total_pj: float


class LayerRow(_Row):
    """One layer of the report."""

    name: str
    role: Literal["synaptic", "neuron"]
    kind: str
    precision: str = Field(description="Weight scheme (synaptic) or membrane scheme (neuron).")
    nonzero_fraction: float | None
    sparse_format: Literal["dense", "bitmap", "csr"] | None
    format_bits: dict[str, int] | None = Field(description="Weights + index bits of each format considered.")
    dense_weight_bits: int | None
    memory_class: str
    memory: MemoryRow
    ops: OpsRow
    energy: EnergyRow
    dense_twin_energy_pj: float | None = Field(
        description="Energy of the same layer unpruned and dense at the same precision (pruned layers only)."
    )
    threshold: list[float] | None = Field(
        None, description="Neuron layers: the firing threshold Vth as stored (one value, or one per neuron)."
    )


class OpsTotals(_Row):
    """Model-wide op counts per sample."""

    dense_ops: float
    synaptic_ops_dense_bound: float
    synaptic_ops: float
    effective_macs: float
    effective_acs: float
    membrane_updates: float
    adds: float
    mults: float
    shifts: float
    measured_layers: list[str]
    dense_bound_layers: list[str]
    mask_ops: float = Field(0.0, description="The runtime masks' own work (spatial pruning's importance ranking, "
                                             "channel gates), in MACs per sample; not in synaptic_ops.")


class Totals(_Row):
    """Whole-model figures."""

    memory: MemoryRow
    ops: OpsTotals
    energy: EnergyRow


class BaselineComparison(_Row):
    """This model against a baseline; reductions are baseline / this model (2.0 = half)."""

    name: str
    memory_bits: int
    synaptic_ops: float
    synaptic_ops_dense_bound: float
    energy_pj: float
    accuracy: float | None
    memory_reduction: float | None
    synaptic_ops_reduction: float | None
    dense_bound_reduction: float | None
    energy_reduction: float | None
    accuracy_change: float | None = Field(description="This model's accuracy minus the baseline's.")
    ops_reduction_with_masks: float | None = Field(
        None, description="Baseline synaptic ops / (synaptic ops + the runtime masks' own work); only with masks.")


class TableInfo(_Row):
    """Which energy table priced the ops and accesses."""

    name: str
    version: str
    source: str
    units: Literal["pJ"]
    memory_assumed: bool


class HardwareReport(BaseModel):
    """Memory, operations and energy of one model per sample (SpQuant Eq. 29-31; tinySNN Eq. 4)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = "1"
    model: str
    time_steps: int
    accuracy: float | None
    source: dict[str, str]
    energy_table: TableInfo
    config: CostModelConfig
    layers: list[LayerRow]
    totals: Totals
    baseline: BaselineComparison | None
    warnings: list[str]
    conventions: list[str]
