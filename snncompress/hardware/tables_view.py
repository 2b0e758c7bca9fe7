"""The report's tables as plain rows of strings, shared by the rich, Markdown and HTML renderers.

Each table shows its figures in one unit, picked from the size of its total (bits, B, KiB, MiB for
memory; pJ, nJ, µJ, mJ for energy) and named in its title and total column, so that the terminal
tables stay narrow (about 100 columns) and every number stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from snncompress.hardware.report_model import HardwareReport, LayerRow


@dataclass(frozen=True)
class TableView:
    """A titled table; the last row is the total row when ``has_total``.

    Attributes:
        title: Title, with the unit of its figures.
        headers: Column headers; the first column is text, the others are right-aligned.
        rows: Cells as strings.
        has_total: The last row is a total.
        text_columns: How many leading columns hold text (left-aligned).
    """

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    has_total: bool = True
    text_columns: int = 1


@dataclass(frozen=True)
class Unit:
    """A display unit: ``per_unit`` base units (bits or pJ) make one of it."""

    label: str
    per_unit: float


MEMORY_UNITS = (Unit("bits", 1), Unit("B", 8), Unit("KiB", 8 * 1024), Unit("MiB", 8 * 1024**2))
ENERGY_UNITS = (Unit("pJ", 1), Unit("nJ", 1e3), Unit("µJ", 1e6), Unit("mJ", 1e9), Unit("J", 1e12))
# The total shows with at most 5 digits before the point: a demo-sized model reads in bytes and nJ,
# whole numbers that compare at a glance, rather than in fractions of a KiB or a µJ.
_TABLE_LIMIT = 100_000
_SUMMARY_LIMIT = 10_000  # the one-line summary reads "60.06 KiB"


def pick_unit(units: tuple[Unit, ...], largest: float, limit: float) -> Unit:
    """The first unit in which ``largest`` is below ``limit`` (else the last)."""
    for unit in units:
        if abs(largest) / unit.per_unit < limit:
            return unit
    return units[-1]


def memory_unit(bits: float, limit: float = _TABLE_LIMIT) -> Unit:
    """Display unit for a memory table whose largest figure is ``bits``."""
    return pick_unit(MEMORY_UNITS, bits, limit)


def energy_unit(pj: float, limit: float = _TABLE_LIMIT) -> Unit:
    """Display unit for an energy table whose largest figure is ``pj``."""
    return pick_unit(ENERGY_UNITS, pj, limit)


def _number(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 0.001:
        return f"{v:.4g}"
    return f"{v:.1e}"


def fmt(x: float | int | None) -> str:
    """Counts: integers with thousands separators; other values to 4 significant digits."""
    if x is None:
        return "-"
    if isinstance(x, int) or (x == int(x) and abs(x) < 1e15):
        return f"{int(x):,}"
    return _number(x)


def fmt_in(x: float | int | None, unit: Unit) -> str:
    """``x`` (in base units) shown in ``unit``; exact integers stay exact in the base unit."""
    if x is None:
        return "-"
    if unit.per_unit == 1:
        return fmt(x)
    return _number(x / unit.per_unit)


def percent(x: float | None) -> str:
    """A fraction in [0, 1] as a percentage."""
    return "-" if x is None else f"{x * 100:.2f}%"


def _precision(layer: LayerRow) -> str:
    if layer.sparse_format not in (None, "dense"):
        return f"{layer.precision} {layer.sparse_format}"
    return layer.precision


def memory_table(r: HardwareReport) -> TableView:
    """Per-layer memory by category (SpQuant Eq. 29; tinySNN Eq. 4)."""
    unit = memory_unit(r.totals.memory.total_bits)
    headers = (
        "layer",
        "type",
        "precision",
        "weights",
        "index",
        "bias,\nscales",
        "neuron\nparams",
        "masks,\ngates",
        "membrane",
        "spikes",
        f"total\n{unit.label}",
    )

    def cells(m) -> tuple[str, ...]:  # noqa: ANN001 - a MemoryRow
        return tuple(
            fmt_in(v, unit)
            for v in (
                m.weights,
                m.index,
                m.bias + m.scales,
                m.neuron_params,
                m.masks + m.gates,
                m.membrane,
                m.spikes,
                m.total_bits,
            )
        )

    rows = [(layer.name, layer.kind, _precision(layer), *cells(layer.memory)) for layer in r.layers]
    rows.append(("total", "", "", *cells(r.totals.memory)))
    return TableView(f"Memory ({unit.label})", headers, tuple(rows), text_columns=3)


def ops_table(r: HardwareReport) -> TableView:
    """Per-layer operations per sample over the T steps (SpQuant Eq. 30)."""
    headers = (
        "layer",
        "op",
        "dense",
        "Eq.30\nbound",
        "measured",
        "membrane\nupdates",
        "adds",
        "shifts",
        "mults",
    )
    rows = []
    for layer in r.layers:
        o = layer.ops
        kind = (o.synaptic_op_kind or "-").upper()
        if layer.role == "neuron" and o.synaptic_op_kind:
            kind = f"rec {kind}"  # recurrent connections of RLeaky/RSynaptic
        rows.append(
            (
                layer.name,
                kind,
                fmt(o.dense_ops) if o.synaptic_op_kind else "-",
                fmt(o.synaptic_ops_dense_bound) if o.synaptic_op_kind else "-",
                fmt(o.synaptic_ops_measured),
                fmt(o.membrane_updates) if layer.role == "neuron" else "-",
                fmt(o.adds),
                fmt(o.shifts),
                fmt(o.mults),
            )
        )
    t = r.totals.ops
    measured = fmt(t.synaptic_ops) if not t.dense_bound_layers else "-"
    rows.append(
        (
            "total",
            "",
            fmt(t.dense_ops),
            fmt(t.synaptic_ops_dense_bound),
            measured,
            fmt(t.membrane_updates),
            fmt(t.adds),
            fmt(t.shifts),
            fmt(t.mults),
        )
    )
    return TableView(
        f"Operations (counts over T = {r.time_steps} steps)", headers, tuple(rows), text_columns=2
    )


def energy_table(r: HardwareReport) -> TableView:
    """Per-layer energy by category (SpQuant Eq. 31)."""
    unit = energy_unit(r.totals.energy.total_pj)
    per_layer_memory = r.config.memory_scope == "layer"
    headers = (
        "layer",
        *(("memory",) if per_layer_memory else ()),
        "compute\nadd, shift",
        "compute\nmult",
        "memory\nweights",
        "memory\nindex",
        "memory\nmembrane",
        "memory\nspikes",
        "memory\nother",
        f"total\n{unit.label}",
    )

    def cells(e) -> tuple[str, ...]:  # noqa: ANN001 - an EnergyRow
        return tuple(
            fmt_in(v, unit)
            for v in (
                e.compute_add,
                e.compute_mult,
                e.memory_weights,
                e.memory_index,
                e.memory_membrane,
                e.memory_spikes,
                e.memory_other,
                e.total_pj,
            )
        )

    rows = [
        (layer.name, *((layer.memory_class,) if per_layer_memory else ()), *cells(layer.energy))
        for layer in r.layers
    ]
    rows.append(("total", *(("",) if per_layer_memory else ()), *cells(r.totals.energy)))
    where = "" if per_layer_memory or not r.layers else f", {r.layers[0].memory_class}"
    title = f"Energy ({unit.label}; table {r.energy_table.name}{where})"
    return TableView(title, headers, tuple(rows), text_columns=2 if per_layer_memory else 1)


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}x" if x >= 1 else f"{x:.3g}x (worse)"


def baseline_table(r: HardwareReport) -> TableView | None:
    """This model against its baseline: reductions are baseline / model (2x = half)."""
    b = r.baseline
    if b is None:
        return None
    t = r.totals
    mem = memory_unit(max(b.memory_bits, t.memory.total_bits))
    en = energy_unit(max(b.energy_pj, t.energy.total_pj))
    acc = "-" if b.accuracy_change is None else f"{b.accuracy_change * 100:+.2f} pp"
    rows = (
        (
            f"memory ({mem.label})",
            fmt_in(b.memory_bits, mem),
            fmt_in(t.memory.total_bits, mem),
            _ratio(b.memory_reduction),
        ),
        ("synaptic ops", fmt(b.synaptic_ops), fmt(t.ops.synaptic_ops), _ratio(b.synaptic_ops_reduction)),
        *([("+ masks' own work", fmt(b.synaptic_ops), fmt(t.ops.synaptic_ops + t.ops.mask_ops),
            _ratio(b.ops_reduction_with_masks))] if t.ops.mask_ops else []),
        (
            "Eq.30 bound",
            fmt(b.synaptic_ops_dense_bound),
            fmt(t.ops.synaptic_ops_dense_bound),
            _ratio(b.dense_bound_reduction),
        ),
        (
            f"energy ({en.label})",
            fmt_in(b.energy_pj, en),
            fmt_in(t.energy.total_pj, en),
            _ratio(b.energy_reduction),
        ),
        ("accuracy", percent(b.accuracy), percent(r.accuracy), acc),
    )
    return TableView(
        f"Against the baseline {b.name} (reduction = baseline / this model)",
        ("figure", "baseline", "this model", "reduction"),
        rows,
        has_total=False,
    )


def summary_lines(r: HardwareReport) -> list[str]:
    """The report in three lines: what was costed, and the totals."""
    t = r.totals
    mem = memory_unit(t.memory.total_bits, _SUMMARY_LIMIT)
    en = energy_unit(t.energy.total_pj)
    basis = "measured" if not t.ops.dense_bound_layers else "dense upper bound"
    if t.ops.dense_bound_layers and t.ops.measured_layers:
        basis = "measured, some layers at the dense upper bound"
    table = r.energy_table
    assumed = ", memory energies assumed" if table.memory_assumed else ""
    return [
        f"model {r.model}: T = {r.time_steps}, accuracy {percent(r.accuracy)}, "
        f"data {r.source.get('data', '-')}",
        f"per sample: memory {fmt_in(t.memory.total_bits, mem)} {mem.label} "
        f"(static {fmt_in(t.memory.parameter_bits, mem)} {mem.label}), "
        f"synaptic ops {fmt(t.ops.synaptic_ops)} ({basis}), "
        f"energy {fmt_in(t.energy.total_pj, en)} {en.label}",
        f"energy table {table.name} v{table.version}{assumed}",
    ]


def all_tables(r: HardwareReport) -> list[TableView]:
    """Every table of the report, in display order."""
    out = [memory_table(r), ops_table(r), energy_table(r)]
    base = baseline_table(r)
    if base is not None:
        out.append(base)
    return out
