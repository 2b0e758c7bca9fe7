"""``snncompress threshold``: the threshold pass run as a one-step recipe (flags generated from its config)."""

from __future__ import annotations

import typer

from snncompress.cli.passcmd import register_pass_command

EPILOG = """Examples:

  snncompress threshold demo --data digits -o thr.safetensors --epochs 5

  snncompress threshold qat.safetensors --data digits -o qat-thr.safetensors --epochs 3
  --window triangle --window-width 0.5 --json thr.json

A quantized or pruned model stays so: its codes stay on their grid, its masks are kept, and a
threshold stored in fixed point is re-encoded on its grid."""

DOC = """Learn each neuron layer's threshold through its own gradient path, the Gradient Penalty
Window over the neurons that fired (SpQuant §4.4), fine-tuning the model, and write the file."""


def register(app: typer.Typer) -> None:
    register_pass_command(app, "threshold", epilog=EPILOG, doc=DOC)
