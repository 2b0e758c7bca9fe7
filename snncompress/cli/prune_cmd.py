"""``snncompress prune``: the prune pass run as a one-step recipe (flags generated from its config)."""

from __future__ import annotations

import typer

from snncompress.cli.passcmd import register_pass_command

EPILOG = """Examples:

  snncompress prune demo --data digits -o p50.safetensors --weights-unstructured 0.5 --epochs 3

  snncompress prune demo --data digits -o p80.safetensors --weights-unstructured 0.8 --schedule gradual
  --epochs 6 --json p80.json

  snncompress prune demo --data digits -o nm.safetensors --weights-nm 2:4 --epochs 0

  snncompress prune q.safetensors --data digits -o bin.safetensors --binary-membrane

  snncompress prune demo --data digits -o sc.safetensors --spatial 0.35 --channel-threshold 0.47
  --channel-cost 0.5 --epochs 8

Joint pruning and quantization in one fine-tuning: --weight-quant pot4. Prune then quantize (or the
other way round) keeps both: each fine-tuning keeps every earlier mask and code. Per-layer settings go
in a recipe: snncompress run --recipe examples/schaefer.yaml."""

DOC = """Prune weights (unstructured magnitude, structured rows, N:M; one-shot or gradual) with
fine-tuning, mask the least important membrane values at every step (spatial pruning), drop whole
channels by a gate on the pooled membrane (channel masking, trained in the fine-tuning), or silence the
-1 level of a ternary membrane (binary membrane), and write the packed file.
Reports the configured ratio, the weight sparsity and the synaptic operations measured skipped on the data."""

FLAGS = {"binary_membrane": "--binary-membrane/--no-binary-membrane"}


def register(app: typer.Typer) -> None:
    register_pass_command(app, "prune", epilog=EPILOG, doc=DOC, flags=FLAGS)
