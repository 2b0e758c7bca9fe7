"""Export ``T`` time steps of a stepwise model as one ONNX graph (the recurrence unrolled inside it).

Beside the one-step graph (:mod:`snncompress.export.onnx_export`, states as inputs and outputs), a
toolchain that wants a plain feed-forward graph gets ``spikes = graph(input)``: the static input
``[B, ...]`` is presented for ``time_steps`` steps from zero states, and ``spikes`` is the output
layer's spikes ``[T, B, ...]``. It is the same :class:`~snncompress.export.onnx_step.StepModel`
called ``T`` times (stored-membrane quantization included), checked in onnxruntime against the torch
model (identical spikes) before it is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snncompress.errors import DomainError, InputError
from snncompress.export.chain import exportable
from snncompress.export.layout import ExportResult, probe_shapes
from snncompress.export.onnx_export import OPSET, _verification_batch
from snncompress.export.onnx_step import StepModel
from snncompress.fileformat.atomic import atomic_path, check_output_path
from snncompress.models.membrane import membrane_quantizers
from snncompress.sim.runner import SNNRunner


class UnrolledModel(nn.Module):
    """``forward(x) -> spikes [T, B, ...]``: the step model from zero states, ``time_steps`` times."""

    def __init__(self, step: StepModel, time_steps: int):
        super().__init__()
        self.step = step
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x.new_zeros((x.shape[0], *s["shape"])) for s in self.step.state_layout]
        spikes = []
        for _ in range(self.time_steps):
            out = self.step(x, *states)
            spikes.append(out[0])
            states = list(out[1:])
        return torch.stack(spikes)


def export_onnx_unrolled(model: nn.Module, path: str | Path, sample: torch.Tensor, time_steps: int = 8, *,
                         force: bool = False) -> ExportResult:
    """Write ``time_steps`` steps of ``model`` as one ONNX graph ``spikes = graph(input)``, atomically.

    Raises:
        InputError: the output exists without ``force``, or ``time_steps < 1``.
        UnsupportedLayerError: the model is not a stepwise Sequential, or a neuron has no ONNX step.
        DomainError: onnxruntime's spikes differ from the torch model's (nothing is written).
    """
    import onnxruntime as ort

    path = check_output_path(path, force)
    if time_steps < 1:
        raise InputError(f"time_steps must be >= 1, got {time_steps}")
    model, notes = exportable(model, sample, "ONNX export")  # a user module: the checked chain of its layers
    leaves = probe_shapes(model, sample)
    was_training = model.training
    unrolled = UnrolledModel(StepModel(leaves, membrane_quantizers(model)).eval(), time_steps).eval()
    x = _verification_batch(sample)
    try:
        with atomic_path(path) as tmp:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
                torch.onnx.export(unrolled, (sample.unsqueeze(0).to(torch.float32),), str(tmp), dynamo=False,
                                  opset_version=OPSET, input_names=["input"], output_names=["spikes"],
                                  dynamic_axes={"input": {0: "batch"}, "spikes": {1: "batch"}},
                                  do_constant_folding=True)
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(["spikes"], {"input": x.numpy().astype(np.float32)})[0]
            with torch.no_grad():
                want = SNNRunner(model).run(x, is_sequence=False, time_steps=time_steps).spikes.numpy()
            if got.shape != want.shape or not np.array_equal(got, want):
                differ = int((got != want).sum()) if got.shape == want.shape else got.size
                raise DomainError(f"onnxruntime's unrolled spikes differ from the torch model's ({differ} values); "
                                  "the ONNX file was not written")
    finally:
        model.train(was_training)
    note = (f"verified in onnxruntime: {time_steps} unrolled steps x {x.shape[0]} inputs give the torch model's "
            "output spikes exactly")
    return ExportResult(path=path, format="onnx", notes=[*notes, note],
                        details={"inputs": ["input"], "outputs": ["spikes"], "time_steps": time_steps,
                                 "unrolled": True, "opset": OPSET})
