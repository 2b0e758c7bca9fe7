"""``snncompress evaluate``."""

from __future__ import annotations

import typer
from rich.table import Table

from snncompress.cli import common as c


def register(app: typer.Typer) -> None:
    app.command(
        "evaluate",
        epilog="Example:  snncompress evaluate out.safetensors --data digits --time-steps 8 --json -",
    )(evaluate)


def evaluate(
    model: c.ModelArg,
    data: c.DataOpt = "digits",
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
    json_out: c.JsonOpt = None,
    force: c.ForceOpt = False,
    device: c.DeviceOpt = "auto",
) -> None:
    """Accuracy (argmax of output spike counts) and per-layer firing rates on a data set."""
    from snncompress.sim.evaluate import evaluate as run_eval

    c.check_json_target(json_out, force)
    net = c.use_device(c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset,
                           nir_spike=nir_spike, nir_producer=nir_producer),
                       device)
    time_steps, encoding = c.recorded_defaults(net, model, time_steps, encoding)
    seed = c.recorded_seed(net, model, seed, encoding)
    bundle = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
    c.check_recorded_shape(net, model, bundle)
    with c.threads_for(net, bundle):
        result = run_eval(net, bundle, show_progress=not c.json_to_stdout(json_out))
    if result.time_steps and not bundle.is_sequence and result.time_steps != bundle.time_steps:
        # a model with its own time loop, given each sample whole, decides its steps; -T did not change them
        c.err_console.print(f"note: {model} runs its own time loop of {result.time_steps} steps on each sample "
                            f"as it is ({list(bundle.sample_input().shape)}); --time-steps {bundle.time_steps} "
                            "does not change it", soft_wrap=True, markup=False, highlight=False)
    c.emit_json(json_out, {"model": model, "data": bundle.name, **result.to_dict()})
    if c.json_to_stdout(json_out):
        return
    table = Table(title=f"{model} on {bundle.name}: accuracy {result.accuracy:.2f}% ({result.samples} samples)")
    for col in ("neuron layer", "neurons", "firing rate", "spikes / sample"):
        table.add_column(col, justify="left" if col == "neuron layer" else "right")
    for name, rate in result.firing_rates.items():
        table.add_row(name, f"{result.neurons.get(name, 0):,}", f"{rate:.4f}",
                      f"{result.spikes_per_sample.get(name, 0):,.1f}")
    c.console.print(table)
