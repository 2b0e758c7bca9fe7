"""``snncompress analyze``: the membrane clipping analysis (an analysis: no model file is written).

The options are the analyze pass's config keys (validated as a one-step recipe, problems named by
flag) plus the shared model and data options; ``--plot`` writes the figure, ``--json`` the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from snncompress.cli import common as c
from snncompress.passes.analyze import AnalyzeConfig, ClipAnalysis

EPILOG = """Examples:

  snncompress analyze demo --data digits --plot clip.png

  snncompress analyze demo --data digits --clip-range -2:-0.25:0.25 --membrane-quant int4 --json clip.json

  snncompress analyze mypkg.nets:build --weights net.pt --data events.npz --clip-range -4,-3,-2,-1 --tolerance 1

In a recipe, an analyze step before quantize with 'clip: auto' hands the recommended boundary over
(examples/analyze-then-quantize.yaml)."""


def _help(key: str) -> str:
    info = AnalyzeConfig.model_fields[key]
    default = "none" if info.default is None else info.default
    return f"{info.description} (default: {default})"


ClipRangeOpt = Annotated[str | None, typer.Option("--clip-range", metavar="START:STOP:STEP",
                                                  help=_help("clip_range"), show_default=False)]
ToleranceOpt = Annotated[float | None, typer.Option("--tolerance", help=_help("tolerance"), show_default=False)]
MembraneOpt = Annotated[str | None, typer.Option("--membrane-quant", help=_help("membrane_quant"),
                                                 show_default=False)]
GridOpt = Annotated[int | None, typer.Option("--membrane-grid", help=_help("membrane_grid"), show_default=False)]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="FILE", help="Write the figure (per-layer r_s and Gamma_u, accuracy against c, membrane "
                                   "histograms) as PNG to FILE.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]


def register(app: typer.Typer) -> None:
    app.command("analyze", epilog=EPILOG)(analyze)


def analyze(
    model: c.ModelArg,
    data: c.DataOpt = "digits",
    clip_range: ClipRangeOpt = None,
    tolerance: ToleranceOpt = None,
    membrane_quant: MembraneOpt = None,
    membrane_grid: GridOpt = None,
    plot: PlotOpt = None,
    json_out: c.JsonOpt = None,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    encoding: c.EncodingOpt = "direct",
    time_steps: c.TimeStepsOpt = 8,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.SeedOpt = 0,
    force: c.ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Membrane clipping analysis (SpQuant-SNN §4.1): per neuron layer U_min, the neurons below each
    clipping boundary c at t = 1 (Gamma_u) and how many of them fire later (r_s); the accuracy with
    the membrane clipped at each c (no fine-tuning); the most aggressive c within --tolerance points."""
    from snncompress.fileformat.atomic import check_output_path, write_atomic
    from snncompress.passes.analyze import analyze_clipping
    from snncompress.recipes import Recipe

    given = {"clip_range": clip_range, "tolerance": tolerance, "membrane_quant": membrane_quant,
             "membrane_grid": membrane_grid}
    recipe = Recipe.single("analyze", {k: v for k, v in given.items() if v is not None})
    c.check_json_target(json_out, force)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            from snncompress.errors import InputError

            raise InputError(f"--plot {plot}: the figure is a PNG; name the file .png")
        check_output_path(plot, force)
    net = c.load_model_cli(model, weights, trust_pickle, trust_code)
    bundle = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
    config = recipe.steps[0].config
    analysis = analyze_clipping(net, config, bundle, show_progress=not quiet)
    if plot is not None:
        from snncompress.passes.analyze_plot import clip_figure_png

        png = clip_figure_png(analysis, title=f"membrane clipping analysis: {model} on {bundle.name} "
                                              f"({analysis.samples} samples, T = {analysis.time_steps})")
        write_atomic(plot, lambda tmp: tmp.write_bytes(png))
    payload = {"model": model, "config": config.model_dump(mode="json"), **analysis.to_dict(),
               **({"plot": str(plot)} if plot is not None else {})}
    c.emit_json(json_out, payload)
    if c.json_to_stdout(json_out):
        return
    print_analysis(model, analysis)
    if not quiet:
        if analysis.off_grid():
            c.err_console.print(analysis.off_grid(), soft_wrap=True, markup=False, highlight=False)
        written = [str(p) for p in (plot, json_out) if p is not None]
        if written:
            c.err_console.print(f"wrote {' and '.join(written)}", soft_wrap=True, markup=False, highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def print_analysis(model: str, analysis: ClipAnalysis) -> None:
    """The per-layer table, the sweep tables and the recommendation, on stdout."""
    layers = Table(title=f"{model} on {analysis.data}: unclipped accuracy {analysis.accuracy:.2f}% "
                         f"({analysis.samples} samples, T = {analysis.time_steps})")
    for col in ("neuron layer", "neurons", "U_min (x Vth)", "firing rate"):
        layers.add_column(col, justify="left" if col == "neuron layer" else "right")
    for layer in analysis.layers:
        layers.add_row(layer.name, f"{layer.neurons:,}", f"{layer.u_min:.2f}",
                       f"{analysis.firing_rates.get(layer.name, 0.0):.4f}")
    c.console.print(layers)
    accuracy = Table(title="accuracy with the stored membrane clipped at c (no fine-tuning)")
    for col in ("c (x Vth)", "accuracy %", "drop", ""):
        accuracy.add_column(col, justify="left" if not col else "right")
    for point in analysis.sweep:
        mark = "recommended" if point.boundary == analysis.recommended else "" if point.eligible else "off grid"
        accuracy.add_row(f"{point.boundary:g}", f"{point.accuracy:.2f}", f"{point.accuracy_drop:+.2f}", mark)
    c.console.print(accuracy)
    stats = Table(title="Gamma_u % (v[1] < c) / r_s % (of those, firing per step, t = 2..T), per layer")
    stats.add_column("c (x Vth)", justify="right")
    for layer in analysis.layers:
        stats.add_column(layer.name, justify="right")
    for k, boundary in enumerate(analysis.boundaries):
        stats.add_row(f"{boundary:g}", *[f"{_pct(layer.gamma_u[k])} / {_pct(layer.r_s[k])}"
                                         for layer in analysis.layers])
    c.console.print(stats)
    c.console.print(analysis.recommendation(), soft_wrap=True, markup=False, highlight=False)
