"""``snncompress verify``: the torch model and the integer-only reference, spike for spike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from snncompress.cli import common as c

BundleOpt = Annotated[Path | None, typer.Option(
    "--bundle", help="Run this deployment bundle (a folder written by --write-bundle) instead of compiling MODEL.")]
WriteBundleOpt = Annotated[Path | None, typer.Option(
    "--write-bundle", help="Also write the verified integer program as a deployment bundle (JSON + binary) here.")]


def register(app: typer.Typer) -> None:
    app.command(
        "verify",
        epilog="Example:  snncompress verify q.safetensors --data digits --json verify.json "
               "--write-bundle q-bundle    |    snncompress verify q.safetensors --data digits --bundle q-bundle",
    )(verify)


def verify(
    model: c.ModelArg,
    data: c.DataOpt = "digits",
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    encoding: c.EncodingOpt = "direct",
    time_steps: c.TimeStepsOpt = 8,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.SeedOpt = 0,
    json_file: c.JsonFileOpt = None,
    bundle: BundleOpt = None,
    write_bundle: WriteBundleOpt = None,
    force: c.ForceOpt = False,
) -> None:
    """Run the quantized model integer-only (numpy int64, no floating point in a step) and compare its
    spikes with the torch model's, per layer and time step.

    Exit 0 when every spike matches, 1 on any mismatch (the count and the first location are printed),
    2 when the model cannot be executed integer-only (which layer, and why).
    """
    from snncompress.errors import DomainError, InputError
    from snncompress.fileformat.atomic import check_output_path
    from snncompress.integer.bundle import read_bundle
    from snncompress.integer.bundle import write_bundle as write
    from snncompress.integer.verify import verify as run_verify

    if bundle is not None and write_bundle is not None:
        raise InputError("--bundle runs an existing bundle; --write-bundle writes one: pass one of them")
    if json_file is not None:
        check_output_path(json_file, force)
    if write_bundle is not None and write_bundle.exists() and not force:
        raise InputError(f"{write_bundle} exists; pass --force to overwrite it")
    program = read_bundle(bundle) if bundle is not None else None
    net = c.load_model_cli(model, weights, trust_pickle, trust_code)
    loaded = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
    result = run_verify(net, loaded, program=program, show_progress=True)
    payload = {"model": model, "data": loaded.name, "bundle": str(bundle) if bundle else None, **result.to_dict()}
    _print(result, model if bundle is None else f"{bundle} (bundle)")
    if json_file is not None:
        c.write_json(json_file, payload)
    if write_bundle is not None and result.bit_exact:
        write(result.program, write_bundle, force=force)
        c.err_console.print(f"wrote the integer program as a bundle: {write_bundle}", highlight=False, markup=False)
    if not result.bit_exact:
        first = result.first
        raise DomainError(f"{result.total_mismatches} mismatching spike(s) between the torch model and the integer "
                          f"reference; first at {first}" + (" (no bundle written)" if write_bundle else ""))


def _print(result, label: str) -> None:
    table = Table(title=f"{label}: torch model vs integer-only reference, {result.samples} samples x "
                        f"{result.time_steps} steps")
    table.add_column("neuron layer")
    table.add_column("torch spikes", justify="right")
    table.add_column("mismatches per step", justify="left")
    table.add_column("mismatches", justify="right")
    for name, per_step in result.mismatches.items():
        table.add_row(name, f"{result.spikes[name]:,}", " ".join(str(v) for v in per_step), f"{sum(per_step):,}")
    c.console.print(table)
    rounding = [f"{r['layer']} ({r['float32_bits']} bits)" if r["float32_bits"] else f"{r['layer']} (float32 "
                "rounding of the membrane unit or the synaptic current)" for r in result.layers
                if "float32_exact" in r and not r["float32_exact"]]
    if rounding:
        c.err_console.print("note: torch's float32 path can round in layer(s) " + ", ".join(rounding) + "; a spike "
                            "can differ there where a value lands within a float32 rounding step of a decision",
                            highlight=False, markup=False, soft_wrap=True)
    else:
        c.console.print("float32-exact: every layer's values fit float32's 24-bit significand, so torch cannot "
                        "round for inputs within this data's range", highlight=False, markup=False, soft_wrap=True)
    for note in result.notes:
        c.err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    total, compared = result.total_mismatches, result.total_compared
    if total == 0:
        c.console.print(f"bit-exact: 0 mismatching spikes of {compared:,} spike decisions; the output layer's "
                        f"prediction agrees on {result.predictions_agree}/{result.samples} samples",
                        highlight=False, markup=False, soft_wrap=True)
    else:
        c.console.print(f"NOT bit-exact: {total:,} mismatching spikes of {compared:,}; first: {result.first}",
                        highlight=False, markup=False, soft_wrap=True)
