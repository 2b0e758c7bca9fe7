"""``snncompress evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from snncompress.cli import common as c

ReferenceOpt = Annotated[str | None, typer.Option(
    "--reference", metavar="MODEL",
    help="Compare with this model (e.g. the fp32 model MODEL was compressed from) on the same data: agreement "
         "of predictions, per-layer spike-count correlation and firing drift (earth mover's distance of the "
         "per-neuron firing rates); no labels needed. Layers are matched by name.")]
ReferenceWeightsOpt = Annotated[Path | None, typer.Option(
    "--reference-weights", help="State dict for a --reference factory model (as --weights for MODEL).")]


def register(app: typer.Typer) -> None:
    app.command(
        "evaluate",
        epilog="Example:  snncompress evaluate out.safetensors --data digits --time-steps 8 --json -\n\n"
               "Label-free:  snncompress evaluate out.safetensors --data unlabelled.pt --reference demo",
    )(evaluate)


def evaluate(
    model: c.ModelArg,
    data: c.DataOpt = "digits",
    weights: c.WeightsOpt = None,
    reference: ReferenceOpt = None,
    reference_weights: ReferenceWeightsOpt = None,
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
    """Accuracy (argmax of output spike counts) and per-layer firing rates on a data set; with --reference,
    fidelity to another model (agreement, spike-count correlation, firing drift)."""
    from snncompress.errors import InputError
    from snncompress.sim.evaluate import evaluate as run_eval

    c.check_json_target(json_out, force)
    if reference_weights is not None and reference is None:
        raise InputError("--reference-weights applies to a --reference model; pass --reference")
    net = c.use_device(c.load_model_cli(model, weights, trust_pickle, trust_code, nir_dt=nir_dt, nir_reset=nir_reset,
                           nir_spike=nir_spike, nir_producer=nir_producer),
                       device)
    ref_net = None
    if reference is not None:  # the NIR read options are MODEL's: a .nir reference is read with its own metadata
        ref_net = c.use_device(c.load_model_cli(reference, reference_weights, trust_pickle, trust_code), device)
    time_steps, encoding = c.recorded_defaults(net, model, time_steps, encoding)
    seed = c.recorded_seed(net, model, seed, encoding)
    bundle = c.load_data_cli(data, encoding, time_steps, batch_size, limit, seed)
    c.check_recorded_shape(net, model, bundle)
    fidelity = None
    with c.threads_for(net, bundle):
        if ref_net is None:
            result = run_eval(net, bundle, show_progress=not c.json_to_stdout(json_out))
        else:
            from snncompress.sim.fidelity import compare

            fidelity = compare(net, ref_net, bundle, show_progress=not c.json_to_stdout(json_out))
            result = fidelity.evaluation
    if result.time_steps and not bundle.is_sequence and result.time_steps != bundle.time_steps:
        # a model with its own time loop, given each sample whole, decides its steps; -T did not change them
        c.err_console.print(f"note: {model} runs its own time loop of {result.time_steps} steps on each sample "
                            f"as it is ({list(bundle.sample_input().shape)}); --time-steps {bundle.time_steps} "
                            "does not change it", soft_wrap=True, markup=False, highlight=False)
    for line in fidelity.notes() if fidelity is not None else []:
        c.err_console.print(f"note: {line}", soft_wrap=True, markup=False, highlight=False)
    payload = {"model": model, "data": bundle.name, "labelled": bundle.labelled, **result.to_dict()}
    if fidelity is not None:
        payload["reference"] = {"model": reference, **fidelity.to_dict()}
    c.emit_json(json_out, payload)
    if c.json_to_stdout(json_out):
        return
    accuracy = f"accuracy {result.accuracy:.2f}%" if result.accuracy is not None else "accuracy n/a (unlabelled data)"
    title = f"{model} on {bundle.name}: {accuracy} ({result.samples} samples)"
    if fidelity is not None:
        ref_acc = fidelity.reference_evaluation.accuracy
        title += (f"\nagreement with {reference}: {fidelity.agreement:.2f}% of predictions"
                  + (f" (its accuracy {ref_acc:.2f}%)" if ref_acc is not None else ""))
    table = Table(title=title)
    columns = ["neuron layer", "neurons", "firing rate", "spikes / sample"]
    if fidelity is not None:
        columns += ["ref rate", "count r", "drift (EMD)"]
    for col in columns:
        table.add_column(col, justify="left" if col == "neuron layer" else "right")
    for name, rate in result.firing_rates.items():
        row = [name, f"{result.neurons.get(name, 0):,}", f"{rate:.4f}", f"{result.spikes_per_sample.get(name, 0):,.1f}"]
        if fidelity is not None:
            layer = fidelity.layers.get(name)
            row += ["-", "-", "-"] if layer is None else [
                f"{layer.reference_firing_rate:.4f}", _fmt(layer.correlation), _fmt(layer.emd)]
        table.add_row(*row)
    c.console.print(table)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
