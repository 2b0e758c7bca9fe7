"""Export one time step of a stepwise model as ONNX, with the neuron states as explicit inputs and outputs.

The graph computes ``(output, *next_states) = step(input, *states)`` (see ``onnx_step`` for the
equations). A hardware toolchain runs the recurrence itself: start every state at zero, call the graph
once per time step, feed each ``<state>_<layer>_next`` output back as the ``<state>_<layer>`` input.
The batch dimension is dynamic. The ONNX ``metadata_props`` describe the states and the recurrence.

Exporter: torch 2.13's default ``torch.onnx.export`` is the dynamo exporter, which needs ``onnxscript``
(not a dependency); we use the TorchScript exporter (``dynamo=False``, opset 17), which works offline.

After writing, the graph is checked with onnxruntime on ``time_steps`` steps of the sample (plus three
seeded random inputs): the output spikes exactly, every neuron state within 1e-5 of its scale, and a
difference that follows a neuron within float rounding of its threshold, or a stored membrane within float
rounding of the midpoint between two levels (a rounding tie), reported as such, not refused
(``verify_onnx``); otherwise nothing is written.
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
from snncompress.models.membrane import membrane_quantizers, stored_membrane
from snncompress.sim.runner import SNNRunner

OPSET = 17
FORMAT_NAME = "snncompress-onnx-step"
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
        with atomic_path(path, replace=force) as tmp:
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

    What "verified" means for a float model: the output spikes are the torch model's exactly, and every
    neuron state of every layer (membranes, synaptic currents, recurrent spikes) at every step is within
    ``MEMBRANE_RTOL`` of that state's scale (its largest magnitude, at least the layer's threshold): the
    two runtimes round float32 differently, by a few ulps of the values involved. A neuron whose membrane
    lands within ``NEAR_THRESHOLD_RTOL`` of its threshold can fire in one runtime and not in the other;
    a difference that starts at or after such a neuron (in its layer or a later one) is that rounding, not
    an export error: the file is written and the note names the neuron, the step and what differed. Likewise
    a quantized membrane stored one level apart at neurons whose ``v`` lay within ``NEAR_THRESHOLD_RTOL`` of
    the scale from the midpoint between two levels, the rest of that step equal: the two runtimes sum a
    layer's inputs in different orders, and ``round`` of such a tie can go either way (:func:`_rounding_tie`).

    Returns:
        A one-line summary (with any near-threshold flips).

    Raises:
        DomainError: spikes or states differ with no near-threshold neuron to explain it.
    """
    reference = _torch_trace(model, x, time_steps)
    got = _onnx_trace(path, x, time_steps, reference.keys)
    first = _first_divergence(reference, got)
    if first is None:
        worst = max((_relative_gap(reference, got, key) for key in reference.keys), default=0.0)
        return (f"verified in onnxruntime: {time_steps} steps x {x.shape[0]} inputs give the torch model's "
                f"output spikes exactly and every neuron state within {worst:.2g} of its scale "
                f"(tolerance {MEMBRANE_RTOL:g})")
    step, layer_index, what = first
    spikes = ("the output spikes are exact" if torch.equal(reference.spikes, got.spikes) else
              f"{int((reference.spikes != got.spikes).sum())} output spike values differ")
    tie = _rounding_tie(reference, got, step, layer_index)
    if tie is not None:
        layer, count, distance, ratio = tie
        return (f"verified in onnxruntime with a float32 rounding tie: {time_steps} steps x {x.shape[0]} inputs; at "
                f"step {step} layer '{layer}' stores {count} membrane value(s) {distance:.2g} from the midpoint "
                f"between two levels (v / unit = {ratio:.7g}), which float32 sums in another order (torch and "
                f"onnxruntime add a layer's inputs differently) round to either level: one level apart there, the "
                f"rest of that step equal; from there {what}; {spikes}")
    near = _near_threshold(reference, step, layer_index)
    if near is None:
        raise DomainError(f"onnxruntime differs from the torch model: {what} (no neuron was near its threshold "
                          "before, and no stored membrane at a level's rounding midpoint, so this is not float "
                          "rounding); the ONNX file was not written")
    near_layer, near_step, margin = near
    return (f"verified in onnxruntime with a near-threshold flip: {time_steps} steps x {x.shape[0]} inputs; layer "
            f"'{near_layer}' has a neuron {margin:.2g} from its threshold at step {near_step}, where float32 "
            f"rounding in torch and onnxruntime can fall either side; from there {what}; {spikes}")


MEMBRANE_RTOL = 1e-5  # a state may differ by this fraction of its scale (float32 rounding in two runtimes)
NEAR_THRESHOLD_RTOL = 1e-5  # a membrane this close to the threshold (relative to its scale) may flip


@dataclass
class _Trace:
    """Per step: the output spikes, every neuron state by (layer, state), and each layer's closest approach
    to its threshold."""

    spikes: torch.Tensor
    keys: list[tuple[int, str, str]]  # (layer index, layer, state)
    states: dict[tuple[int, str, str], torch.Tensor]  # [T, B, ...]
    margins: dict[str, list[float]] = None  # layer -> per step min |u - Vth| / scale
    scales: dict[str, float] = None
    # quantized layers: per step, each neuron's distance from the midpoint of two membrane levels, |v - (k + 1/2)
    # unit| (inf where the clamp decides), and the v / unit it was stored from; [T, B, ...]
    ties: dict[str, torch.Tensor] = None
    ratios: dict[str, torch.Tensor] = None
    units: dict[str, torch.Tensor] = None


def _torch_trace(model: nn.Module, x: torch.Tensor, time_steps: int) -> _Trace:
    from snncompress.export.onnx_step import STATES
    from snncompress.models.neurons import neuron_layers

    neurons = neuron_layers(model)
    keys = [(i, name, state) for i, (name, m) in enumerate(neurons) for state in STATES.get(type(m).__name__, ())]
    states: dict[tuple[int, str, str], list[torch.Tensor]] = {k: [] for k in keys}
    gaps: dict[str, list[torch.Tensor]] = {name: [] for name, _ in neurons}
    quantizers = membrane_quantizers(model)
    units = {name: torch.as_tensor(q["unit"], dtype=torch.float32) for name, q in quantizers.items()}
    ratios: dict[str, list[torch.Tensor]] = {name: [] for name in quantizers}
    handles = []
    for i, (name, module) in enumerate(neurons):
        def before(mod, _inputs, output, name=name):
            # u[t] as compared with the threshold, before any storage quantization rewrites it
            gaps[name].append((mod.mem.detach() - mod.threshold.detach()).abs())
            if name in quantizers:  # v[t] / unit, which the quantizer rounds to a level
                spk = output[0] if isinstance(output, tuple) else output
                ratios[name].append((stored_membrane(mod, spk.detach(), mod.mem.detach()) / units[name]).clone())

        def after(mod, _inputs, _output, i=i, name=name):
            for state in STATES.get(type(mod).__name__, ()):
                states[(i, name, state)].append(getattr(mod, state).detach().clone())

        handles.append(module.register_forward_hook(before, prepend=True))
        handles.append(module.register_forward_hook(after))
    try:
        with torch.no_grad():
            out = SNNRunner(model).run(x, is_sequence=False, time_steps=time_steps)
    finally:
        for h in handles:
            h.remove()
    stacked = {k: torch.stack(v) for k, v in states.items() if v}
    scales, margins = {}, {}
    for name, module in neurons:
        u = torch.stack(gaps[name]) if gaps[name] else torch.zeros(1)
        scale = max(float(module.threshold.detach().abs().max()),
                    max((float(v.abs().max()) for k, v in stacked.items() if k[1] == name), default=0.0), 1e-12)
        scales[name] = scale
        margins[name] = [float(step.min()) / scale for step in u] if gaps[name] else []
    ratio = {name: torch.stack(v) for name, v in ratios.items() if v}
    ties = {}
    for name, r in ratio.items():
        q = quantizers[name]
        inside = (r >= q["levels_low"] - 0.5) & (r <= q["levels_high"] + 0.5)
        ties[name] = torch.where(inside, (r - torch.floor(r) - 0.5).abs() * units[name], torch.inf)
    return _Trace(out.spikes, [k for k in keys if k in stacked], stacked, margins, scales, ties, ratio, units)


def _onnx_trace(path: str | Path, x: torch.Tensor, time_steps: int, keys: list[tuple[int, str, str]]) -> _Trace:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    feeds: dict[str, Any] = {"input": x.detach().cpu().numpy().astype(np.float32)}
    for spec in inputs[1:]:
        feeds[spec.name] = np.zeros((x.shape[0], *spec.shape[1:]), dtype=np.float32)
    output_names = [o.name for o in session.get_outputs()]
    spikes, per_step = [], []
    for _ in range(time_steps):
        results = session.run(output_names, feeds)
        spikes.append(results[0])
        for spec, value in zip(inputs[1:], results[1:], strict=True):
            feeds[spec.name] = value
        per_step.append({spec.name: value for spec, value in zip(inputs[1:], results[1:], strict=True)})
    states = {}
    for key in keys:
        name = f"{key[2]}_{key[1].replace('.', '_')}"
        if per_step and name in per_step[0]:
            states[key] = torch.from_numpy(np.stack([s[name] for s in per_step]))
    return _Trace(torch.from_numpy(np.stack(spikes)), keys, states)


def _relative_gap(reference: _Trace, got: _Trace, key: tuple[int, str, str]) -> float:
    if key not in got.states:
        return 0.0
    return float((reference.states[key] - got.states[key]).abs().max()) / reference.scales[key[1]]


def _first_divergence(reference: _Trace, got: _Trace) -> tuple[int, int, str] | None:
    """(step, layer index, description) of the earliest difference beyond the tolerance, or None."""
    found: list[tuple[int, int, str]] = []
    for key in reference.keys:
        if key not in got.states:
            continue
        gap = (reference.states[key] - got.states[key].to(reference.states[key].dtype)).abs()
        tol = MEMBRANE_RTOL * reference.scales[key[1]]
        bad = (gap.reshape(gap.shape[0], -1) > tol).any(dim=1).nonzero()
        if len(bad):
            t = int(bad[0])
            found.append((t, key[0], 0, f"layer '{key[1]}' {key[2]} differs by {float(gap[t:].max()):.3g} "
                                        f"(scale {reference.scales[key[1]]:.3g}) from step {t}"))
    differ = (reference.spikes.to(got.spikes.dtype) != got.spikes)
    if differ.any():
        t = int(differ.reshape(differ.shape[0], -1).any(dim=1).nonzero()[0])
        last = len(reference.margins) - 1
        found.append((t, last, 1, f"{int(differ.sum())} output spike values differ, first at step {t}"))
    if not found:
        return None
    step, layer, _, what = min(found)  # at the same step and layer, name the state rather than the spikes
    return step, layer, what


def _rounding_tie(reference: _Trace, got: _Trace, step: int, layer_index: int) -> tuple[str, int, float, float] | None:
    """``(layer, values, distance, v / unit)`` when the first difference, at ``step`` in layer ``layer_index``, is
    the stored membrane alone, one level apart, at neurons whose ``v`` lay within ``NEAR_THRESHOLD_RTOL`` of the
    scale from a midpoint between two levels: a float32 rounding tie of the quantizer's ``round``, not an
    export error. None otherwise."""
    keys = [k for k in reference.keys if k[0] == layer_index and k in got.states]
    mem = [k for k in keys if k[2] == "mem"]
    if not mem or not reference.ties or mem[0][1] not in reference.ties:
        return None
    name = mem[0][1]
    scale = reference.scales[name]
    tol = MEMBRANE_RTOL * scale
    for key in keys:
        if key != mem[0] and bool(((reference.states[key][step] - got.states[key][step]).abs() > tol).any()):
            return None  # a state before the rounding differs too
    ref, out = reference.states[mem[0]][step], got.states[mem[0]][step].to(reference.states[mem[0]].dtype)
    gap = (ref - out).abs()
    differ = gap > tol
    if not bool(differ.any()):
        return None
    unit = torch.broadcast_to(reference.units[name], ref.shape)
    distance = reference.ties[name][step]
    one_level = ((gap - unit).abs() <= tol)[differ]
    near = (distance <= NEAR_THRESHOLD_RTOL * scale)[differ]
    if not bool(one_level.all() and near.all()):
        return None
    worst = int(torch.argmax(torch.where(differ, distance, -1.0)))
    return name, int(differ.sum()), float(distance.flatten()[worst]), float(reference.ratios[name][step].flatten()[worst])


def _near_threshold(reference: _Trace, step: int, layer_index: int) -> tuple[str, int, float] | None:
    """The closest approach to a threshold at or before ``step`` in layers up to ``layer_index``."""
    best = None
    for i, (name, margins) in enumerate(reference.margins.items()):
        if i > layer_index:
            break
        for t, margin in enumerate(margins[: step + 1]):
            if margin <= NEAR_THRESHOLD_RTOL and (best is None or margin < best[2]):
                best = (name, t, margin * reference.scales[name])
    return best
