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
    net = c.use_device(c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset),
                       device)
    bundle = None
    if data:
        time_steps, encoding = c.recorded_defaults(net, model, time_steps, encoding)
        seed = c.recorded_seed(net, model, seed, encoding)
        bundle = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
        c.check_recorded_shape(net, model, bundle)
    base = c.use_device(c.load_model_cli(baseline, None, trust_pickle, trust_code), device) if baseline else None
    with c.threads_for(net, bundle):
        result = make_report(ReportInputs(net, model, bundle, base, baseline, table), show_progress=True)
    if to_stdout:
        c.console.file.write(result.model_dump_json(indent=2) + "\n")
    else:
        render_rich(result, c.console)
    for path in write_outputs(result, **outputs, force=force):
        c.err_console.print(f"wrote {path}", markup=False, highlight=False)
