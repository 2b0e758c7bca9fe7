"""``snncompress export``: write a model as NIR or as a one-step ONNX graph."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from snncompress.cli import common as c

FORMATS = ("onnx", "nir")
DEMO_INPUT_SHAPE = (1, 8, 8)  # the demo digits CSNN reads 8x8 single-channel images

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="File to write (.onnx or .nir).")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f",
    help="onnx (one time step, explicit neuron states) or nir; default: from the -o suffix.")]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", help="One input time step without the batch dimension, e.g. 1,8,8 (instead of --data).")]


def register(app: typer.Typer) -> None:
    app.command(
        "export",
        epilog="Example:  snncompress export demo --format onnx -o demo.onnx --time-steps 8    |    "
               "snncompress export out.safetensors -o out.nir --data digits    |    "
               "snncompress export mypkg.nets:build --weights w.safetensors -o net.nir --input-shape 2,34,34",
    )(export)


def export(
    model: c.ModelArg,
    output: OutputOpt,
    fmt: FormatOpt = None,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    nir_dt: c.NirDtOpt = None,
    nir_reset: c.NirResetOpt = None,
    nir_spike: c.NirSpikeOpt = None,
    nir_producer: c.NirProducerOpt = None,
    data: c.OptionalDataOpt = None,
    input_shape: InputShapeOpt = None,
    time_steps: c.RecordedTimeStepsOpt = None,
    unroll: Annotated[bool, typer.Option(
        "--unroll", help="ONNX: unroll --time-steps steps into one graph, spikes [T, B, ...] = graph(input).")] = False,
    force: c.ForceOpt = False,
    json_out: c.JsonOpt = None,
    nir_compat: Annotated[bool, typer.Option(
        "--nir-compat", help="NIR only: write what readers pinned to nir 1.0.4 (Norse, sinabs) load: no v_reset "
                             "(0 here), no metadata where nir 1.0.4 takes none.")] = False,
) -> None:
    """Export a model to NIR or to a one-step ONNX graph.

    An nn.Sequential is exported as it is; a user module (its own time loop, or one time step per call)
    as the chain of its layers, when one recorded step shows each layer takes the previous one's output
    (else the error names the call that breaks the chain).

    NIR: the graph other SNN tools read; the reset mechanism and dt are kept in its metadata.

    ONNX: one time step with the neuron states as inputs/outputs, checked in onnxruntime first.

    The input shape comes from --data, --input-shape, or the model (first Linear, NIR file, demo).
    """
    from torch import nn

    from snncompress.errors import InputError
    from snncompress.export.layout import require_sequential
    from snncompress.fileformat.atomic import check_output_path

    kind = _format(fmt, output)
    if nir_compat and kind != "nir":
        raise InputError("--nir-compat applies to NIR export only")
    check_output_path(output, force)
    c.check_json_target(json_out, force)
    if data is not None and input_shape is not None:
        raise InputError("--data and --input-shape both give the input shape; pass one of them")
    if time_steps is not None and time_steps < 1:
        raise InputError(f"--time-steps must be >= 1, got {time_steps}")
    if unroll and kind != "onnx":
        raise InputError("--unroll applies to ONNX export; NIR graphs are continuous-time")
    net = c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset,
                           nir_spike=nir_spike, nir_producer=nir_producer)
    time_steps, _ = c.recorded_defaults(net, model, time_steps, None, with_encoding=False)
    if isinstance(net, nn.Sequential):
        require_sequential(net, f"{kind.upper()} export")  # before any data is read
    sample = _sample(net, model, data, input_shape, time_steps)
    if kind == "nir":
        from snncompress.export.nir_export import export_nir

        result = export_nir(net, output, sample, force=force, compat=nir_compat)
    elif unroll:
        from snncompress.export.onnx_unrolled import export_onnx_unrolled

        result = export_onnx_unrolled(net, output, sample, time_steps, force=force)
    else:
        from snncompress.export.onnx_export import export_onnx

        result = export_onnx(net, output, sample, time_steps, force=force)
    c.emit_json(json_out, {"model": model, **result.to_dict(), "input_shape": list(sample.shape)})
    if c.json_to_stdout(json_out):
        return
    for note in result.notes:
        c.err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    c.console.print(f"wrote {result.path} ({kind}, input {list(sample.shape)} per step)", highlight=False,
                    markup=False, soft_wrap=True)


def _format(fmt: str | None, output: Path) -> str:
    from snncompress.errors import InputError

    if fmt is not None:
        kind = fmt.lower()
        if kind not in FORMATS:
            raise InputError(f"--format '{fmt}' is unknown; use onnx or nir")
        return kind
    suffix = output.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise InputError(f"cannot tell the format from '{output.name}'; pass --format onnx or --format nir")


def parse_shape(text: str):
    """``"1,8,8"`` (or ``1x8x8``) -> ``(1, 8, 8)``."""
    from snncompress.errors import InputError

    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise InputError(
            f"--input-shape '{text}': expected positive integers like 1,8,8 (no batch dimension)"
        )
    return shape


def _sample(net, model: str, data: str | None, input_shape: str | None, time_steps: int):
    import torch

    from snncompress.errors import InputError
    from snncompress.export.layout import infer_input_shape
    from snncompress.fileformat.loading import DEMO_MODEL
    from snncompress.sim.runner import SNNRunner, resolve_layout

    if data is not None:
        bundle = c.load_data_cli(data, "direct", time_steps, 1, 1, 0)
        sample = bundle.sample_input()
        is_sequence = resolve_layout(SNNRunner(net), sample, time_steps)
        return sample[0] if is_sequence else sample
    if input_shape is not None:
        shape = parse_shape(input_shape)
    else:
        shape = infer_input_shape(net) or (DEMO_INPUT_SHAPE if model == DEMO_MODEL else None)
        if shape is None:
            raise InputError("the input shape is not known from the model; pass --data or --input-shape "
                             "(one time step without the batch dimension, e.g. --input-shape 1,8,8)")
        c.err_console.print(f"note: input shape {list(shape)} per step, from the model (--input-shape to change)",
                            highlight=False, markup=False, soft_wrap=True)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))
