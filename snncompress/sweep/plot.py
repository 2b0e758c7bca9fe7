"""The Pareto plot of a sweep: accuracy against memory and against energy, the chosen point marked.

matplotlib on the Agg canvas without pyplot state (as :mod:`snncompress.hardware.plots`), no
date metadata, so the same sweep gives the same PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from snncompress.sweep.select import Constraints


def pareto_png(points: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]],
               best: Mapping[str, Any] | None, constraints: Constraints, title: str) -> bytes:
    """Two panels (accuracy vs memory in KiB, accuracy vs energy in nJ per sample) as PNG bytes.

    Grey dots: feasible points off the front; grey crosses: points that miss a constraint; blue:
    the Pareto front; the red star: the chosen point (highest R).
    """
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = [p for p in points if _xy(p) is not None]
    on_front = {id(p) for p in front}
    front_trials = {p.get("trial") for p in front}
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(9.0, 3.8), dpi=100)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (key, scale, label) in zip(axes, (("memory_bits", 8 * 1024, "memory (KiB)"),
                                                  ("energy_pj", 1000.0, "energy per sample (nJ)")), strict=True):
            for p in measured:
                x, y = p[key] / scale, p["accuracy"]
                if id(p) in on_front or p.get("trial") in front_trials:
                    continue
                marker = "o" if p.get("feasible", True) and not p.get("violations") else "x"
                ax.scatter([x], [y], c="0.6", marker=marker, s=22, zorder=2)
            xs = [p[key] / scale for p in front]
            ys = [p["accuracy"] for p in front]
            ax.scatter(xs, ys, c="tab:blue", s=30, zorder=3, label="Pareto front")
            if best is not None:
                ax.scatter([best[key] / scale], [best["accuracy"]], c="tab:red", marker="*", s=220, zorder=4,
                           label="chosen (highest R)")
            if key == "memory_bits" and constraints.max_memory_bytes is not None:
                ax.axvline(constraints.max_memory_bytes / 1024, color="tab:red", ls="--", lw=0.8,
                           label="max memory")
            if constraints.min_accuracy is not None:
                ax.axhline(100 * constraints.min_accuracy, color="tab:orange", ls="--", lw=0.8, label="min accuracy")
            ax.set_xlabel(label)
            ax.grid(True, alpha=0.3)
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(loc="lower right", fontsize=7)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _xy(point: Mapping[str, Any]) -> tuple[float, float] | None:
    if point.get("accuracy") is None or point.get("memory_bits") is None or point.get("energy_pj") is None:
        return None
    return point["memory_bits"], point["accuracy"]
