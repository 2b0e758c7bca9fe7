"""Verify a compressed model: its torch model and the integer-only reference, spike for spike.

The torch model of the file computes in float32; the reference (:mod:`snncompress.integer.execute`)
computes exactly in integers. They agree wherever the float32 arithmetic is exact or its rounding
does not move a value across a decision (the threshold, a membrane level's rounding boundary), which
is the case for power-of-two weights and spike inputs, whose sums are exact in float32; a float bias,
a float32 int-weight scale or a non-power-of-two leak makes float32 round, so a mismatch is possible
in principle where a membrane lands within a float32 rounding step of a boundary. ``verify`` counts
every mismatching spike per layer and step, and reports the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.integer.execute import run_program
from snncompress.integer.program import Program, compile_program, input_format


@dataclass
class Mismatch:
    """Where a spike differs: sample (index in the data), neuron layer, time step, neuron index."""

    sample: int
    layer: str
    step: int
    neuron: list[int]
    torch_spike: int
    reference_spike: int

    def __str__(self) -> str:
        return (f"sample {self.sample}, layer '{self.layer}', step {self.step}, neuron {tuple(self.neuron)}: "
                f"torch {self.torch_spike}, integer reference {self.reference_spike}")


@dataclass
class VerifyResult:
    """Mismatching spikes per neuron layer and time step (summed over samples), and the first one."""

    samples: int
    time_steps: int
    input_frac: int
    mismatches: dict[str, list[int]]
    spikes: dict[str, int]  # torch spikes per layer
    compared: dict[str, int]  # spike decisions compared per layer
    first: Mismatch | None = None
    predictions_agree: int = 0
    notes: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    program: Program | None = field(default=None, repr=False)

    @property
    def total_mismatches(self) -> int:
        return sum(sum(v) for v in self.mismatches.values())

    @property
    def total_compared(self) -> int:
        return sum(self.compared.values())

    @property
    def bit_exact(self) -> bool:
        return self.total_mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bit_exact": self.bit_exact,
            "mismatching_spikes": self.total_mismatches,
            "spike_decisions_compared": self.total_compared,
            "samples": self.samples,
            "time_steps": self.time_steps,
            "input_fraction_bits": self.input_frac,
            "mismatches_per_layer_and_step": self.mismatches,
            "torch_spikes_per_layer": self.spikes,
            "predictions_agree": self.predictions_agree,
            "first_mismatch": None if self.first is None else {**self.first.__dict__},
            "layers": self.layers,
            "notes": self.notes,
        }


class _SpikeRecorder:
    def __init__(self):
        self.spikes: dict[str, list[torch.Tensor]] = {}

    def on_step(self, layer, module, step, spikes, membrane) -> None:
        self.spikes.setdefault(layer, []).append(spikes.detach().clone())


def layer_summary(program: Program) -> list[dict[str, Any]]:
    """Per op: its kind and fixed-point format (for the report and the bundle's reader)."""
    rows = []
    for op in program.ops:
        row: dict[str, Any] = {"layer": op.name, "op": op.op, "kind": getattr(op, "kind", None) or op.neuron}
        if op.op in ("synaptic", "neuron"):
            row["float32_exact"] = op.float32_bits <= 24
            row["float32_bits"] = op.float32_bits if op.float32_bits < 99 else None
        if op.op == "synaptic":
            row.update(in_frac=op.in_frac, out_frac=op.out_frac,
                       multiplier_bits=int(np.abs(op.multiplier).max()).bit_length(),
                       multiplier_is_shift=bool(np.all((op.multiplier & (op.multiplier - 1)) == 0)),
                       weight_level_bits=int(np.abs(op.weight).max()).bit_length() + 1)
        elif op.op == "neuron":
            row.update(kind=op.neuron, frac=op.frac, levels=[op.low, op.high], mechanism=op.mechanism)
        rows.append(row)
    return rows


def scan_inputs(data: DataBundle) -> tuple[int, int]:
    """The input format (fraction bits, max |x_int|) over the whole data set."""
    frac, bound = 0, 0
    for x, _ in data.loader():
        f, b = input_format(x)
        if f > frac:
            bound <<= f - frac
            frac = f
        bound = max(bound, b << (frac - f))
    return frac, bound


def to_integer_input(x: torch.Tensor, frac: int) -> np.ndarray:
    """``x * 2**frac`` as int64 (exact: checked by :func:`input_format`)."""
    return np.ldexp(x.detach().cpu().to(torch.float32).numpy().astype(np.float64), frac).astype(np.int64)


def verify(model: nn.Module, data: DataBundle, *, program: Program | None = None,
           show_progress: bool = False) -> VerifyResult:
    """Run ``model`` (torch) and its integer-only program on ``data``; count mismatching spikes.

    Args:
        model: a quantized stepwise model (e.g. ``load_model("q.safetensors")``).
        data: the data; static inputs are presented ``data.time_steps`` steps.
        program: a program to run instead of compiling ``model`` (e.g. one read from a bundle).
        show_progress: a progress bar on stderr.

    Raises:
        UnsupportedLayerError: the model cannot be executed integer-only (which layer, and why).
    """
    from snncompress.sim.evaluate import prepare
    from snncompress.sim.progress import progress_bar

    runner = prepare(model, data)
    steps = data.sample_input().shape[0] if data.is_sequence else data.time_steps
    frac, bound = scan_inputs(data)
    if program is None:
        program = compile_program(model, frac, bound, steps)
    program.check_input(frac, bound, steps)
    names = program.neuron_layers
    torch_layers = [n for n, _ in runner.neurons]
    if names != torch_layers:
        from snncompress.errors import InputError

        raise InputError(f"the program's neuron layers {names} are not the model's {torch_layers}")
    mismatches = {n: [0] * steps for n in names}
    spikes = {n: 0 for n in names}
    compared = {n: 0 for n in names}
    first: Mismatch | None = None
    offset = agree = 0
    model.eval()
    with progress_bar(show_progress) as bar:
        task = bar.add_task("integer-only check", total=len(data))
        for x, _ in data.loader():
            recorder = _SpikeRecorder()
            with torch.no_grad(), runner.observe(recorder):
                runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
            reference = run_program(program, to_integer_input(x, program.input_frac),
                                    is_sequence=data.is_sequence, time_steps=data.time_steps)
            for name in names:
                ours = torch.stack(recorder.spikes[name]).numpy().astype(np.uint8)  # [T, B, ...]
                theirs = reference[name]
                diff = ours != theirs
                per_step = diff.reshape(diff.shape[0], -1).sum(axis=1)
                for t, count in enumerate(per_step.tolist()):
                    mismatches[name][t] += int(count)
                spikes[name] += int(ours.sum())
                compared[name] += int(ours.size)
                if first is None and diff.any():
                    t, b, *where = (int(i) for i in np.argwhere(diff)[0])
                    first = Mismatch(offset + b, name, t, where, int(ours[(t, b, *where)]),
                                     int(theirs[(t, b, *where)]))
            out = names[-1]
            counts_ref = reference[out].astype(np.int64).sum(axis=0).reshape(x.shape[0], -1)
            counts_torch = torch.stack(recorder.spikes[out]).sum(0).reshape(x.shape[0], -1).numpy()
            agree += int((counts_ref.argmax(-1) == counts_torch.argmax(-1)).sum())
            offset += x.shape[0]
            bar.advance(task, x.shape[0])
    return VerifyResult(offset, steps, program.input_frac, mismatches, spikes, compared, first, agree,
                        list(program.notes), layer_summary(program), program)


def mismatch_count(model: nn.Module, data: DataBundle) -> int:
    """Mismatching spikes between ``model`` and its integer-only program on ``data`` (the ``bit-exact`` gate).

    Raises:
        UnsupportedLayerError: the model cannot be executed integer-only.
    """
    return verify(model, data).total_mismatches
