"""Build the hardware report of a model description (SpQuant Eq. 29-31; tinySNN Eq. 4).

Run ``python -m snncompress.hardware.write_schema`` to regenerate ``report_schema.json``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from snncompress.fileformat.atomic import write_text_atomic
from snncompress.hardware.config import CostModelConfig
from snncompress.hardware.description import ModelDescription, NeuronLayer, SynapticLayer
from snncompress.hardware.energy import (
    EnergyBreakdown,
    MemoryClass,
    Scaled,
    dense_twin_energy,
    layer_energy,
    memory_class,
)
from snncompress.hardware.energy_table import EnergyTable, load_energy_table, op_energy
from snncompress.hardware.memory import LayerMemory, MemoryBits, model_memory, total_bits
from snncompress.hardware.notes import (
    conventions,
    pruning_energy_warning,
    pruning_memory_warning,
    scaled_warnings,
)
from snncompress.hardware.ops import LayerOps, layer_ops
from snncompress.hardware.report_model import (
    BaselineComparison,
    EnergyRow,
    HardwareReport,
    LayerRow,
    MemoryRow,
    OpsRow,
    OpsTotals,
    OpTallyRow,
    TableInfo,
    Totals,
)

SCHEMA_PATH = Path(__file__).parent / "report_schema.json"

__all__ = ["HardwareReport", "build_report", "report_json_schema", "write_report_schema", "SCHEMA_PATH"]


def build_report(
    desc: ModelDescription,
    energy_table: EnergyTable | str | Path,
    baseline_desc: ModelDescription | None = None,
    config: CostModelConfig | None = None,
) -> HardwareReport:
    """Memory, ops and energy of ``desc`` per sample, optionally against a baseline.

    Args:
        desc: The model to cost.
        energy_table: An :class:`EnergyTable`, or a name/path for :func:`load_energy_table`.
        baseline_desc: The model before compression (costed with the same table and config).
        config: Cost-model choices (defaults: :class:`CostModelConfig`).

    Returns:
        The report; ``warnings`` lists every figure a reader should not take at face value.

    Raises:
        InputError: A bad energy table, or an op the table cannot price.
    """
    table = energy_table if isinstance(energy_table, EnergyTable) else load_energy_table(energy_table)
    config = config or CostModelConfig()
    rows, warnings, scaled = _layer_rows(desc, table, config)
    totals = _totals(rows, desc)
    warnings = scaled_warnings(scaled, table) + warnings
    if table.synaptic_op is not None:
        warnings.append(
            f"energy table {table.name}: every synaptic op costs {table.synaptic_op.energy:g} pJ, the chip's "
            f"published figure ({table.synaptic_op.covers}); left out: {table.synaptic_op.leaves_out}; the "
            "per-op prices and bit widths do not apply, so energy follows the synaptic-op count"
        )
    if table.memory is not None and table.memory.assumed:
        warnings.append(
            f"energy table {table.name}: memory access energies are assumptions, not sourced figures "
            "(see the table's memory.note)"
        )
    if any(r.memory_class.startswith("DRAM") for r in rows):
        warnings.append(
            f"storage exceeds the largest SRAM class of table {table.name}: accesses costed at DRAM energy "
            f"({config.dram_estimate} estimate)"
        )
    if totals.ops.dense_bound_layers:
        warnings.append(
            f"no measured activity for {', '.join(totals.ops.dense_bound_layers)}: their synaptic ops "
            "and energy use the SpQuant Eq. 30 dense upper bound"
        )
    baseline = None
    if baseline_desc is not None:
        base = build_report(baseline_desc, table, None, config)
        baseline = _compare(totals, desc.accuracy, base)
        warnings += [f"baseline {base.model}: {w}" for w in base.warnings]
        if set(base.totals.ops.measured_layers) != set(totals.ops.measured_layers) and (
            base.totals.ops.dense_bound_layers or totals.ops.dense_bound_layers
        ):
            warnings.append(
                "baseline and model mix measured and dense-bound op counts differently: "
                "compare synaptic_ops_reduction with care"
            )
    return HardwareReport(
        model=desc.name,
        time_steps=desc.time_steps,
        accuracy=desc.accuracy,
        source=dict(desc.source),
        energy_table=TableInfo(
            name=table.name,
            version=table.version,
            source=table.source,
            units=table.units,
            memory_assumed=bool(table.memory is not None and table.memory.assumed),
        ),
        config=config,
        layers=rows,
        totals=totals,
        baseline=baseline,
        warnings=warnings,
        conventions=conventions(config),
    )


def _layer_rows(
    desc: ModelDescription, table: EnergyTable, config: CostModelConfig
) -> tuple[list[LayerRow], list[str], set[Scaled]]:
    mems = model_memory(desc, config)
    model_cls = memory_class(table, total_bits(mems).total, config)
    rows, warnings, scaled = [], [], set()
    for layer, lm in zip(desc.layers, mems, strict=True):
        cls = model_cls if config.memory_scope == "model" else memory_class(table, lm.bits.total, config)
        lops = layer_ops(layer)
        energy, s = layer_energy(layer, lops, lm, table, cls, config)
        scaled |= s
        twin_pj = None
        if isinstance(layer, SynapticLayer) and layer.nonzero < layer.weight_count:
            twin_pj = dense_twin_energy(layer, table, cls, config).total
            for w in (
                pruning_memory_warning(layer, lm),
                pruning_energy_warning(layer, energy.total, twin_pj, config),
            ):
                if w:
                    warnings.append(w)
        rows.append(_row(layer, lm, lops, energy, cls, table, twin_pj))
    return rows, warnings, scaled


def _row(
    layer: SynapticLayer | NeuronLayer,
    lm: LayerMemory,
    lops: LayerOps,
    energy: EnergyBreakdown,
    cls: MemoryClass,
    table: EnergyTable,
    twin_pj: float | None,
) -> LayerRow:
    synaptic = isinstance(layer, SynapticLayer)
    return LayerRow(
        name=layer.name,
        role="synaptic" if synaptic else "neuron",
        kind=layer.kind if synaptic else layer.neuron_type,
        precision=layer.weight_scheme if synaptic else layer.membrane_scheme,
        nonzero_fraction=layer.density if synaptic else None,
        sparse_format=lm.sparse_format,
        format_bits=lm.format_bits,
        dense_weight_bits=lm.dense_weight_bits,
        memory_class=cls.label,
        memory=memory_row(lm.bits),
        ops=_ops_row(lops, table),
        energy=energy_row(energy),
        dense_twin_energy_pj=twin_pj,
        threshold=None if synaptic or layer.threshold is None else list(layer.threshold),
    )


def memory_row(bits: MemoryBits) -> MemoryRow:
    """Report row of a :class:`MemoryBits`."""
    cats = {f.name: getattr(bits, f.name) for f in fields(bits)}
    return MemoryRow(
        **cats,
        total_bits=bits.total,
        total_bytes=bits.total / 8,
        parameter_bits=bits.parameters,
        parameter_bytes=bits.parameters / 8,
    )


def energy_row(e: EnergyBreakdown) -> EnergyRow:
    """Report row of an :class:`EnergyBreakdown`."""
    cats = {f.name: getattr(e, f.name) for f in fields(e)}
    return EnergyRow(**cats, compute=e.compute, memory=e.memory, total_pj=e.total)


def _ops_row(lops: LayerOps, table: EnergyTable) -> OpsRow:
    tallies = []
    for t in lops.tallies:
        pj, anchor = op_energy(table, "mult" if t.op == "mult" else "add", t.family, t.bits)
        tallies.append(
            OpTallyRow(
                category=t.category,
                op=t.op,
                family=t.family,
                bits=t.bits,
                count=t.count,
                energy_pj_per_op=pj,
                scaled_from_bits=anchor,
            )
        )
    return OpsRow(
        synaptic_op_kind=lops.synaptic_op_kind,
        dense_ops=lops.dense_ops,
        synaptic_ops_dense_bound=lops.synaptic_ops_dense_bound,
        synaptic_ops_measured=lops.synaptic_ops_measured,
        synaptic_ops=lops.synaptic_ops,
        basis=lops.basis,
        membrane_updates=lops.membrane_updates,
        adds=lops.count("add"),
        mults=lops.count("mult"),
        shifts=lops.count("shift"),
        tallies=tallies,
    )


def _totals(rows: list[LayerRow], desc: ModelDescription) -> Totals:
    mem = MemoryBits()
    energy = EnergyBreakdown()
    for r in rows:
        mem = mem + MemoryBits(**{k: getattr(r.memory, k) for k in MemoryBits.__dataclass_fields__})
        energy = energy + EnergyBreakdown(
            **{k: getattr(r.energy, k) for k in EnergyBreakdown.__dataclass_fields__}
        )

    def total(attr: str, kind: str | None = None) -> float:
        return sum(getattr(r.ops, attr) for r in rows if kind is None or r.ops.synaptic_op_kind == kind)

    ops = OpsTotals(
        dense_ops=total("dense_ops"),
        synaptic_ops_dense_bound=total("synaptic_ops_dense_bound"),
        synaptic_ops=total("synaptic_ops"),
        effective_macs=total("synaptic_ops", "mac"),
        effective_acs=total("synaptic_ops", "ac"),
        membrane_updates=total("membrane_updates"),
        adds=total("adds"),
        mults=total("mults"),
        shifts=total("shifts"),
        measured_layers=[r.name for r in rows if r.ops.basis == "measured"],
        dense_bound_layers=[r.name for r in rows if r.ops.basis == "dense_bound"],
        mask_ops=sum(t.count for r in rows for t in r.ops.tallies if t.category == "gate" and t.op == "add"),
    )
    return Totals(memory=memory_row(mem), ops=ops, energy=energy_row(energy))


def _ratio(base: float, new: float) -> float | None:
    return base / new if new > 0 else None


def _compare(totals: Totals, accuracy: float | None, base: HardwareReport) -> BaselineComparison:
    b = base.totals
    return BaselineComparison(
        name=base.model,
        memory_bits=b.memory.total_bits,
        synaptic_ops=b.ops.synaptic_ops,
        synaptic_ops_dense_bound=b.ops.synaptic_ops_dense_bound,
        energy_pj=b.energy.total_pj,
        accuracy=base.accuracy,
        memory_reduction=_ratio(b.memory.total_bits, totals.memory.total_bits),
        synaptic_ops_reduction=_ratio(b.ops.synaptic_ops, totals.ops.synaptic_ops),
        dense_bound_reduction=_ratio(b.ops.synaptic_ops_dense_bound, totals.ops.synaptic_ops_dense_bound),
        energy_reduction=_ratio(b.energy.total_pj, totals.energy.total_pj),
        accuracy_change=None if accuracy is None or base.accuracy is None else accuracy - base.accuracy,
        ops_reduction_with_masks=(_ratio(b.ops.synaptic_ops, totals.ops.synaptic_ops + totals.ops.mask_ops)
                                  if totals.ops.mask_ops else None),
    )


def report_json_schema() -> dict:
    """JSON schema of :class:`HardwareReport` (what ``report_schema.json`` holds)."""
    return HardwareReport.model_json_schema()


def write_report_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write :func:`report_json_schema` to ``path`` (atomically)."""
    write_text_atomic(path, json.dumps(report_json_schema(), indent=2, sort_keys=True) + "\n")
    return path
