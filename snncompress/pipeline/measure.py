"""Figures of a model before and after a run: accuracy, parameter count, stored bits, hardware costs.

Two sources of memory figures:

* :func:`storage_bits` — a simple count that needs nothing but the compression state: every
  state-dict tensor at its stored width (``enc.bits`` per code plus its decode parameters, 32 bits
  when not quantized; a pruned float tensor keeps its kept values plus a 1-bit mask), plus every
  neuron's stored membrane (``ceil(log2(levels))`` bits per neuron when quantized, else 32).
* :func:`hardware_figures` — the hardware cost model (:mod:`snncompress.hardware`, SpQuant Eq. 29-31)
  through :mod:`snncompress.costing.report`: memory, synaptic operations and energy against the stored
  fp32 baseline. Used when that module is present; the gates read whichever is there.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from snncompress.state import get_state, has_state


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


def membrane_bits(quantizer: Mapping[str, Any] | None) -> int:
    """Bits per stored membrane value: enough for the quantizer's integer levels, else fp32."""
    if not quantizer:
        return 32
    if "bits" in quantizer:
        return int(quantizer["bits"])
    low, high = quantizer.get("levels_low"), quantizer.get("levels_high")
    if low is None or high is None:
        return 32
    return max(1, math.ceil(math.log2(int(high) - int(low) + 1)))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class ModelFigures:
    """What the pipeline measures before the first pass and after the last."""

    accuracy: float | None
    samples: int
    parameters: int
    storage_bits: int
    tensor_bits: int
    membrane_bits: int
    neurons: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_model(model: nn.Module, data: Any, *, show_progress: bool = False,
                  description: str = "accuracy") -> ModelFigures:
    """Accuracy on ``data`` (None without data) and the stored bits of ``model``."""
    accuracy, samples, neurons = None, 0, {}
    if data is not None:
        from snncompress.sim.evaluate import evaluate

        result = evaluate(model, data, show_progress=show_progress, description=description)
        accuracy, samples, neurons = result.accuracy, result.samples, dict(result.neurons)
    bits = storage_bits(model, neurons)
    return ModelFigures(accuracy=accuracy, samples=samples, parameters=parameter_count(model),
                        storage_bits=bits.total, tensor_bits=bits.tensors, membrane_bits=bits.membrane,
                        neurons=neurons)


def hardware_available() -> bool:
    """True when the hardware cost model (:mod:`snncompress.costing.report`) is installed."""
    return importlib.util.find_spec("snncompress.costing.report") is not None


def record_hardware_baseline(model: nn.Module, data: Any, accuracy: float | None, name: str) -> None:
    """Store the uncompressed model's cost-model description in its state (for later reports)."""
    from snncompress.costing.report import record_baseline

    record_baseline(model, data, accuracy, name)


def hardware_figures(model: nn.Module, data: Any, name: str, energy_table: str) -> dict[str, Any] | None:
    """Memory, synaptic ops and energy per sample, and their reductions against the stored baseline.

    Returns:
        None when the model has no stored baseline description (nothing to compare against).
    """
    from snncompress.costing.report import ReportInputs, make_report

    state = get_state(model)
    if not state.baseline.get("description"):
        return None
    report = make_report(ReportInputs(model=model, name=name, data=data, energy=energy_table))
    base = report.baseline
    totals = report.totals
    return {
        "energy_table": energy_table,
        "memory_bits": totals.memory.total_bits,
        "synaptic_ops": totals.ops.synaptic_ops,
        "energy_pj": totals.energy.total_pj,
        "memory_reduction": base.memory_reduction if base else None,
        "ops_reduction": base.synaptic_ops_reduction if base else None,
        "energy_reduction": base.energy_reduction if base else None,
        "warnings": list(report.warnings),
    }
