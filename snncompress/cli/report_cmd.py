"""``snncompress report``: memory, operations and estimated energy, against the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from snncompress.cli import common as c

EPILOG = (
    "Examples:\n\n"
    "  snncompress report demo --data digits\n\n"
    "  snncompress report out.safetensors --data digits --energy 7nm --json report.json "
    "--markdown report/report.md\n\n"
    "  snncompress report out.safetensors --baseline demo --data digits --energy my_chip.yaml\n\n"
    "The JSON follows snncompress/hardware/report_schema.json (schema_version 1); docs/report.md "
    "explains every figure."
)


def register(app: typer.Typer) -> None:
    app.command("report", epilog=EPILOG)(report)


def report(
    model: c.ModelArg,
    data: c.OptionalDataOpt = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Compare against this model instead of the fp32 model recorded in MODEL's pass history.",
        ),
    ] = None,
    energy: Annotated[
        str, typer.Option("--energy", help="Energy table: a process node (45nm, 7nm), a chip (loihi, truenorth, "
                                           "spinnaker, spinnaker2, tianjic, seneca), or a YAML file with the "
                                           "same keys.")
    ] = "45nm",
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    nir_dt: c.NirDtOpt = None,
    nir_reset: c.NirResetOpt = None,
    nir_spike: c.NirSpikeOpt = None,
    nir_producer: c.NirProducerOpt = None,
    encoding: c.RecordedEncodingOpt = None,
    time_steps: c.RecordedTimeStepsOpt = None,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.RecordedSeedOpt = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Also write the report as JSON "
                                  "(report_schema.json) to FILE; '-': to stdout, instead of the tables.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report with plots.")
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Write a Markdown report; its PNG plots go beside it as <stem>_<plot>.png."
        ),
    ] = None,
    sparsity_sweep: Annotated[
        bool, typer.Option("--sparsity-sweep", help="Instead of the report: memory and energy against unstructured "
                           "weight sparsity 0-95 % at fp32 and 4-bit weights (the format each layer would use, "
                           "where pruning stops paying). Needs --data; --json FILE writes the points.")
    ] = False,
    force: c.ForceOpt = False,
    device: c.DeviceOpt = "auto",
) -> None:
    """Memory, operations and estimated energy per layer and in total, against the baseline.

    With --data, synaptic operations are measured from recorded spike activity and accuracy is
    reported; without it, every synaptic layer is costed at the dense upper bound (SpQuant Eq. 30)
    and layer shapes come from one sample of the data set recorded in MODEL.
    """
    from snncompress.costing.report import ReportInputs, check_outputs, make_report, output_paths, write_outputs
    from snncompress.hardware import load_energy_table
    from snncompress.hardware.render import render_rich

    # everything a user can get wrong is checked before the model is run
    table = load_energy_table(energy)
    to_stdout = c.json_to_stdout(json_file)
    outputs = dict(json_path=None if to_stdout else json_file, html=html, markdown=markdown)
    check_outputs(output_paths(**outputs, with_baseline=False), force)
    if sparsity_sweep and data is None:
        from snncompress.errors import ConfigError

        raise ConfigError("--sparsity-sweep measures the model's activity: pass --data")
    net = c.use_device(c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset,
                           nir_spike=nir_spike, nir_producer=nir_producer),
                       device)
    bundle = None
    if data:
        time_steps, encoding = c.recorded_defaults(net, model, time_steps, encoding)
        seed = c.recorded_seed(net, model, seed, encoding)
        bundle = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
        c.check_recorded_shape(net, model, bundle)
    if sparsity_sweep:
        with c.threads_for(net, bundle):
            _sweep(net, model, bundle, table, json_file)
        return
    base = c.use_device(c.load_model_cli(baseline, None, trust_pickle, trust_code), device) if baseline else None
    with c.threads_for(net, bundle):
        result = make_report(ReportInputs(net, model, bundle, base, baseline, table), show_progress=True)
    if to_stdout:
        c.console.file.write(result.model_dump_json(indent=2) + "\n")
    else:
        render_rich(result, c.console)
    for path in write_outputs(result, **outputs, force=force):
        c.err_console.print(f"wrote {path}", markup=False, highlight=False)


def _sweep(net, name: str, bundle, table, json_file: Path | None) -> None:
    """Print (and write) the sparsity sweep of ``net`` (:mod:`snncompress.hardware.sweep`)."""
    from rich.table import Table

    from snncompress.costing.describe import describe_model
    from snncompress.hardware.sweep import break_even, sparsity_sweep

    desc = describe_model(net, bundle, name=name, show_progress=True)
    points = sparsity_sweep(desc, table)
    c.emit_json(json_file, {"model": name, "data": bundle.name, "points": [p.to_dict() for p in points]})
    if c.json_to_stdout(json_file):
        return
    schemes = list(dict.fromkeys(p.scheme for p in points))
    view = Table(title=f"{name}: memory and energy per sample against unstructured weight sparsity")
    view.add_column("sparse", justify="right")
    for scheme in schemes:
        view.add_column(f"{scheme} KiB", justify="right")
        view.add_column(f"{scheme} energy nJ", justify="right")
        view.add_column(f"{scheme} layers")
    for s in sorted({p.sparsity for p in points}):
        row = [f"{100 * s:.0f}%"]
        for scheme in schemes:
            p = next(q for q in points if q.scheme == scheme and q.sparsity == s)
            counts = {f: list(p.formats.values()).count(f) for f in dict.fromkeys(p.formats.values())}
            formats = " ".join(f"{f}x{n}" for f, n in counts.items())
            row += [f"{p.memory_bits / 8192:.2f}", f"{p.energy_pj / 1000:.1f}", formats]
        view.add_row(*row)
    c.console.print(view)
    for scheme in schemes:
        mem, energy = break_even(points, scheme), break_even(points, scheme, "energy_pj")
        rows = sorted((p for p in points if p.scheme == scheme), key=lambda p: p.sparsity)
        moves = [f"{', '.join(b.memory_classes)} from {_pct(b.sparsity)}"
                 for a, b in zip(rows, rows[1:], strict=False) if a.memory_classes != b.memory_classes]
        classes = f"; memory class {', '.join(rows[0].memory_classes)}" + (f", {'; '.join(moves)}" if moves else "")
        c.console.print(f"{scheme}: memory below dense from {_pct(mem)} sparsity, energy from {_pct(energy)}"
                        f"{classes}", markup=False, highlight=False)
    c.console.print("formats: dense / bitmap (1 bit per weight) / CSR (column index per nonzero + row pointers), "
                    "whichever stores the layer in fewer bits; ops scale with the kept fraction (modelled)",
                    markup=False, highlight=False)


def _pct(value: float | None) -> str:
    return "never (in the sweep)" if value is None else f"{100 * value:.0f}%"
