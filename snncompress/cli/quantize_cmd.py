"""``snncompress quantize``: the quantize pass run as a one-step recipe (flags generated from its config)."""

from __future__ import annotations

import typer

from snncompress.cli.passcmd import register_pass_command

EPILOG = """Examples:

  snncompress quantize demo --data digits -o ptq.safetensors --weight-quant pot4 --membrane-quant int4

  snncompress quantize demo --data digits -o qat.safetensors --mode qat --epochs 10
  --weight-quant pot4 --membrane-quant ternary --json qat.json

  snncompress quantize mypkg.nets:build --weights net.pt --data train.npz --train-data train.npz
  -o q.safetensors --mode qat --weight-quant fixed2.6 --rounding stochastic --neuron-quant fixed4.4

Per-layer settings (e.g. first and last layer at 8 bits) go in a recipe: snncompress run --recipe."""

DOC = """Quantize to an integer-only membrane and low-bit weights, post-training (ptq) or with
quantization-aware training (qat), and write the packed file."""

FLAGS = {"learn_threshold": "--learn-threshold/--fixed-threshold"}


def register(app: typer.Typer) -> None:
    register_pass_command(app, "quantize", epilog=EPILOG, doc=DOC, flags=FLAGS)
