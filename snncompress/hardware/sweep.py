"""Memory and energy against unstructured weight sparsity, at several weight widths (Schaefer et al.).

For one measured model, every synaptic layer is re-costed as if its weights were pruned to sparsity
``s`` (unstructured) and stored at width ``b``: ``nonzero = round((1 - s) * weights)``, the layer's
storage format chosen by the cost model as in any report (dense, bitmap or CSR, whichever is
smallest: :func:`snncompress.hardware.memory.choose_format`), and its measured synaptic ops scaled
by the kept fraction -- the expected count when the masks are uncorrelated with the activity (a
model, not a measurement: ``snncompress prune`` measures the real figure on the data). A b-bit
layer stores one fp32 scale per output channel.

Where the index costs more than the zeros save, memory and energy stop falling (or rise: the
irregular-access factor multiplies every sparse weight and index read); :func:`break_even` gives
the lowest swept sparsity at which a width's memory / energy is below its dense figure. Energy also
steps where the model's memory crosses a memory-size class of the energy table (cheaper accesses
in a smaller memory); each point names the classes it was costed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from snncompress.hardware.config import CostModelConfig
from snncompress.hardware.description import ModelDescription, SynapticLayer
from snncompress.hardware.energy_table import EnergyTable, load_energy_table

DEFAULT_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
DEFAULT_WIDTHS = ((32, "fp32"), (4, "int4"))


@dataclass(frozen=True)
class SweepPoint:
    """One (sparsity, width) point; memory in bits per model, energy in pJ per sample."""

    sparsity: float
    weight_bits: int
    scheme: str
    memory_bits: int
    weight_storage_bits: int
    index_bits: int
    energy_pj: float
    synaptic_ops: float
    formats: dict[str, str] = field(default_factory=dict)
    memory_classes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"sparsity": self.sparsity, "weight_bits": self.weight_bits, "scheme": self.scheme,
                "memory_bits": self.memory_bits, "weight_storage_bits": self.weight_storage_bits,
                "index_bits": self.index_bits, "energy_pj": self.energy_pj, "synaptic_ops": self.synaptic_ops,
                "formats": dict(self.formats), "memory_classes": list(self.memory_classes)}


def _pruned(layer: SynapticLayer, sparsity: float, bits: int, scheme: str) -> SynapticLayer:
    kept = 1.0 - sparsity
    nonzero = round(kept * layer.weight_count)
    density = layer.nonzero / layer.weight_count if layer.weight_count else 1.0
    measured = layer.measured_synaptic_ops_per_sample
    quantized = scheme != "fp32"
    return replace(
        layer,
        nonzero_weights=None if nonzero == layer.weight_count else nonzero,
        weight_bits=bits,
        weight_scheme=scheme,
        measured_synaptic_ops_per_sample=None if measured is None else measured * kept / max(density, 1e-12),
        scale_count=layer.rows if quantized else 0,
        scale_bits=32 if quantized else 0,
        scale_is_power_of_two=False,
    )


def sparsity_sweep(desc: ModelDescription, energy_table: EnergyTable | str | Path = "45nm",
                   sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                   widths: Sequence[tuple[int, str]] = DEFAULT_WIDTHS,
                   config: CostModelConfig | None = None) -> list[SweepPoint]:
    """Cost ``desc`` at every (sparsity, width); see the module docstring.

    Raises:
        ValueError: a sparsity outside [0, 1).
    """
    from snncompress.hardware.report import build_report

    table = energy_table if isinstance(energy_table, EnergyTable) else load_energy_table(energy_table)
    points = []
    for bits, scheme in widths:
        for s in sparsities:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity {s} outside [0, 1)")
            layers = tuple(_pruned(la, s, bits, scheme) if isinstance(la, SynapticLayer) else la
                           for la in desc.layers)
            report = build_report(replace(desc, layers=layers), table, config=config)
            syn = [row for row in report.layers if row.role == "synaptic"]
            points.append(SweepPoint(
                sparsity=s, weight_bits=bits, scheme=scheme,
                memory_bits=report.totals.memory.total_bits,
                weight_storage_bits=sum(r.memory.weights for r in syn),
                index_bits=sum(r.memory.index for r in syn),
                energy_pj=report.totals.energy.total_pj,
                synaptic_ops=report.totals.ops.synaptic_ops,
                formats={r.name: r.sparse_format for r in syn},
                memory_classes=tuple(sorted({r.memory_class for r in report.layers})),
            ))
    return points


def break_even(points: Sequence[SweepPoint], scheme: str, key: str = "memory_bits") -> float | None:
    """The lowest swept sparsity > 0 at which ``scheme``'s ``key`` is below its dense (s = 0) figure."""
    rows = sorted((p for p in points if p.scheme == scheme), key=lambda p: p.sparsity)
    dense = next((getattr(p, key) for p in rows if p.sparsity == 0.0), None)
    if dense is None:
        return None
    return next((p.sparsity for p in rows if p.sparsity > 0 and getattr(p, key) < dense), None)
