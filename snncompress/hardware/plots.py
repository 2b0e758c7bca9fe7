"""PNG plots of a hardware report (matplotlib, Agg canvas, no pyplot state; byte-identical across runs).

Each function returns PNG bytes: per-layer memory stacked by category, per-layer ops stacked by kind,
per-layer energy stacked by category, and the model against its baseline.
"""

from __future__ import annotations

import io

from snncompress.hardware.report_model import HardwareReport
from snncompress.hardware.tables_view import energy_unit, memory_unit

_DPI = 100
_SIZE = (7.0, 3.6)


def _figure():  # noqa: ANN202 - matplotlib types stay local
    from matplotlib.figure import Figure

    return Figure(figsize=_SIZE, dpi=_DPI)


def _png(fig) -> bytes:  # noqa: ANN001
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/date metadata: the same report gives the same bytes.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _stacked(title: str, ylabel: str, names: list[str], series: dict[str, list[float]]) -> bytes:
    import matplotlib.style
    from matplotlib.ticker import FuncFormatter

    with matplotlib.style.context("default"):
        fig = _figure()
        ax = fig.add_subplot()
        bottom = [0.0] * len(names)
        x = list(range(len(names)))
        for i, (label, values) in enumerate(series.items()):
            if not any(values):
                continue
            # The colour follows the category, not the draw order, so reports compare at a glance.
            ax.bar(x, values, bottom=bottom, label=label, width=0.6, color=f"C{i % 10}")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.6g}"))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return _png(fig)


def memory_png(r: HardwareReport) -> bytes:
    """Per-layer memory, stacked by category, in the memory table's unit."""
    unit = memory_unit(r.totals.memory.total_bits)
    cats = {
        "weights": ("weights",),
        "index": ("index",),
        "bias, scales": ("bias", "scales"),
        "neuron params": ("neuron_params",),
        "masks, gates": ("masks", "gates"),
        "membrane": ("membrane",),
        "spikes": ("spikes",),
    }
    series = {
        label: [sum(getattr(layer.memory, f) for f in fs) / unit.per_unit for layer in r.layers]
        for label, fs in cats.items()
    }
    return _stacked("Memory per layer", unit.label, [layer.name for layer in r.layers], series)


def ops_png(r: HardwareReport) -> bytes:
    """Per-layer operations, stacked by kind."""
    series = {k: [float(getattr(layer.ops, k)) for layer in r.layers] for k in ("adds", "shifts", "mults")}
    return _stacked("Operations per layer", "ops per sample", [layer.name for layer in r.layers], series)


def energy_png(r: HardwareReport) -> bytes:
    """Per-layer energy, stacked by category, in the energy table's unit."""
    unit = energy_unit(r.totals.energy.total_pj)
    cats = {
        "compute: add, shift": "compute_add",
        "compute: mult": "compute_mult",
        "memory: weights": "memory_weights",
        "memory: index": "memory_index",
        "memory: membrane": "memory_membrane",
        "memory: spikes": "memory_spikes",
        "memory: other": "memory_other",
    }
    series = {
        label: [getattr(layer.energy, c) / unit.per_unit for layer in r.layers] for label, c in cats.items()
    }
    return _stacked(
        f"Energy per layer ({r.energy_table.name})",
        f"{unit.label} per sample",
        [layer.name for layer in r.layers],
        series,
    )


def baseline_png(r: HardwareReport) -> bytes | None:
    """Model against baseline, relative to the baseline (= 1), each bar labelled with its reduction."""
    b = r.baseline
    if b is None:
        return None
    import matplotlib.style

    t = r.totals
    labels = ["memory", "synaptic ops", "energy"]
    base = [b.memory_bits, b.synaptic_ops, b.energy_pj]
    new = [t.memory.total_bits, t.ops.synaptic_ops, t.energy.total_pj]
    rel = [n / o if o else 0.0 for n, o in zip(new, base, strict=True)]
    with matplotlib.style.context("default"):
        fig = _figure()
        ax = fig.add_subplot()
        x = list(range(len(labels)))
        ax.bar([i - 0.2 for i in x], [1.0] * len(x), width=0.4, label=f"baseline {b.name}")
        ax.bar([i + 0.2 for i in x], rel, width=0.4, label=r.model)
        for i, v in zip(x, rel, strict=True):
            label = f"{1 / v:.3g}x smaller" if 0 < v < 1 else ("same" if v == 1 else f"{v:.3g}x larger")
            ax.annotate(label, (i + 0.2, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, labels, fontsize=9)
        ax.set_ylabel("relative to baseline", fontsize=9)
        ax.set_ylim(0, max(1.0, *rel) * 1.25)
        ax.set_title("Before / after", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        return _png(fig)


def all_pngs(r: HardwareReport) -> dict[str, bytes]:
    """Plot name -> PNG bytes, in display order."""
    out = {"memory": memory_png(r), "ops": ops_png(r), "energy": energy_png(r)}
    base = baseline_png(r)
    if base is not None:
        out["baseline"] = base
    return out
