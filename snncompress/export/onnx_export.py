"""Export one time step of a stepwise model as ONNX, with the neuron states as explicit inputs and outputs.

The graph computes ``(output, *next_states) = step(input, *states)`` (see ``onnx_step`` for the
equations). A hardware toolchain runs the recurrence itself: start every state at zero, call the graph
once per time step, feed each ``<state>_<layer>_next`` output back as the ``<state>_<layer>`` input.
The batch dimension is dynamic. The ONNX ``metadata_props`` describe the states and the recurrence.

Exporter: torch 2.13's default ``torch.onnx.export`` is the dynamo exporter, which needs ``onnxscript``
(not a dependency); we use the TorchScript exporter (``dynamo=False``, opset 17), which works offline.

After writing, the graph is checked with onnxruntime: ``time_steps`` steps of the sample (plus three
seeded random inputs) must give exactly the torch model's output spikes and its output membrane to
1e-5; otherwise nothing is written.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompress import __version__
from snncompress.errors import DomainError, InputError
from snncompress.export.chain import exportable
from snncompress.export.layout import ExportResult, probe_shapes
from snncompress.export.onnx_step import StepModel
from snncompress.fileformat.atomic import atomic_path, check_output_path
from snncompress.models.membrane import membrane_quantizers
from snncompress.sim.runner import SNNRunner

OPSET = 17
FORMAT_NAME = "snncompress-onnx-step"
MEMBRANE_ATOL = 1e-5
VERIFY_EXTRA_INPUTS = 3


def export_onnx(model: nn.Module, path: str | Path, sample: torch.Tensor, time_steps: int = 8, *,
                force: bool = False, verify: bool = True) -> ExportResult:
    """Write one time step of ``model`` to ``path`` as an ONNX graph with explicit state inputs and outputs.

    Args:
        model: a stepwise ``nn.Sequential`` (neurons with ``init_hidden=True``).
        path: the ``.onnx`` file to write (atomically).
        sample: one input time step without the batch dimension (e.g. ``[1, 8, 8]``).
        time_steps: the steps the verification runs (also recorded in the metadata).
        force: overwrite an existing file.
        verify: run the graph in onnxruntime against the torch model before keeping it.

    Returns:
        The path, the state names and shapes, and the verification result as a note.

    Raises:
        InputError: the output exists without ``force``.
        UnsupportedLayerError: the model is not a stepwise Sequential, or a neuron has no ONNX step.
        DataError: the sample does not fit the model.
        DomainError: onnxruntime's spikes differ from the torch model's.
    """
    path = check_output_path(path, force)
    if time_steps < 1:
        raise InputError(f"time_steps must be >= 1, got {time_steps}")
    model, notes = exportable(model, sample, "ONNX export")
    leaves = probe_shapes(model, sample)
    was_training = model.training
    # export and check the inference graph (Dropout off, BatchNorm running statistics); the step model
    # shares the layers, and the exporter restores the step model's own mode, so it must be eval too
    step = StepModel(leaves, membrane_quantizers(model)).eval()
    inputs, outputs = _names(step)
    try:
        with atomic_path(path) as tmp:
            _export(step, sample, tmp, inputs, outputs)
            _annotate(tmp, step, inputs, outputs, time_steps, sample)
            if verify:
                notes.append(verify_onnx(model, tmp, _verification_batch(sample), time_steps))
    finally:
        model.train(was_training)
    states = _state_table(step, inputs, outputs)
    if membrane_quantizers(model):
        notes.append(
            "stored-membrane quantization is in the graph: Q(v) = unit * clamp(round(v / unit), low, high), "
            "unit = Vth / grid, v the post-reset, pre-leak membrane"
        )
    return ExportResult(path=path, format="onnx", notes=notes,
                        details={"inputs": inputs, "outputs": outputs, "states": states,
                                 "time_steps": time_steps, "opset": OPSET})


def _names(step: StepModel) -> tuple[list[str], list[str]]:
    ins, outs = ["input"], ["output"]
    for s in step.state_layout:
        base = f"{s['state']}_{s['layer'].replace('.', '_')}"
        ins.append(base)
        outs.append(base + "_next")
    return ins, outs


def _state_table(step: StepModel, inputs: list[str], outputs: list[str]) -> list[dict[str, Any]]:
    """Each state: its layer, neuron type, kind (mem/syn/spk), shape without batch, input and output names."""
    return [{**s, "input": i, "output": o}
            for s, i, o in zip(step.state_layout, inputs[1:], outputs[1:], strict=True)]


def _export(step: StepModel, sample: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]) -> None:
    args = (sample.unsqueeze(0).to(torch.float32),
            *(torch.zeros(1, *s["shape"]) for s in step.state_layout))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(step, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes={n: {0: "batch"} for n in inputs + outputs},
                          do_constant_folding=True)


def _annotate(path: Path, step: StepModel, inputs: list[str], outputs: list[str], time_steps: int,
              sample: torch.Tensor) -> None:
    import onnx

    proto = onnx.load(str(path))
    neurons = {s.layer: {"neuron": s.kind, "reset_mechanism": s.mechanism, "reset_delay": s.reset_delay,
                         "membrane_levels": list(s.levels) if s.levels else None}
               for s in step.steps if hasattr(s, "kind")}
    props = {
        "snncompress.format": FORMAT_NAME,
        "snncompress.version": __version__,
        "snncompress.recurrence": "one call = one time step; start every state input at zeros; feed each "
                                  "<state>_<layer>_next output back as <state>_<layer> at "
                                  "the next step; 'output' is the last layer's spikes",
        "snncompress.states": json.dumps(_state_table(step, inputs, outputs)),
        "snncompress.neurons": json.dumps(neurons),
        "snncompress.input_shape": json.dumps(list(sample.shape)),
        "snncompress.time_steps": str(time_steps),
        "snncompress.exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False), opset {OPSET}",
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "snncompress"
    proto.producer_version = __version__
    proto.doc_string = "One time step of a spiking network; neuron states are explicit inputs and outputs."
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _verification_batch(sample: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    extra = torch.rand((VERIFY_EXTRA_INPUTS, *sample.shape), generator=gen)
    return torch.cat([sample.unsqueeze(0).to(torch.float32), extra])


@dataclass
class OnnxRun:
    """Activity of ``run_onnx``: ``spikes`` ``[T, B, ...]``; ``membrane`` the last neuron's state per step."""

    spikes: torch.Tensor
    membrane: torch.Tensor | None
    states: dict[str, np.ndarray]


def run_onnx(path: str | Path, x: torch.Tensor, time_steps: int) -> OnnxRun:
    """Run an exported step graph in onnxruntime for ``time_steps`` steps on the static batch ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    batch = x.shape[0]
    feeds: dict[str, Any] = {"input": x.detach().cpu().numpy().astype(np.float32)}
    for spec in inputs[1:]:
        feeds[spec.name] = np.zeros((batch, *spec.shape[1:]), dtype=np.float32)
    output_names = [o.name for o in session.get_outputs()]
    spikes, membranes = [], []
    results: list[np.ndarray] = []
    for _ in range(time_steps):
        results = session.run(output_names, feeds)
        spikes.append(results[0])
        for spec, value in zip(inputs[1:], results[1:], strict=True):
            feeds[spec.name] = value
        if len(results) > 1 and inputs[-1].name.startswith("mem_"):
            membranes.append(results[-1])
    states = {spec.name: feeds[spec.name] for spec in inputs[1:]}
    return OnnxRun(spikes=torch.from_numpy(np.stack(spikes)),
                   membrane=torch.from_numpy(np.stack(membranes)) if membranes else None, states=states)


def verify_onnx(model: nn.Module, path: str | Path, x: torch.Tensor, time_steps: int) -> str:
    """Compare the ONNX step graph in onnxruntime with the torch model over ``time_steps`` steps.

    Returns:
        A one-line summary.

    Raises:
        DomainError: the output spikes differ, or the output membrane differs by more than 1e-5.
    """
    with torch.no_grad():
        reference = SNNRunner(model).run(x, is_sequence=False, time_steps=time_steps)
    got = run_onnx(path, x, time_steps)
    if not torch.equal(reference.spikes.to(got.spikes.dtype), got.spikes):
        diff = (reference.spikes != got.spikes).nonzero()
        step = int(diff[0, 0]) if len(diff) else -1
        raise DomainError(
            f"onnxruntime's output spikes differ from the torch model's ({len(diff)} "
            f"values, first at step {step}); the ONNX file was not written"
        )
    detail = ""
    if reference.membrane is not None and got.membrane is not None:
        gap = float((reference.membrane - got.membrane).abs().max())
        if gap > MEMBRANE_ATOL:
            raise DomainError(f"onnxruntime's output membrane differs from the torch model's by {gap:.3g} "
                              f"(> {MEMBRANE_ATOL:g}); the ONNX file was not written")
        detail = f", output membrane max difference {gap:.2g}"
    return (f"verified in onnxruntime: {time_steps} steps x {x.shape[0]} inputs give the torch model's "
            f"output spikes exactly{detail}")
