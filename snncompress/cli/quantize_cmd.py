"""``snncompress quantize``: the quantize pass run as a one-step recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from snncompress.cli import common as c
from snncompress.cli.compress import (
    CompressJob,
    EnergyOpt,
    GateOpt,
    OutputOpt,
    QuietOpt,
    RunJsonOpt,
    TrainDataOpt,
    run_pass_command,
)

EPILOG = """Examples:

  snncompress quantize demo --data digits -o ptq.safetensors --weight-quant pot4 --membrane-quant int4

  snncompress quantize demo --data digits -o qat.safetensors --mode qat --epochs 10
  --weight-quant pot4 --membrane-quant ternary --json qat.json

  snncompress quantize mypkg.nets:build --weights net.pt --data train.npz --train-data train.npz
  -o q.safetensors --mode qat --weight-quant fixed2.6 --rounding stochastic --neuron-quant fixed4.4

Per-layer settings (e.g. first and last layer at 8 bits) go in a recipe: snncompress run --recipe."""


def register(app: typer.Typer) -> None:
    app.command("quantize", epilog=EPILOG)(quantize)


def quantize(
    model: c.ModelArg,
    output: OutputOpt,
    data: c.DataOpt = "digits",
    membrane_quant: Annotated[str, typer.Option(
        "--membrane-quant", help="Stored membrane: ternary, int<k> (k-bit integer levels) or fp32.")] = "ternary",
    clip: Annotated[float | None, typer.Option(
        "--clip", help="Negative clipping boundary c of the membrane, in units of Vth (e.g. -3).")] = None,
    membrane_grid: Annotated[int | None, typer.Option(
        "--membrane-grid", help="Integer levels per threshold for int<k> membranes (default: the "
                                "quantizer's); ternary is 1.")] = None,
    weight_quant: Annotated[str, typer.Option(
        "--weight-quant", help="pot<b>, apot<b>, int<b>, ternary, fixed<m>.<n> or fp32.")] = "pot4",
    rounding: Annotated[str, typer.Option(
        "--rounding", help="nearest, truncate or stochastic (int and fixed point).")] = "nearest",
    neuron_quant: Annotated[str | None, typer.Option(
        "--neuron-quant", help="Fixed point fixed<m>.<n> for threshold and beta.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="ptq (quantize as trained) or qat (fine-tune).")] = "ptq",
    calibration: Annotated[str | None, typer.Option(
        "--calibration", help="PTQ: adaround (choose each weight's rounding on calibration data; the default) "
                              "or none.", show_default=False)] = None,
    calibration_samples: Annotated[int, typer.Option(
        "--calibration-samples", help="PTQ calibration samples (from --train-data, else --data).")] = 256,
    epochs: Annotated[int, typer.Option("--epochs", help="QAT epochs.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="QAT learning rate (Adam).")] = 1e-3,
    loss: Annotated[str, typer.Option("--loss", help="QAT loss: ce (spike counts) or tet.")] = "ce",
    schedule: Annotated[str, typer.Option(
        "--schedule", help="QAT learning rate: cosine (annealed to 0 over the run) or constant.")] = "cosine",
    learn_threshold: Annotated[bool, typer.Option(
        "--learn-threshold/--fixed-threshold",
        help="QAT: learn each quantized layer's threshold (SpQuant §4.4); the membrane levels stay put.")] = True,
    threshold_lr_scale: Annotated[float, typer.Option(
        "--threshold-lr-scale", help="QAT: the thresholds' learning rate as a multiple of --lr.")] = 10.0,
    validation_split: Annotated[float, typer.Option(
        "--validation-split", help="QAT: fraction of the training data held out to choose the best epoch "
                                   "(0: choose on the training data itself).")] = 0.0,
    train_data: TrainDataOpt = None,
    integer_only: Annotated[bool, typer.Option(
        "--integer-only", help="Round biases, scales and neuron parameters so the torch model and the "
                               "integer-only reference (verify) agree by construction.")] = False,
    gates: GateOpt = None,
    json_file: RunJsonOpt = None,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    encoding: c.EncodingOpt = "direct",
    time_steps: c.TimeStepsOpt = 8,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.SeedOpt = 0,
    energy: EnergyOpt = "45nm",
    force: c.ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Quantize to an integer-only membrane and low-bit weights, post-training (ptq) or with
    quantization-aware training (qat), and write the packed file."""
    config = {
        "mode": mode, "membrane_quant": membrane_quant, "clip": clip, "weight_quant": weight_quant,
        "rounding": rounding, "neuron_quant": neuron_quant, "epochs": epochs, "lr": lr, "loss": loss,
        "schedule": schedule, "learn_threshold": learn_threshold, "threshold_lr_scale": threshold_lr_scale,
        "validation_split": validation_split,
        "calibration_samples": calibration_samples,
    }
    if calibration is not None:  # QAT notes a calibration the user asked for
        config["calibration"] = calibration
    if membrane_grid is not None:
        config["membrane_grid"] = membrane_grid
    if integer_only:
        config["integer_only"] = True
    job = CompressJob(model=model, output=output, data=data, train_data=train_data, weights=weights,
                      trust_pickle=trust_pickle, encoding=encoding, time_steps=time_steps, batch_size=batch_size,
                      limit=limit, seed=seed, force=force, json_file=json_file, gates=gates or [], energy=energy,
                      quiet=quiet)
    run_pass_command("quantize", config, job)
