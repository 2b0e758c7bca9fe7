"""The clipping analysis as a PNG, after SpQuant-SNN Figure 2 (matplotlib, Agg canvas, no pyplot state).

Four panels: per-layer ``Gamma_u`` against c, per-layer ``r_s`` against c, accuracy against c (the
unclipped model, the tolerance band and the recommended c marked), and each layer's histogram of the
stored membrane ``v[t] / Vth`` over all steps (log counts), where the long negative tail sits.
Same analysis, same bytes.
"""

from __future__ import annotations

import io

from snncompress.passes.analyze import ClipAnalysis

_DPI = 100
_SIZE = (11.0, 7.5)


def clip_figure_png(analysis: ClipAnalysis, title: str | None = None) -> bytes:
    """PNG bytes of the figure (see the module docstring)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = analysis.boundaries
    with matplotlib.style.context("default"):
        fig = Figure(figsize=_SIZE, dpi=_DPI)
        FigureCanvasAgg(fig)
        (gamma_ax, rs_ax), (acc_ax, hist_ax) = fig.subplots(2, 2)
        for i, layer in enumerate(analysis.layers):
            color = f"C{i % 10}"
            gamma_ax.plot(c, [100 * g for g in layer.gamma_u], marker="o", ms=3, color=color, label=layer.name)
            rs = [(x, 100 * r) for x, r in zip(c, layer.r_s, strict=True) if r is not None]
            if rs:
                rs_ax.plot(*zip(*rs, strict=True), marker="o", ms=3, color=color, label=layer.name)
            hist = layer.histogram
            counts = hist["counts"]
            if counts:
                edges = [hist["start"] + k * hist["width"] for k in range(len(counts) + 1)]
                hist_ax.stairs(counts, edges, color=color, label=f"{layer.name} (U_min {layer.u_min:.2f})")
        gamma_ax.set_title("Gamma_u: neurons with v[1] < c (Eq. 5)", fontsize=10)
        gamma_ax.set_ylabel("% of neurons", fontsize=9)
        rs_ax.set_title("r_s: of those, firing at t = 2..T (Eq. 6)", fontsize=10)
        rs_ax.set_ylabel("% per step", fontsize=9)
        points = analysis.sweep
        acc_ax.plot(c, [p.accuracy for p in points], marker="o", ms=4, color="C0", label="clipped at c")
        acc_ax.axhline(analysis.accuracy, color="0.3", lw=1, label=f"unclipped {analysis.accuracy:.2f}%")
        acc_ax.axhspan(analysis.accuracy - analysis.tolerance, analysis.accuracy, color="0.9",
                       label=f"tolerance {analysis.tolerance:g} points")
        skipped = [p for p in points if not p.eligible]
        if skipped:
            acc_ax.plot([p.boundary for p in skipped], [p.accuracy for p in skipped], "x", color="C3",
                        label=f"not on the {analysis.membrane_quant} grid")
        if analysis.recommended is not None:
            best = next(p for p in points if p.boundary == analysis.recommended)
            acc_ax.plot([best.boundary], [best.accuracy], "*", ms=14, color="C1",
                        label=f"recommended c = {best.boundary:g}")
        acc_ax.set_title("accuracy with the membrane clipped at c, no fine-tuning", fontsize=10)
        acc_ax.set_ylabel("accuracy (%)", fontsize=9)
        pad = 0.05 * (max(c) - min(c)) if len(c) > 1 else 0.25
        for ax in (gamma_ax, rs_ax, acc_ax):
            ax.set_xlim(min(c) - pad, max(c) + pad)
            ax.set_xlabel("clipping boundary c (x Vth)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
        hist_ax.set_yscale("log")
        if c:
            hist_ax.axvspan(min(c), max(c), color="0.92", zorder=0, label="swept c")
        hist_ax.set_title("stored membrane v[t] / Vth, all steps", fontsize=10)
        hist_ax.set_xlabel("v / Vth", fontsize=9)
        hist_ax.set_ylabel("count", fontsize=9)
        hist_ax.tick_params(labelsize=8)
        for ax in (gamma_ax, rs_ax, acc_ax, hist_ax):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(title or f"membrane clipping analysis on {analysis.data} ({analysis.samples} samples, "
                              f"T = {analysis.time_steps})", fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        # no Software/date metadata: the same analysis gives the same bytes
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
        return buf.getvalue()
