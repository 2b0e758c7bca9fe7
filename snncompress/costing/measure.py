"""Measure a model once: one instrumented pass over the data gives every figure a run needs.

:func:`measure` runs the model over the data set once, with the hardware probe
(:class:`~snncompress.costing.describe.Probe`) riding along the evaluation, and returns a
:class:`Measurement`: accuracy, loss, per-layer firing, the hardware description (memory, synaptic
ops and energy are costed from it without running the model again) and the stored bits. A recipe
run measures before its first pass and after each pass that changes the model; the baseline, the
report, the gates and the next pass's ``ctx.before`` all read those measurements.

Stored bits (:func:`storage_bits`) are a simple count that needs only the compression state: every
state-dict tensor at its stored width (``enc.bits`` per code plus its decode parameters, 32 bits
when not quantized; a pruned float tensor keeps its kept values plus a 1-bit mask), plus every
neuron's stored membrane. The hardware report's memory (SpQuant Eq. 29) adds spikes and chooses a
sparse format per layer; gates use it when it is there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from snncompress.costing.describe import Probe
from snncompress.data.loading import DataBundle
from snncompress.hardware.description import ModelDescription
from snncompress.quant.membrane import membrane_bits
from snncompress.state import get_state, has_state

__all__ = ["Measurement", "StorageBits", "measure", "parameter_count", "storage_bits"]


@dataclass(frozen=True)
class Measurement:
    """What one pass over the evaluation data measured (accuracy in percent; None without data or labels).

    Attributes:
        description: the model as the hardware cost model sees it (per-sample activity), or None
            when not described (no data, or ``describe=False``).
    """

    accuracy: float | None
    samples: int
    parameters: int
    storage_bits: int
    tensor_bits: int
    membrane_bits: int
    neurons: dict[str, int] = field(default_factory=dict)
    loss: float | None = None
    firing_rates: dict[str, float] = field(default_factory=dict)
    time_steps: int = 0
    data: str | None = None
    description: ModelDescription | None = field(default=None, repr=False, compare=False)
    # per-sample predictions and per-neuron firing rates: fidelity between two measurements without a pass
    predictions: Any = field(default=None, repr=False, compare=False)
    neuron_rates: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON (without the description), as the run report shows them."""
        return {"accuracy": self.accuracy, "samples": self.samples, "parameters": self.parameters,
                "storage_bits": self.storage_bits, "tensor_bits": self.tensor_bits,
                "membrane_bits": self.membrane_bits, "neurons": dict(self.neurons),
                "data": self.data}


def measure(model: nn.Module, data: DataBundle | None, *, name: str = "model", describe: bool = True,
            show_progress: bool = False, description: str = "accuracy") -> Measurement:
    """Measure ``model`` on ``data`` in one pass (stored bits only, without data).

    Args:
        name: the model's name in the hardware description.
        describe: also record the hardware description (the probe's hooks ride along the same pass).
        description: the progress bar's label.

    Raises:
        DataError: the data set is empty or does not fit the model.
    """
    if data is None:
        bits = storage_bits(model, {})
        return Measurement(accuracy=None, samples=0, parameters=parameter_count(model), storage_bits=bits.total,
                           tensor_bits=bits.tensors, membrane_bits=bits.membrane)
    from snncompress.errors import DataError
    from snncompress.sim.evaluate import evaluate

    if len(data) == 0:
        raise DataError(f"the data set {data.name} is empty")
    probe = Probe(model, measure=True) if describe else None
    result = evaluate(model, data, show_progress=show_progress, description=description,
                      instruments=[probe] if probe is not None else [])
    desc = None
    if probe is not None:
        desc = probe.description(name=name, data_name=data.name, samples=result.samples,
                                 steps=result.time_steps or data.time_steps, accuracy=result.accuracy)
    bits = storage_bits(model, result.neurons)
    return Measurement(
        accuracy=result.accuracy, samples=result.samples, parameters=parameter_count(model),
        storage_bits=bits.total, tensor_bits=bits.tensors, membrane_bits=bits.membrane,
        neurons=dict(result.neurons), loss=result.loss, firing_rates=dict(result.firing_rates),
        time_steps=result.time_steps, data=data.name, description=desc, predictions=result.predictions,
        neuron_rates=dict(result.neuron_rates),
    )


@dataclass(frozen=True)
class StorageBits:
    """Stored bits of one model (per sample for the membrane)."""

    tensors: int
    membrane: int

    @property
    def total(self) -> int:
        return self.tensors + self.membrane


def storage_bits(model: nn.Module, neurons: Mapping[str, int] | None = None) -> StorageBits:
    """Bits of stored weights and parameters, plus the stored membrane of ``neurons``.

    Args:
        model: the model with its compression state.
        neurons: neurons per sample of each neuron layer (``Evaluation.neurons``); without it the
            membrane is not counted.
    """
    state = get_state(model) if has_state(model) else None
    encoded = state.tensors if state else {}
    masks = state.masks if state else {}
    tensor_bits = 0
    for name, value in model.state_dict().items():
        enc, mask = encoded.get(name), masks.get(name)
        if enc is not None:
            tensor_bits += enc.codes.numel() * enc.bits
            tensor_bits += sum(p.numel() * p.element_size() * 8 for p in enc.params.values())
        elif mask is not None:
            tensor_bits += int(mask.sum()) * value.element_size() * 8
        else:
            tensor_bits += value.numel() * value.element_size() * 8
        if mask is not None:
            tensor_bits += mask.numel()
    settings = state.neurons if state else {}
    membrane = sum(count * membrane_bits(settings.get(layer, {}).get("membrane"))
                   for layer, count in (neurons or {}).items())
    return StorageBits(tensors=tensor_bits, membrane=membrane)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
