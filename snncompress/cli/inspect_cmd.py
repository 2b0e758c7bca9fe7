"""``snncompress inspect``."""

from __future__ import annotations

import typer
from rich.table import Table

from snncompress.cli import common as c


def register(app: typer.Typer) -> None:
    app.command(
        "inspect",
        epilog="Example:  snncompress inspect demo --data digits    |    "
               "snncompress inspect mypkg.nets:build --weights net.safetensors --json -",
    )(inspect)


def inspect(
    model: c.ModelArg,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    nir_dt: c.NirDtOpt = None,
    nir_reset: c.NirResetOpt = None,
    nir_spike: c.NirSpikeOpt = None,
    nir_producer: c.NirProducerOpt = None,
    data: c.OptionalDataOpt = None,
    time_steps: c.TimeStepsOpt = 8,
    json_out: c.JsonOpt = None,
    force: c.ForceOpt = False,
) -> None:
    """Show a model's layers, neuron types and parameters, shapes and parameter counts.

    With --data, one sample is run through the model to show each layer's output shape.
    """
    from snncompress.sim.runner import SNNRunner, resolve_layout
    from snncompress.sim.summary import summarize

    c.check_json_target(json_out, force)
    net = c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset,
                           nir_spike=nir_spike, nir_producer=nir_producer)
    sample, is_sequence = None, False
    if data is not None:
        bundle = c.load_data_cli(data, "direct", time_steps, 1, 1, 0)
        sample = bundle.sample_input()
        is_sequence = resolve_layout(SNNRunner(net), sample, time_steps)
    summary = summarize(net, sample, is_sequence=is_sequence)
    c.emit_json(json_out, summary.to_dict())
    if c.json_to_stdout(json_out):
        return
    table = Table(title=f"{model}  ({summary.style} style)")
    for col in ("layer", "type", "params", "weight shape", "output shape", "neuron / storage"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for layer in summary.layers:
        extra = ""
        if layer.neuron:
            n = layer.neuron
            extra = f"beta={_short(n['beta'])} thr={_short(n['threshold'])} reset={n['reset_mechanism']}"
            if "alpha" in n:
                extra += f" alpha={_short(n['alpha'])}"
        if layer.storage:
            extra += (" " if extra else "") + ", ".join(f"{k}={_short(v)}" for k, v in layer.storage.items())
        table.add_row(layer.name, layer.type, f"{layer.parameters:,}", _shape(layer.weight_shape),
                      _shape(layer.output_shape), extra)
    c.console.print(table)
    c.console.print(f"total parameters: {summary.total_parameters:,}   neuron layers: {summary.neuron_layers}")
    c.console.print(f"run: {summary.stepping}", highlight=False, markup=False, soft_wrap=True)
    if summary.history:
        c.console.print("pass history: " + " -> ".join(h.get("pass", "?") for h in summary.history))


def _shape(shape) -> str:
    return "x".join(map(str, shape)) if shape else ""


def _short(value) -> str:
    if isinstance(value, list):
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return value.get("label") or value.get("kind") or "{...}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
